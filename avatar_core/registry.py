"""Stage backends by name: one module registers one class with its config model.

    @register("llm", "llama-cpp")
    class LlamaCppChat(ChatBackend):
        class Config(LlmConfig):
            backend: Literal["llama-cpp"] = "llama-cpp"
            n_threads: int = 2

The app's config validates each stage's section with the model of the backend it names, so an unknown
backend or a field of another backend fails with a message that names it. `register` checks the class
against its stage's contract (`avatar_core/protocols.py`). The core knows no backend by name: modules
that register backends are found through the `talking_avatar.backends` entry points of installed
packages (this project's `backends/` among them, see pyproject.toml) and imported the first time a
name is looked up (their GPU imports live inside their methods). A backend defined elsewhere (a test)
registers itself when its module is imported; replicas import it when they unpickle its config.
"""

from __future__ import annotations

import inspect
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avatar_core.protocols import STAGE_BASES, Backend

STAGES = ("asr", "llm", "tts", "animator")
ENTRY_POINTS = "talking_avatar.backends"
DEFAULTS = {"asr": "faster-whisper", "llm": "llama-cpp", "tts": "piper", "animator": "procedural"}
_registry: dict[str, dict[str, type]] = {stage: {} for stage in STAGES}
_discovered = False


class BackendConfig(BaseModel):
    """What every backend's config has; each backend adds only its own fields."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    backend: str
    health_probe_s: float = Field(
        120.0,
        ge=0,
        description="check_health runs a tiny inference when the stage has been idle this long "
        "(0 = never); otherwise it only checks that the backend is loaded",
    )


def register(stage: str, name: str):
    """Class decorator: make `cls` (with a nested `Config` model) the `name` backend of `stage`."""
    if stage not in _registry:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")

    def add(cls: type) -> type:
        base = STAGE_BASES[stage]
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"{getattr(cls, '__name__', cls)} must subclass {base.__module__}.{base.__name__}")
        if inspect.isabstract(cls) and cls.deployment.__func__ is Backend.deployment.__func__:
            missing = ", ".join(sorted(cls.__abstractmethods__))
            raise TypeError(f"{cls.__name__} does not implement {missing} (and brings no deployment of its own)")
        config = cls.__dict__.get("Config")
        if not (isinstance(config, type) and issubclass(config, BackendConfig)):
            raise TypeError(f"{cls.__name__} needs a nested `Config(BackendConfig)` model")
        if config.model_fields["backend"].default != name:
            raise TypeError(f"{cls.__name__}.Config.backend must default to {name!r}")
        cls.stage, cls.name = stage, name
        _registry[stage][name] = cls
        return cls

    return add


def _discover() -> None:
    global _discovered
    if not _discovered:
        found = entry_points(group=ENTRY_POINTS)
        if not found:
            raise LookupError(
                f"no package declares {ENTRY_POINTS!r} entry points: install the project "
                "(scripts/install.sh, or pip install -e .) so its backends can be found"
            )
        for entry in found:
            entry.load()  # the module registers its backends
        _discovered = True


def backends_of(stage: str) -> dict[str, type]:
    _discover()
    return dict(_registry[stage])


def backend_class(stage: str, cfg: BackendConfig) -> type:
    """The class that implements `cfg` (registered when `cfg`'s module was imported)."""
    found = backends_of(stage).get(cfg.backend)
    if found is None or not isinstance(cfg, found.Config):
        raise LookupError(f"no {stage} backend registered for config {type(cfg).__qualname__}")
    return found


def parse(stage: str, value: Any) -> BackendConfig:
    """Validate one stage's section with the model of the backend it names (default: embedded)."""
    if isinstance(value, BackendConfig):
        backend_class(stage, value)  # registered for this stage
        return value
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping with a 'backend' key, got {type(value).__name__}")
    name = value.get("backend", DEFAULTS[stage])
    known = backends_of(stage)
    if name not in known:
        raise ValueError(f"unknown {stage} backend {name!r}; choose one of: {', '.join(sorted(known))}")
    try:
        return known[name].Config.model_validate({**value, "backend": name})
    except ValidationError as exc:  # re-raised as one message that names each field
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{stage} backend {name!r}: {problems}") from None


def build(stage: str, cfg: BackendConfig) -> Any:
    """An instance of the backend `cfg` names (loads its model)."""
    return backend_class(stage, cfg)(cfg)
