"""Animator stage: speech in, media fragments out (H.264 + AAC, fragmented MP4), streamed.

`animate` takes a piece of a sentence's audio (the ingress sends TTS chunks on as they arrive, cut at
whole video frames) and yields fragments as soon as each is rendered and muxed: the turn's first one
short, since it gates the first frame, later ones longer. The replica renders and encodes in one
place, so raw frames never cross the object store. Replicas keep no per-conversation state: the
caller passes the backend's continuity state in and gets the next one back with every fragment.
"""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from cachetools import LRUCache
from ray import serve

from avatar_core.media import ASR_RATE, fragment_bounds, mux_segment, resample
from avatar_core.threads import run_in_thread
from avatar_core.types import AvatarError, Fragment, Speech
from deployments.stage import Stage


def read_image(path: str) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"avatar image not readable: {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@serve.deployment(name="Animator", ray_actor_options={"num_cpus": 0.2, "num_gpus": 0})
class Animator(Stage):
    """Avatars other than 'default' are read from the shared storage directory the first time a
    replica needs them (`avatars/<id>.png`, written by the ingress after `register_avatar` accepted
    it) and kept in a small LRU cache, so any replica can serve any avatar of any session."""

    stage = "animator"

    async def __init__(self, cfg, storage_dir: str = ""):
        cv2.setNumThreads(1)  # one render, one core: threads only fight the other stages
        await super().__init__(cfg)
        self.storage = Path(storage_dir) / "avatars" if storage_dir else None
        self.default = await self.backend.prepare_avatar(read_image(str(cfg.avatar_image)))
        self.avatars: LRUCache[str, Any] = LRUCache(maxsize=16)
        self.idle_counters = type(self.counters)()
        async for _ in self.animate(Speech(np.zeros(2_205, np.float32), 22_050)):  # warm-up: the muxer
            pass

    async def register_avatar(self, avatar_id: str, png: bytes) -> dict:
        """Find the face in an uploaded image; {"ok": False, "message"} if it cannot be animated."""
        rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        try:
            self.avatars[avatar_id] = await self.backend.prepare_avatar(rgb)
        except AvatarError as exc:
            return {"ok": False, "message": f"no usable face in the image: {exc}"}
        return {"ok": True}

    async def _avatar(self, avatar_id: str) -> Any:
        if avatar_id == "default":
            return self.default
        if (avatar := self.avatars.get(avatar_id)) is not None:
            return avatar
        path = self.storage / f"{avatar_id}.png" if self.storage else None
        if path is None or not path.is_file():
            raise KeyError(f"unknown avatar {avatar_id!r}")
        avatar = self.avatars[avatar_id] = await self.backend.prepare_avatar(read_image(str(path)))
        return avatar

    @serve.multiplexed(max_num_models_per_replica=1024)
    async def _conversation(self, conversation_id: str) -> str:
        """Session affinity: a request that names its conversation (`multiplexed_model_id`) marks
        this replica as holding it, and Serve's router sends that conversation's next requests here
        while it can take them. Nothing is loaded: the "model" is the id."""
        return conversation_id

    async def _note_conversation(self) -> None:
        if conversation_id := serve.get_multiplexed_model_id():
            await self._conversation(conversation_id)

    async def animate(
        self,
        speech: Speech,
        state: Any = None,
        avatar_id: str = "default",
        first_s: float | None = None,
        fragment_s: float | None = None,
    ) -> AsyncIterator[Fragment]:
        """Fragments of this audio in order: the first at most `first_s` long, the rest at most
        `fragment_s` (defaults from the config), each with the state after it."""
        cfg = self.cfg
        with self.counters.track(avatar_id=avatar_id):
            await self._note_conversation()
            avatar = await self._avatar(avatar_id)
            state = state if state is not None else self.backend.new_state()
            n_frames = -(-speech.pcm.size * cfg.fps // speech.sample_rate)
            audio_16k = _exact(resample(speech.pcm, speech.sample_rate, ASR_RATE), n_frames * ASR_RATE // cfg.fps)
            bounds = fragment_bounds(n_frames, cfg.fps, first_s or cfg.first_fragment_s, fragment_s or cfg.fragment_s)
            # A backend that keeps a stream running (Ditto) renders the piece in one call, so it
            # need not push its pipeline's last frames out at every fragment; the others render
            # fragment by fragment. Either way each fragment leaves once its frames exist.
            spans = [(0, n_frames)] if self.backend.renders_whole_pieces else bounds
            hop, rate, frames, done, cut = ASR_RATE // cfg.fps, speech.sample_rate, [], 0, iter(bounds)
            a, b = next(cut, (None, None))  # no audio: no fragment
            for start, end in spans:
                async for batch, state in self.backend.render(avatar, audio_16k[start * hop : end * hop], state):
                    frames.append(batch)
                    while b is not None and done + sum(map(len, frames)) >= b:
                        ready = np.concatenate(frames)
                        frames = [ready[b - done :]]
                        pcm = speech.pcm[a * rate // cfg.fps : b * rate // cfg.fps]
                        yield await run_in_thread(self._mux, ready[: b - done], pcm, rate, state)
                        done = b
                        a, b = next(cut, (None, None))

    async def idle_segment(self, seconds: float, state: Any = None, avatar_id: str = "default") -> Fragment:
        """Listening video with silent audio: the same blinks and head motion, mouth at rest, so the
        avatar stays alive between turns and the clock in `state` runs on without a jump."""
        cfg = self.cfg
        with self.idle_counters.track():
            await self._note_conversation()
            n = max(1, round(seconds * cfg.fps))
            frames = []
            state = state if state is not None else self.backend.new_state()
            async for batch, state in self.backend.idle(await self._avatar(avatar_id), n, state):
                frames.append(batch)
            silence = np.zeros(n * cfg.audio_rate // cfg.fps, np.float32)
            return await run_in_thread(self._mux, np.concatenate(frames), silence, cfg.audio_rate, state)

    def _mux(self, frames: np.ndarray, pcm: np.ndarray, rate: int, state: Any) -> Fragment:
        seg = mux_segment(frames, pcm, rate, self.cfg.fps, self.cfg.audio_rate, self.cfg.crf)
        return Fragment(seg.data, seg.duration_s, seg.mime, state)

    def idle_stats(self) -> dict:
        """Listening video; `stats` counts speech only."""
        return self.idle_counters.snapshot()


def _exact(pcm: np.ndarray, n: int) -> np.ndarray:
    """`pcm` padded with silence or trimmed to exactly n samples (resampling rounds lengths)."""
    return np.pad(pcm[:n], (0, max(0, n - pcm.size))).astype(np.float32, copy=False)
