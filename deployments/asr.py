"""ASR stage: 16 kHz mono PCM, the session's language and the exchange before in, the user's words out."""

import numpy as np
from ray import serve

from deployments.stage import Stage


@serve.deployment(name="ASR", ray_actor_options={"num_cpus": 0.2, "num_gpus": 0})
class ASR(Stage):
    stage = "asr"

    async def transcribe(self, pcm: np.ndarray, language: str = "en", context: str = "") -> str:
        with self.counters.track(language=language):
            return await self.backend.transcribe(pcm, language, context)
