"""Binds the application graph: four stage deployments, each built around the backend its config
names, composed by the ingress through handles."""

from ray.serve import Application

from avatar_core import registry
from avatar_core.config import AppConfig
from deployments.animator import Animator
from deployments.asr import ASR
from deployments.llm import LLM
from deployments.tts import TTS
from serve_app.ingress import Ingress


def stage_app(deployment, stage: str, cfg, *args) -> Application:
    """The stage's deployment bound with its backend's config. A backend that brings its own
    deployment (a `deployment(cfg)` classmethod, e.g. Ray's vLLM server) is bound instead.
    `max_ongoing_requests` is what the backend can really run at once (`concurrency(cfg)` where
    it depends on the config, e.g. Ditto's pool size; serve_config.yaml says the same and its
    deployments section has the last word)."""
    backend = registry.backend_class(stage, cfg)
    own = backend.deployment(cfg)
    if own is not None:
        return own
    return deployment.options(max_ongoing_requests=backend.concurrency(cfg)).bind(cfg, *args)


def build_app(args: AppConfig) -> Application:
    """Serve validates the YAML's `args` into AppConfig because of the annotation (so no
    `from __future__ import annotations` here: it would turn the annotation into a string)."""
    storage = str(args.storage.dir)
    return Ingress.bind(
        stage_app(ASR, "asr", args.asr),
        stage_app(LLM, "llm", args.llm),
        stage_app(TTS, "tts", args.tts, storage),
        stage_app(Animator, "animator", args.animator, storage),
        args,
    )


def yaml_deployment_options(path: str | None = None, app: int = 0) -> dict[str, dict]:
    """A Serve config file's `deployments` options (CPUs, autoscaling, max_ongoing_requests) per
    deployment name, validated by Ray's own schema; `serve_config.yaml` by default. Only what the
    file sets: Serve fills in its own defaults when the options are applied."""
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    path = Path(path) if path else Path(__file__).resolve().parent.parent / "serve_config.yaml"
    schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    return {d.name: d.model_dump(exclude_unset=True, exclude={"name"}) for d in schema.applications[app].deployments}


def with_options(app: Application, **options) -> Application:
    """A bound application with Serve deployment options applied to its top deployment, as the
    YAML's `deployments` section does (Ray has no public call for this on a bound graph)."""
    return Application(app._bound_deployment.options(**options))


def with_deployment_options(app: Application, options: dict[str, dict]) -> Application:
    """build_app's graph (the ingress bound with its four stages), each deployment with its entry
    in `options` (e.g. `yaml_deployment_options()`), as `serve run serve_config.yaml` deploys it,
    for tests and benchmarks that deploy from Python."""
    ingress = app._bound_deployment
    stages = [with_options(a, **options[a._bound_deployment.name]) if isinstance(a, Application) else a
              for a in ingress.init_args]
    assert {a._bound_deployment.name for a in stages if isinstance(a, Application)} == set(options) - {"Ingress"}
    return Application(ingress.options(_init_args=tuple(stages), **options["Ingress"]))
