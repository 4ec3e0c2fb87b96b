"""Animator stage: a sentence's speech in, one muxed media segment (H.264 + AAC, fragmented MP4) out.

The replica renders and encodes in one place, so raw frames never cross the object store. Replicas
keep no per-conversation state: the caller passes the animation state (session clock, last mouth
shape) in and gets the next one back, so consecutive segments join without a jump on any replica.
Embedded backend: the procedural animator (`deployments/procedural`). The production backend (Ditto
with TensorRT, GPU) is planned behind `FaceBackend`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from ray import serve

from deployments.counters import RequestCounters
from deployments.health import HealthProbe
from deployments.threads import run_in_thread
from deployments.media import ASR_RATE, mux_segment, resample
from deployments.procedural import AnimState, ProceduralAnimator
from deployments.procedural.errors import AvatarError
from deployments.tts import Speech
from serve_app.config import AnimatorConfig

log = logging.getLogger("ray.serve")


class FaceBackend(Protocol):
    def prepare_avatar(self, image_rgb: np.ndarray) -> Any: ...
    def new_state(self) -> Any: ...
    def render(self, avatar: Any, audio_16k: np.ndarray, state: Any) -> tuple[np.ndarray, Any]: ...
    def idle(self, avatar: Any, n_frames: int, state: Any) -> tuple[np.ndarray, Any]: ...


@dataclass(frozen=True)
class RenderedSegment:
    data: bytes
    duration_s: float
    mime: str
    state: Any  # pass to the next call of the same conversation


class ProceduralBackend(ProceduralAnimator):
    """The embedded backend: landmarks once per avatar, then an audio-driven mesh warp, on CPU."""

    def __init__(self, cfg: AnimatorConfig):
        super().__init__(fps=cfg.fps, seed=cfg.seed)

    def new_state(self) -> AnimState:
        return AnimState()


def read_image(path: str) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"avatar image not readable: {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@serve.deployment(name="Animator", ray_actor_options={"num_cpus": 0.25, "num_gpus": 0})
class Animator:
    """Avatars other than 'default' are read from the shared storage directory the first time a
    replica needs them (`avatars/<id>.png`, written by the ingress after `register_avatar` accepted
    it) and kept in a small LRU cache, so any replica can serve any avatar of any session."""

    def __init__(self, cfg: dict, storage_dir: str = ""):
        started = time.perf_counter()
        self.cfg = AnimatorConfig.model_validate(cfg)
        self.storage = Path(storage_dir) / "avatars" if storage_dir else None
        cv2.setNumThreads(1)  # one replica, one core: threads only fight the other stages
        self.backend: FaceBackend = ProceduralBackend(self.cfg)
        self.default = self.backend.prepare_avatar(read_image(str(self.cfg.avatar_image)))
        self.avatars: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()  # renders run in worker threads
        self._render(Speech(np.zeros(2_205, np.float32), 22_050), None, "default")  # warm-up
        self.counters = RequestCounters()
        silence = Speech(np.zeros(2_205, np.float32), 22_050)
        self.health = HealthProbe(
            self.counters, lambda: self._render(silence, None, "default"), self.cfg.health_probe_s
        )
        self.idle_counters = RequestCounters()
        log.info("Animator ready in %.2fs", time.perf_counter() - started)

    def register_avatar(self, avatar_id: str, png: bytes) -> dict:
        """Find the face in an uploaded image; {"ok": False, "message"} if it cannot be animated."""
        rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        try:
            self._cache(avatar_id, self.backend.prepare_avatar(rgb))
        except AvatarError as exc:
            return {"ok": False, "message": f"no usable face in the image: {exc}"}
        return {"ok": True}

    def _cache(self, avatar_id: str, avatar: Any) -> Any:
        with self._lock:
            self.avatars[avatar_id] = avatar
            while len(self.avatars) > 16:
                self.avatars.popitem(last=False)
        return avatar

    def _avatar(self, avatar_id: str) -> Any:
        if avatar_id == "default":
            return self.default
        with self._lock:
            if avatar_id in self.avatars:
                self.avatars.move_to_end(avatar_id)
                return self.avatars[avatar_id]
        path = self.storage / f"{avatar_id}.png" if self.storage else None
        if path is None or not path.is_file():
            raise KeyError(f"unknown avatar {avatar_id!r}")
        return self._cache(avatar_id, self.backend.prepare_avatar(read_image(str(path))))

    async def render_segment(
        self, speech: Speech, state: Any = None, avatar_id: str = "default"
    ) -> RenderedSegment:
        with self.counters.track():
            return await run_in_thread(self._render, speech, state, avatar_id)

    async def idle_segment(self, seconds: float, state: Any = None, avatar_id: str = "default") -> RenderedSegment:
        """Listening video with silent audio: the same blinks and head motion, mouth at rest, so the
        avatar stays alive between turns and the clock in `state` runs on without a jump."""
        with self.idle_counters.track():
            return await run_in_thread(self._idle, seconds, state, avatar_id)

    def _render(self, speech: Speech, state: Any, avatar_id: str) -> RenderedSegment:
        avatar = self._avatar(avatar_id)
        audio_16k = resample(speech.pcm, speech.sample_rate, ASR_RATE)
        frames, state = self.backend.render(avatar, audio_16k, state or self.backend.new_state())
        seg = mux_segment(
            frames, speech.pcm, speech.sample_rate, self.cfg.fps, self.cfg.audio_rate, self.cfg.crf
        )
        return RenderedSegment(seg.data, seg.duration_s, seg.mime, state)

    def _idle(self, seconds: float, state: Any, avatar_id: str) -> RenderedSegment:
        n = max(1, round(seconds * self.cfg.fps))
        frames, state = self.backend.idle(self._avatar(avatar_id), n, state or self.backend.new_state())
        silence = np.zeros(n * self.cfg.audio_rate // self.cfg.fps, np.float32)
        seg = mux_segment(frames, silence, self.cfg.audio_rate, self.cfg.fps, self.cfg.audio_rate, self.cfg.crf)
        return RenderedSegment(seg.data, seg.duration_s, seg.mime, state)

    def ready(self) -> bool:
        return True

    async def check_health(self) -> None:
        await self.health.check(getattr(self, "backend", None))

    def stats(self) -> dict[str, int]:
        """Speech segments only; `idle_stats` counts the listening video."""
        return self.counters.snapshot()

    def idle_stats(self) -> dict[str, int]:
        return self.idle_counters.snapshot()
