"""Hearing in context: ASR hears each utterance after the avatar's reply before it (Whisper's prompt),
so a follow-up is heard in its light, and never said over and over; not after the user's own words,
which Whisper would copy; the session and the turn pass that reply to the ASR stage."""

import asyncio

import numpy as np
import pytest

from avatar_core.config import AppConfig
from avatar_core.media import decode_audio, resample
from backends.faster_whisper import FasterWhisper
from benchmarks.conversation import FakeWebSocket, edit_distance, words
from serve_app.conversation import Conversation
from serve_app.service import TurnService
from serve_app.turn import Stages
from tests.test_models import JFK_TEXT, shipped_asr
from tests.test_warm import StandInHandle

# (the reply before, the follow-up): spoken fast, tiny.en alone hears "spink", "doesn't ant",
# "play hero" and "pits" (docs/backends.md, "Hearing in context")
FOLLOW_UPS = [
    ("The capital of France is Paris.", "And what about Spain?"),
    ("A spider has eight legs.", "And how many does an ant have?"),
    ("William Shakespeare wrote Romeo and Juliet.", "Name another play he wrote."),
    ("How lovely, three pets!", "How many pets do I have?"),
]


def test_the_context_is_the_reply_the_user_heard():
    conv = Conversation("c")
    assert conv.last_reply() == ""
    conv.remember("What is the capital of France?", "Paris is.", "t1")
    conv.remember("And of Spain?", "Madrid is the capital of Spain.", "t2")
    assert conv.last_reply() == "Madrid is the capital of Spain."
    assert conv.keep_heard("t2", "Madrid is")  # cut by a barge-in: what they heard
    assert conv.last_reply() == "Madrid is"
    assert conv.keep_heard("t2", "")  # heard nothing: the reply before is the context again
    assert conv.last_reply() == "Paris is."


@pytest.fixture(scope="module")
def piper():
    from backends.piper import Piper

    return Piper(Piper.Config())


def spoken(piper, text: str, length_scale: float) -> np.ndarray:
    """Piper's voice without its randomness (the same samples every run), `length_scale` times its
    usual length, half a second of silence either side."""
    from piper import SynthesisConfig

    config = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
    pcm = np.concatenate([c.audio_float_array for c in piper.voice.synthesize(text, syn_config=config)])
    pcm = resample(pcm.astype(np.float32), piper.sample_rate, 16_000)
    pad = np.zeros(8_000, np.float32)
    return np.concatenate([pad, pcm, pad])


def test_the_shipped_asr_hears_fast_follow_ups_better_after_the_reply_before(piper, jfk_bytes):
    """Real speech synthesis and the shipped tiny.en: with the reply before as context, fewer
    words are wrong over the follow-ups and none is heard worse; the context's words do not leak into
    what is heard (jfk.flac stays word for word)."""
    cfg = shipped_asr()
    assert cfg.context
    asr = FasterWhisper(cfg)
    alone = in_context = 0
    for before, said in FOLLOW_UPS:
        pcm = spoken(piper, said, length_scale=0.6)
        plain = edit_distance(words(said), words(asyncio.run(asr.transcribe(pcm, "en"))))
        helped = edit_distance(words(said), words(asyncio.run(asr.transcribe(pcm, "en", before))))
        assert helped <= plain, (said, before)
        alone, in_context = alone + plain, in_context + helped
    assert in_context < alone, (in_context, alone)
    pcm = decode_audio(jfk_bytes, 60)
    heard = asyncio.run(asr.transcribe(pcm, "en", "That is from Kennedy's inaugural address."))
    assert " ".join(words(heard)) == JFK_TEXT


def test_a_user_who_repeats_a_misheard_sentence_is_not_misheard_again(jfk_bytes):
    """Whisper copies its prompt: after the user's own misheard words ("asked not", as tiny.en heard
    the browser's processed jfk.flac), even clean jfk.flac is heard "asked" again; after the reply
    alone, as the session passes it, word for word."""
    asr = FasterWhisper(shipped_asr())
    misheard = JFK_TEXT.replace("ask not", "asked not")
    reply = "I'm glad of you. I'll make sure to be more helpful in the future."
    pcm = decode_audio(jfk_bytes, 60)
    copied = asyncio.run(asr.transcribe(pcm, "en", f"{misheard} {reply}"))
    assert "asked not" in " ".join(words(copied)), copied  # the fault the user's words in the prompt made
    conv = Conversation("c")
    conv.remember(misheard, reply, "t1")
    assert " ".join(words(asyncio.run(asr.transcribe(pcm, "en", conv.last_reply())))) == JFK_TEXT


def test_a_follow_up_heard_in_context_is_heard_once_not_over_and_over(piper):
    """A prompt makes Whisper likelier to say a short utterance again and again (this one three times
    at the backend's default repetition_penalty of 1); the shipped 1.1 hears it once."""
    pcm = spoken(piper, "Now add three to that.", length_scale=1.0)
    cfg = shipped_asr()
    assert cfg.repetition_penalty > 1
    heard = asyncio.run(FasterWhisper(cfg).transcribe(pcm, "en", "Two plus two is four."))
    assert words(heard) == ["now", "add", "three", "to", "that"], heard


def test_without_context_on_the_backend_ignores_the_reply():
    asr = FasterWhisper.__new__(FasterWhisper)
    asr.cfg = FasterWhisper.Config(initial_prompt="Hello.")
    assert asr.prompt("And what about Spain?") == "Hello."
    asr.cfg = FasterWhisper.Config(initial_prompt="Hello.", context=True)
    assert asr.prompt("  And what about Spain? ") == "Hello. And what about Spain?"
    asr.cfg = FasterWhisper.Config(context=True)
    assert asr.prompt("") is None


class RecordingAsr(StandInHandle):
    """Stand-in for the ASR stage's handle: records each transcribe call's arguments."""

    def __init__(self):
        super().__init__("ASR")
        self.transcribe, self.args = self, []

    def remote(self, *args):
        self.args.append(args)

        async def answer():
            return "How many pets do I have?"

        return answer()


def test_the_session_and_the_turn_pass_the_reply_before_to_asr_with_a_stand_in_asr(tmp_path):
    """Both ways ASR is asked: at a pause, hands-free (WsSession.transcribe), and by a turn that has
    no transcript yet (Turn.hear, as POST /api/v1/turn does)."""
    from serve_app.ws_session import WsSession

    cfg = AppConfig.model_validate({"storage": {"dir": str(tmp_path)}})
    asr = RecordingAsr()
    service = TurnService(Stages(asr, *(StandInHandle(n) for n in ("LLM", "TTS", "Animator"))), cfg)
    pcm = np.zeros(16_000, np.float32)

    async def both() -> tuple[str, str]:
        session = WsSession(FakeWebSocket(), service)
        await session.open()
        session.conv.remember("I have two cats and a dog.", "How lovely!", "t1")
        session.transcribe(1, pcm)
        at_pause = await session.heard.pop(1)
        turn = service.turn(session.conv, pcm)
        return at_pause, await turn.hear()

    assert asyncio.run(both()) == ("How many pets do I have?",) * 2
    assert [a[1:] for a in asr.args] == [("en", "How lovely!")] * 2
    assert all(a[0] is pcm for a in asr.args)
