"""Binds the application graph: four stage deployments composed by the ingress through handles."""


from ray.serve import Application

from deployments.animator import Animator
from deployments.asr import ASR
from deployments.llm import LLM
from deployments.tts import TTS
from serve_app.config import AppConfig
from serve_app.ingress import Ingress


def build_app(args: AppConfig) -> Application:
    """Serve validates the YAML's `args` into AppConfig because of the annotation (so no
    `from __future__ import annotations` here: it would turn the annotation into a string)."""
    section = lambda model: model.model_dump(mode="json")  # noqa: E731
    return Ingress.bind(
        ASR.bind(section(args.asr)),
        LLM.bind(section(args.llm)),
        TTS.bind(section(args.tts)),
        Animator.bind(section(args.animator), str(args.storage.dir)),
        section(args),
    )
