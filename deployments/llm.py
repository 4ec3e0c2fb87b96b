"""LLM stage: the conversation's messages in (the ingress builds them: system prompt, language,
history), the reply out as streamed text deltas. Replicas keep no conversation state."""

from collections.abc import AsyncIterator
from contextlib import aclosing

from ray import serve

from avatar_core.types import Message
from deployments.stage import Stage


@serve.deployment(name="LLM", ray_actor_options={"num_cpus": 0.2, "num_gpus": 0})
class LLM(Stage):
    stage = "llm"

    async def chat(
        self, messages: list[Message], max_tokens: int | None = None, temperature: float | None = None
    ) -> AsyncIterator[str]:
        max_tokens = self.cfg.max_tokens if max_tokens is None else max_tokens
        temperature = self.cfg.temperature if temperature is None else temperature
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        with self.counters.track(system=system):
            async with aclosing(self.backend.chat(messages, max_tokens, temperature)) as deltas:
                async for delta in deltas:  # closed at once when the caller stops early
                    yield delta
