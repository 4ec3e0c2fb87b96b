"""Each stage alone, through its real DeploymentHandle, with real models and real audio (and one
Animator built in-process, where "its counter" means one replica's)."""

import asyncio

import numpy as np

from avatar_core.media import decode_audio
from avatar_core.types import Speech
from tests.conftest import JFK_WORDS, stage_stats, stages_when_idle
from tests.segments import decode_segment


def words(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def test_asr_transcribes_real_speech(handles, jfk_bytes):
    text = handles["ASR"].transcribe.remote(decode_audio(jfk_bytes, 60)).result()
    assert JFK_WORDS in words(text)


def test_asr_returns_nothing_for_silence(handles):
    assert handles["ASR"].transcribe.remote(np.zeros(32_000, np.float32)).result() == ""


def test_llm_streams_a_reply_in_many_deltas(handles):
    async def collect():
        question = [{"role": "user", "content": "What is the capital of France?"}]
        stream = handles["LLM"].options(stream=True).chat.remote(question)
        return [d async for d in stream]

    deltas = asyncio.run(collect())
    assert len(deltas) > 3 and all(isinstance(d, str) for d in deltas)
    assert len("".join(deltas).split()) >= 3


def test_llm_uses_the_history_it_is_given(handles):
    """Greedy decoding: the same question answers from the history once it is in the prompt."""
    history = [
        {"role": "user", "content": "My name is Zorblax and I live on the moon."},
        {"role": "assistant", "content": "Nice to meet you, Zorblax! Life on the moon must be quiet."},
    ]

    async def reply(past):
        stream = handles["LLM"].options(stream=True).chat.remote(past + [{"role": "user", "content": "Where do I live?"}])
        return "".join([d async for d in stream])

    without = asyncio.run(reply([]))
    assert asyncio.run(reply([])) == without
    remembered = asyncio.run(reply(history))
    assert "moon" in words(remembered) and "moon" not in words(without), (remembered, without)


def test_tts_speaks_a_sentence_that_asr_understands(handles):
    sentence = "The quick brown fox jumps over the lazy dog."
    speech = handles["TTS"].synthesize.remote(sentence).result()
    assert speech.sample_rate == 22_050 and speech.pcm.dtype == np.float32
    assert 1.0 < speech.duration_s < 6.0
    from avatar_core.media import resample

    heard = handles["ASR"].transcribe.remote(resample(speech.pcm, speech.sample_rate, 16_000)).result()
    assert "quick brown fox" in words(heard)


def animate(handles, speech, state=None, first_s=None, fragment_s=None):
    async def collect():
        stream = handles["Animator"].options(stream=True).animate.remote(speech, state, "default", first_s, fragment_s)
        return [f async for f in stream]

    return asyncio.run(collect())


def test_animator_streams_fragments_as_long_as_the_speech_and_carries_state(handles):
    speech = handles["TTS"].synthesize.remote("Hello, this is a test of the animator, with a longer sentence.").result()
    fragments = animate(handles, speech, first_s=0.4, fragment_s=1.0)
    decoded = [decode_segment(f.data) for f in fragments]
    counts = [len(d.frames) for d in decoded]
    assert counts[0] == 10 and all(c >= 10 for c in counts[1:-1]), counts  # 0.4 s, then about 1 s
    assert sum(counts) == int(np.ceil(speech.duration_s * 25))
    assert all(d.same_length_within_a_frame() for d in decoded)
    assert decoded[0].frames[0].shape == (512, 512, 3) and 'codecs="avc1.' in fragments[0].mime
    assert [f.state.frame for f in fragments] == list(np.cumsum(counts))  # the clock runs on
    assert animate(handles, Speech(np.zeros(0, np.float32), 22_050)) == []  # no audio: no fragment
    second = animate(handles, Speech(speech.pcm[:8820], 22_050), fragments[-1].state)
    assert [len(decode_segment(f.data).frames) for f in second] == [10]
    assert second[0].state.frame == fragments[-1].state.frame + 10


def test_stages_count_their_requests(handles):
    board = stages_when_idle(("TTS",))["TTS"]
    before = handles["TTS"].stats.remote().result()
    handles["TTS"].synthesize.remote("Counting.").result()
    after = handles["TTS"].stats.remote().result()
    assert after["started"] == before["started"] + 1
    assert after["completed"] == before["completed"] + 1 and after["in_flight"] == 0
    # the StageBoard has it too (summed over the replicas, those Serve scaled down among them)
    assert stages_when_idle(("TTS",))["TTS"]["completed"] == board["completed"] + 1
    for name in ("ASR", "LLM", "Animator"):
        assert set(stage_stats(name)) >= {"started", "completed", "cancelled", "failed", "last"}


def test_idle_video_is_counted_apart_from_speech():
    """The Animator deployment's class built in this process (one replica, no Serve): an idle render
    counts as idle, and `stats` (what autoscaling and health read as speech work) does not move."""
    from deployments.animator import Animator
    from tests.conftest import app_config

    async def run():
        cls = Animator.func_or_class
        animator = cls.__new__(cls)
        await cls.__init__(animator, app_config().animator)
        speech_before = animator.stats()
        fragment = await animator.idle_segment(0.4)
        return speech_before, animator.stats(), animator.idle_stats(), fragment

    speech_before, speech_after, idle, fragment = asyncio.run(run())
    assert idle["started"] == idle["completed"] == 1 and idle["in_flight"] == 0
    assert {k: speech_after[k] for k in ("started", "completed")} == {k: speech_before[k] for k in ("started", "completed")}
    assert len(decode_segment(fragment.data).frames) == 10

