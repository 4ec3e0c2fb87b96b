"""The embedded animator as a stage backend: landmarks once per avatar, then an audio-driven mesh
warp on CPU. Stateless between calls: the caller passes the AnimState back in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar, Literal

import numpy as np

from avatar_core.config import AnimatorConfig
from avatar_core.protocols import FaceBackend
from avatar_core.registry import register
from avatar_core.threads import run_in_thread

from .animator import ProceduralAnimator
from .avatar import Avatar
from .state import AnimState


@register("animator", "procedural")
class Procedural(FaceBackend):
    class Config(AnimatorConfig):
        backend: Literal["procedural"] = "procedural"
        seed: int = 0

    max_concurrency: ClassVar[int] = 2  # renders release the GIL in OpenCV; two fill two cores

    def __init__(self, cfg: Config):
        self.animator = ProceduralAnimator(fps=cfg.fps, seed=cfg.seed)

    @classmethod
    def languages(cls, cfg: Config) -> None:
        return None

    async def prepare_avatar(self, image_rgb: np.ndarray) -> Avatar:
        return await run_in_thread(self.animator.prepare_avatar, image_rgb)

    def new_state(self) -> AnimState:
        return AnimState()

    async def render(self, avatar: Avatar, audio_16k: np.ndarray, state: AnimState) -> AsyncIterator[tuple[np.ndarray, AnimState]]:
        yield await run_in_thread(self.animator.render, avatar, audio_16k, state)

    async def idle(self, avatar: Avatar, n_frames: int, state: AnimState) -> AsyncIterator[tuple[np.ndarray, AnimState]]:
        yield await run_in_thread(self.animator.idle, avatar, n_frames, state)

    async def probe(self) -> None:
        """Nothing to load lazily: rendering is plain OpenCV on the prepared avatar."""
