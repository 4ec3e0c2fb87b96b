"""What every animator backend owes the Animator deployment, checked through the real deployment in
a real Serve graph for each backend: the procedural one (real) and Ditto around its STAND-IN SDK
(`ditto_stand_in`: no GPU or weights here)."""

import asyncio

import numpy as np
import pytest

from avatar_core.media import fragment_bounds
from avatar_core.types import Speech
from tests.segments import decode_segment


@pytest.fixture(params=["procedural", "ditto_stand_in"])
def animator(request):
    from ray import serve

    if request.param == "procedural":
        return request.getfixturevalue("handles")["Animator"]
    request.getfixturevalue("ditto_app")
    return serve.get_deployment_handle("Animator", app_name="ditto")


def animate(handle, speech, state=None, first_s=0.4, fragment_s=1.0):
    async def collect():
        stream = handle.options(stream=True).animate.remote(speech, state, "default", first_s, fragment_s)
        return [f async for f in stream]

    return asyncio.run(collect())


def voice(seconds: float, rate: int = 22_050, extra: int = 0) -> Speech:
    t = np.arange(int(seconds * rate) + extra) / rate
    pcm = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return Speech(pcm.astype(np.float32), rate)


def test_fragments_cover_the_speech_with_equal_audio_and_video(animator):
    speech = voice(2.3, extra=17)  # not a whole number of frames
    fragments = animate(animator, speech)
    decoded = [decode_segment(f.data) for f in fragments]
    n = int(np.ceil(speech.pcm.size * 25 / speech.sample_rate))
    assert [len(d.frames) for d in decoded] == [b - a for a, b in fragment_bounds(n, 25, 0.4, 1.0)]
    assert all(d.same_length_within_a_frame() for d in decoded)
    assert all(abs(d.video_s - f.duration_s) < 1e-6 for d, f in zip(decoded, fragments))
    heard = np.concatenate([d.audio for d in decoded])
    assert heard.std() > 0.05  # the speech is in the fragments, not silence


def test_the_state_carries_the_clock_across_calls(animator):
    first = animate(animator, voice(1.0))
    assert first[-1].state.frame == 25
    second = animate(animator, voice(0.6), first[-1].state)
    assert second[-1].state.frame == 25 + 15
    fresh = animate(animator, voice(0.6))
    assert fresh[-1].state.frame == 15  # a new conversation starts its own clock


def test_listening_frames_run_on_the_same_clock_with_silent_audio(animator):
    spoken = animate(animator, voice(0.8))
    idle = animator.idle_segment.remote(1.0, spoken[-1].state, "default").result()
    decoded = decode_segment(idle.data)
    assert len(decoded.frames) == 25 and decoded.same_length_within_a_frame()
    assert np.abs(decoded.audio).max() < 0.01
    assert idle.state.frame == spoken[-1].state.frame + 25
    assert decoded.frames[0].shape == decode_segment(spoken[0].data).frames[0].shape
