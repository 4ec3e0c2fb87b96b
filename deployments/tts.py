"""TTS stage: one sentence, the session's voice and language in; its audio out in chunks as the
backend makes them. A voice id names a reference clip in the shared storage directory (written by the
ingress on upload), which a voice-cloning backend conditions on; clients never name paths."""

from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import numpy as np
from ray import serve

from avatar_core.types import Speech
from deployments.stage import Stage


@serve.deployment(name="TTS", ray_actor_options={"num_cpus": 0.2, "num_gpus": 0})
class TTS(Stage):
    stage = "tts"

    async def __init__(self, cfg, storage_dir: str = ""):
        await super().__init__(cfg)
        self.voices = Path(storage_dir) / "voices" if storage_dir else None

    def voice_wav(self, voice_id: str) -> str | None:
        """The stored clip of a voice id (ids are checked by the ingress against a strict pattern)."""
        if voice_id == "default":
            return None
        path = self.voices / f"{voice_id}.wav" if self.voices else None
        if path is None or not path.is_file():
            raise KeyError(f"unknown voice {voice_id!r}")
        return str(path)

    async def stream(self, text: str, voice_id: str = "default", language: str = "en") -> AsyncIterator[Speech]:
        with self.counters.track(voice_id=voice_id, language=language):
            wav = self.voice_wav(voice_id) if self.backend.clones_voices else None
            async with aclosing(self.backend.stream(text[: self.cfg.max_chars], wav, voice_id, language)) as chunks:
                async for chunk in chunks:  # closed at once when the caller stops early
                    yield chunk

    async def synthesize(self, text: str, voice_id: str = "default", language: str = "en") -> Speech:
        """The whole sentence at once (notebooks, benchmarks): the chunks joined."""
        chunks = [c async for c in self.stream(text, voice_id, language)]
        rate = chunks[0].sample_rate if chunks else 24_000
        return Speech(np.concatenate([c.pcm for c in chunks]) if chunks else np.zeros(0, np.float32), rate)
