"""The Ditto backend in a real Serve graph, its SDK a STAND-IN (tests/ditto_stand_in: no GPU or
weights here): whole turns over HTTP, frames against their audio, sessions kept apart, and a worker
error turned into a `stage_failed` event."""

import asyncio
import importlib
import io

import cv2
import httpx
import numpy as np
from ray import serve

from avatar_core.media import fragment_bounds
from avatar_core.types import Speech
from tests.conftest import GREEN
from tests.ditto_stand_in import stream_pipeline_online as stand_in
from tests.segments import decode_segment
from tests.test_ditto import speech_with_a_gap
from tests.test_turn import check_segments_match_reply, post_turn

RED, BLUE = (220, 40, 40), (30, 40, 220)


def png(rgb) -> bytes:
    img = np.zeros((128, 160, 3), np.uint8)
    img[:] = rgb
    return cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()


def read(frames):
    return [stand_in.read_frame(f) for f in frames]


def colour_is(frames, rgb) -> bool:
    return all(np.abs(c - rgb).max() < 8 for _, _, c in read(frames))


async def animate(handle, speech, state, avatar_id="default"):
    stream = handle.options(stream=True).animate.remote(speech, state, avatar_id, 0.4, 1.0)
    return [f async for f in stream]


def test_stand_in_ditto_turn_streams_ordered_fragments_from_one_running_stream(ditto_app, jfk_bytes):
    events, _ = post_turn(ditto_app, jfk_bytes)
    assert events[-1]["type"] == "done", events[-1]
    segments = check_segments_match_reply(events)
    numbers = {}
    for seg in segments:
        decoded = decode_segment(httpx.get(f"{ditto_app}{seg['url']}", timeout=30).content)
        assert decoded.same_length_within_a_frame() and colour_is(decoded.frames, RED)
        numbers.setdefault(seg["sentence"], []).extend(n for n, _, _ in read(decoded.frames))
    for sentence, got in numbers.items():  # each sentence's frames in order, none missing
        assert got == list(range(got[0], got[0] + len(got))), sentence
    starts = [numbers[s][0] for s in sorted(numbers)]
    assert starts[0] == 0 and starts == sorted(starts) and len(set(starts)) == len(starts)  # one stream runs on


def test_stand_in_ditto_frames_follow_their_own_audio_through_the_animator(ditto_app):
    handle = serve.get_deployment_handle("Animator", app_name="ditto")
    audio = speech_with_a_gap(60)
    fragments = asyncio.run(animate(handle, Speech(audio, 16_000), None))
    decoded = [decode_segment(f.data) for f in fragments]
    assert [len(d.frames) for d in decoded] == [b - a for a, b in fragment_bounds(60, 25, 0.4, 1.0)]
    assert all(d.same_length_within_a_frame() for d in decoded)
    frames = [f for d in decoded for f in d.frames]
    rms = np.sqrt((audio.reshape(60, 640) ** 2).mean(1))
    assert [top > 0.5 for _, top, _ in read(frames)] == list(rms > 0.1)  # the mouth band is in sync
    assert [n for n, _, _ in read(frames)] == list(range(60))
    more = asyncio.run(animate(handle, Speech(audio[: 20 * 640], 16_000), fragments[-1].state))
    got = [n for d in more for n, _, _ in read(decode_segment(d.data).frames)]
    assert got[0] > 59 and got == list(range(got[0], got[0] + 20))  # the same stream ran on
    assert more[-1].state.stream == fragments[-1].state.stream and more[-1].state.frame == 80


def test_stand_in_ditto_sessions_never_share_frames_under_concurrency(ditto_app):
    """Four conversations, two faces, two SDK instances per replica: every frame a conversation
    gets is in its own face's colour, and each piece's frames come in order from one stream."""
    handle = serve.get_deployment_handle("Animator", app_name="ditto")
    assert handle.register_avatar.remote("blue", png(BLUE)).result() == {"ok": True}
    pieces = [Speech(speech_with_a_gap(n), 16_000) for n in (30, 45, 20)]

    async def conversation(avatar_id):
        state, got = None, []
        for speech in pieces:
            fragments = await animate(handle, speech, state, avatar_id)
            state = fragments[-1].state
            got.append([f for frag in fragments for f in decode_segment(frag.data).frames])
        return got

    async def main():
        return await asyncio.gather(*(conversation(a) for a in ("default", "blue", "default", "blue")))

    for avatar_id, got in zip(("default", "blue") * 2, asyncio.run(main())):
        assert [len(p) for p in got] == [30, 45, 20]
        for piece in got:
            assert colour_is(piece, RED if avatar_id == "default" else BLUE), avatar_id
            numbers = [n for n, _, _ in read(piece)]
            assert numbers == list(range(numbers[0], numbers[0] + len(piece)))


def test_stand_in_ditto_worker_error_becomes_a_stage_failed_event_and_the_next_turn_works(ditto_app, jfk_bytes):
    r = httpx.post(f"{ditto_app}/api/v1/avatars", files={"image": ("green.png", png(GREEN))}, timeout=30)
    assert r.status_code == 201, r.text
    green = {"avatar_id": r.json()["id"]}
    events, _ = post_turn(ditto_app, jfk_bytes, extra=green)  # the stand-in fails at frame 30
    assert events[-1]["type"] == "error" and events[-1]["code"] == "stage_failed", events[-1]
    assert "animator" in events[-1]["message"]
    events, _ = post_turn(ditto_app, jfk_bytes, extra=green)
    assert events[-1]["type"] == "done", events[-1]


def test_stand_in_ditto_conversation_keeps_its_stream_across_two_replicas(serve_app):
    """Two Animator replicas: a conversation's calls name it (multiplexed_model_id, as the turn
    does) and land on the replica that holds its open stream, so the stream runs on; without the
    affinity each call would pick one of the two at random (all six on the first: 1 in 64)."""
    import time

    from deployments.animator import Animator
    from tests.conftest import STORAGE
    from tests.ditto_stand_in.config import stand_in_config

    app = Animator.options(num_replicas=2, max_ongoing_requests=2,
                           ray_actor_options={"num_cpus": 0.01, "num_gpus": 0})
    serve.run(app.bind(stand_in_config(pool_size=2), str(STORAGE)), name="ditto-affinity", route_prefix=None)
    try:
        handle = serve.get_deployment_handle("Animator", app_name="ditto-affinity")
        piece = Speech(speech_with_a_gap(20), 16_000)
        state = asyncio.run(animate(handle.options(multiplexed_model_id="conv-a"), piece, None))[-1].state
        time.sleep(1.0)  # the replica reports the conversation to the router every 0.1 s
        streams = []
        for _ in range(6):
            state = asyncio.run(animate(handle.options(multiplexed_model_id="conv-a"), piece, state))[-1].state
            streams.append(state.stream)
        assert len(set(streams)) == 1 and state.frame == 7 * 20, streams
    finally:
        serve.delete("ditto-affinity")
