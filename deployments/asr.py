"""ASR stage: 16 kHz mono PCM and the session's language in, the user's words out."""

import numpy as np
from ray import serve

from deployments.stage import Stage


@serve.deployment(name="ASR", ray_actor_options={"num_cpus": 0.2, "num_gpus": 0})
class ASR(Stage):
    stage = "asr"

    async def transcribe(self, pcm: np.ndarray, language: str = "en") -> str:
        with self.counters.track(language=language):
            return await self.backend.transcribe(pcm, language)
