"""Each stage alone, through its real DeploymentHandle, with real models and real audio."""

import asyncio

import numpy as np

from deployments.media import decode_audio
from deployments.tts import Speech
from tests.conftest import JFK_WORDS
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
        stream = handles["LLM"].options(stream=True).generate.remote([], "What is the capital of France?")
        return [d async for d in stream]

    deltas = asyncio.run(collect())
    assert len(deltas) > 3 and all(isinstance(d, str) for d in deltas)
    assert len("".join(deltas).split()) >= 3


def test_llm_uses_the_history_it_is_given(handles):
    """Greedy decoding: the same question answers differently once the history is in the prompt."""
    history = [
        {"role": "user", "content": "My name is Zorblax and I live on the moon."},
        {"role": "assistant", "content": "Nice to meet you, Zorblax! Life on the moon must be quiet."},
    ]

    async def reply(past):
        stream = handles["LLM"].options(stream=True).generate.remote(past, "Where do I live?")
        return "".join([d async for d in stream])

    assert asyncio.run(reply([])) == asyncio.run(reply([]))
    assert asyncio.run(reply(history)) != asyncio.run(reply([]))


def test_tts_speaks_a_sentence_that_asr_understands(handles):
    sentence = "The quick brown fox jumps over the lazy dog."
    speech = handles["TTS"].synthesize.remote(sentence).result()
    assert speech.sample_rate == 22_050 and speech.pcm.dtype == np.float32
    assert 1.0 < speech.duration_s < 6.0
    from deployments.media import resample

    heard = handles["ASR"].transcribe.remote(resample(speech.pcm, speech.sample_rate, 16_000)).result()
    assert "quick brown fox" in words(heard)


def test_animator_makes_a_segment_as_long_as_the_speech_and_carries_state(handles):
    speech = handles["TTS"].synthesize.remote("Hello, this is a test of the animator.").result()
    first = handles["Animator"].render_segment.remote(speech, None).result()
    seg = decode_segment(first.data)
    assert len(seg.frames) == int(np.ceil(speech.duration_s * 25))
    assert seg.frames[0].shape == (512, 512, 3)
    assert seg.same_length_within_a_frame()
    assert 'codecs="avc1.' in first.mime
    second = handles["Animator"].render_segment.remote(Speech(speech.pcm[:8000], 22_050), first.state).result()
    assert decode_segment(second.data).frames
    assert second.state.frame == first.state.frame + len(decode_segment(second.data).frames)


def test_stages_count_their_requests(handles):
    before = handles["TTS"].stats.remote().result()
    handles["TTS"].synthesize.remote("Counting.").result()
    after = handles["TTS"].stats.remote().result()
    assert after["started"] == before["started"] + 1
    assert after["completed"] == before["completed"] + 1 and after["in_flight"] == 0
    for name in ("ASR", "LLM", "Animator"):
        assert set(handles[name].stats.remote().result()) >= {"started", "completed", "cancelled", "failed"}
