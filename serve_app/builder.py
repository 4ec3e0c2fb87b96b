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
    if hasattr(backend, "deployment"):
        return backend.deployment(cfg)
    limit = backend.concurrency(cfg) if hasattr(backend, "concurrency") else backend.max_concurrency
    return deployment.options(max_ongoing_requests=limit).bind(cfg, *args)


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
