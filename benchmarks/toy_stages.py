"""Instant toy stages, so that `benchmarks/sessions.py` measures the front door alone: the graph's own
deployments (ASR, LLM, TTS, Animator, with their counters, health checks and the animator's muxer)
around backends that do next to no work. Registered as backend "toy" of each stage when this module
is imported; replicas import it when they unpickle a config that names them.

- ASR: the words it is told to hear (jfk.flac's by default), at once.
- LLM: "You said: <the words>." word by word, no wait.
- TTS: a quiet tone `word_s` seconds per word, in one chunk per sentence.
- Animator: 16x16 grey frames, so the fragments (real fragmented MP4, H.264 + AAC) cost little to
  encode and carry the reply's real duration.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from avatar_core.config import AnimatorConfig, AsrConfig, LlmConfig, TtsConfig
from avatar_core.protocols import AsrBackend, ChatBackend, FaceBackend, SpeechBackend
from avatar_core.registry import register
from avatar_core.types import Speech

JFK_WORDS = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
SIDE = 16  # the toy animator's frame side in pixels


class _Toy:
    """What every toy backend shares: its config kept, room for many requests, nothing to probe."""

    max_concurrency: ClassVar[int] = 64

    def __init__(self, cfg):
        self.cfg = cfg

    async def probe(self) -> None:
        pass


@register("asr", "toy")
class ToyAsr(_Toy, AsrBackend):
    class Config(AsrConfig):
        backend: Literal["toy"] = "toy"
        text: str = JFK_WORDS

    async def transcribe(self, pcm_16k: np.ndarray, language: str, context: str = "") -> str:
        return self.cfg.text


@register("llm", "toy")
class ToyChat(_Toy, ChatBackend):
    class Config(LlmConfig):
        backend: Literal["toy"] = "toy"
        prefix: str = "You said:"

    async def chat(self, messages, max_tokens, temperature):
        for word in f"{self.cfg.prefix} {messages[-1]['content']}".split()[:max_tokens]:
            yield word + " "


@register("tts", "toy")
class ToyTts(_Toy, SpeechBackend):
    class Config(TtsConfig):
        backend: Literal["toy"] = "toy"
        word_s: float = 0.3  # seconds of speech per word
        rate: int = 16_000

    async def stream(self, text: str, voice_wav: str | None, voice_id: str, language: str):
        n = int(max(1, len(text.split())) * self.cfg.word_s * self.cfg.rate)
        t = np.arange(n, dtype=np.float32) / self.cfg.rate
        yield Speech((0.05 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), self.cfg.rate)


@register("animator", "toy")
class ToyFace(_Toy, FaceBackend):
    class Config(AnimatorConfig):
        backend: Literal["toy"] = "toy"

    async def prepare_avatar(self, image_rgb: np.ndarray) -> None:
        return None

    def new_state(self) -> int:
        return 0

    async def render(self, avatar, audio_16k: np.ndarray, state: int):
        n = -(-audio_16k.size * self.cfg.fps // 16_000)
        yield np.full((n, SIDE, SIDE, 3), 128, np.uint8), state + n

    async def idle(self, avatar, n_frames: int, state: int):
        yield np.full((n_frames, SIDE, SIDE, 3), 128, np.uint8), state + n_frames


def toy_config(cfg):
    """`cfg` (an AppConfig) with the four toy stages; everything else (endpointing and its turn
    model, admission, the store) as it was."""
    return cfg.model_copy(update={
        "asr": ToyAsr.Config(), "llm": ToyChat.Config(), "tts": ToyTts.Config(), "animator": ToyFace.Config(),
    })
