"""The embedded animator as a stage backend: landmarks once per avatar, then an audio-driven mesh
warp on CPU. Stateless between calls: the caller passes the AnimState back in.

Its quality ladder (`Config.ladder`, best first) trades frame rate (`hold`), output size (`scale`)
and the encoder's quality (`crf`) for speed; the Animator stage steps down it when a fragment would
reach the client after the one before has finished playing, and back up with headroom."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar, Literal

import numpy as np
from cachetools import LRUCache
from pydantic import Field

from avatar_core.config import AnimatorConfig
from avatar_core.protocols import FaceBackend, Rung
from avatar_core.registry import register
from avatar_core.threads import run_in_thread

from .animator import ProceduralAnimator
from .avatar import Avatar, scaled
from .state import AnimState


class ProceduralRung(Rung):
    scale: float = Field(1.0, ge=0.25, le=1.0, description="output size relative to the avatar image "
                         "(each side rounded to even)")


# Each rung costs about 0.6 of the one above it (the Animator measures them when it starts:
# docs/benchmarks.md, "Quality ladder"); crf 26 on the last also halves its bytes for a slow link.
LADDER = [
    {"name": "25 fps"},
    {"name": "12.5 fps", "hold": 2},
    {"name": "12.5 fps, 3/4 size", "hold": 2, "scale": 0.75},
    {"name": "8.3 fps, 1/2 size", "hold": 3, "scale": 0.5, "crf": 26},
]


@register("animator", "procedural")
class Procedural(FaceBackend):
    class Config(AnimatorConfig):
        backend: Literal["procedural"] = "procedural"
        seed: int = 0
        ladder: list[ProceduralRung] = Field(
            default_factory=lambda: [dict(rung) for rung in LADDER], validate_default=True, min_length=1,
            description="quality rungs, best first, that the Animator steps down when it falls behind "
            "the client's playback (one rung: never)",
        )

    max_concurrency: ClassVar[int] = 2  # renders release the GIL in OpenCV; two fill two cores

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.animator = ProceduralAnimator(fps=cfg.fps, seed=cfg.seed, cache_size=8 * len(cfg.ladder))
        self.rungs: LRUCache[tuple, Avatar] = LRUCache(maxsize=16 * len(cfg.ladder))

    @classmethod
    def languages(cls, cfg: Config) -> None:
        return None

    def ladder(self) -> list[Rung]:
        return list(self.cfg.ladder)

    async def prepare_avatar(self, image_rgb: np.ndarray) -> Avatar:
        """The face found once, and its rig built at every rung, so a step down costs no setup."""
        avatar = await run_in_thread(self.animator.prepare_avatar, image_rgb)
        for rung in self.cfg.ladder:
            await self.at_rung(avatar, rung)
        return avatar

    async def at_rung(self, avatar: Avatar, rung: ProceduralRung) -> Avatar:
        key = (avatar.key, rung.scale, rung.hold)
        if (found := self.rungs.get(key)) is None:
            found = await run_in_thread(self._at_rung, avatar, rung)
            self.rungs[key] = found
        return found

    def _at_rung(self, avatar: Avatar, rung: ProceduralRung) -> Avatar:
        out = scaled(avatar, rung.scale, rung.hold)
        self.animator.prepare_rig(out)
        return out

    def new_state(self) -> AnimState:
        return AnimState()

    async def render(self, avatar: Avatar, audio_16k: np.ndarray, state: AnimState) -> AsyncIterator[tuple[np.ndarray, AnimState]]:
        yield await run_in_thread(self.animator.render, avatar, audio_16k, state)

    async def idle(self, avatar: Avatar, n_frames: int, state: AnimState) -> AsyncIterator[tuple[np.ndarray, AnimState]]:
        yield await run_in_thread(self.animator.idle, avatar, n_frames, state)

    async def probe(self) -> None:
        """Nothing to load lazily: rendering is plain OpenCV on the prepared avatar."""
