"""Animator stage: speech in, media fragments out (H.264 + AAC, fragmented MP4), streamed.

`animate` takes a piece of a sentence's audio (the ingress sends TTS chunks on as they arrive, cut at
whole video frames) and yields fragments as soon as each is rendered and muxed: the turn's first one
short, since it gates the first frame, later ones longer. The replica renders and encodes in one
place, so raw frames never cross the object store. Replicas keep no per-conversation state: the
caller passes the backend's continuity state in and gets the next one back with every fragment.

When the caller says when its client runs out of video (`deadline`), each fragment is made on the
best rung of the backend's quality ladder that meets it (`deployments/ladder.py`), and says which.
"""

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from cachetools import LRUCache
from ray import serve

from avatar_core.media import ASR_RATE, fragment_bounds, mux_segment, resample
from avatar_core.protocols import Rung
from avatar_core.threads import run_in_thread
from avatar_core.types import AvatarError, Fragment, Speech
from deployments.ladder import Cost, Ladder
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
        self.rungs: list[Rung] = self.backend.ladder()
        self.ladder = Ladder([Cost(0.0, 0.0)] * len(self.rungs))
        async for _ in self.animate(Speech(np.zeros(2_205, np.float32), 22_050)):  # warm-up: the muxer
            pass
        if len(self.rungs) > 1:
            self.ladder = Ladder(await self._costs())

    async def _costs(self) -> list[Cost]:
        """What a fragment costs at each rung on this replica: render + mux of 0.4 s and 1 s of a
        voiced test tone, the fastest of three rounds over all rungs, as a line per rung. In CPU
        seconds of this process (nothing else runs in it yet): a replica that autoscaling starts on
        busy cores measures what an idle one would, where wall time measured the neighbours (rung 0 at
        0.34 s fixed, rung 3 at nothing, seen in a benchmark); the load factor then learns the
        wall seconds per CPU second from the fragments it makes."""
        rate, sizes = ASR_RATE, (0.4, 1.0)
        t = np.arange(rate) / rate
        tone = (0.3 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
        took = np.full((len(self.rungs), len(sizes)), np.inf)
        for _ in range(3):
            for index in range(len(self.rungs)):
                for k, seconds in enumerate(sizes):
                    audio = tone[: int(seconds * rate)]
                    started = time.process_time()
                    await self._fragment(self.default, audio, audio, rate, self.backend.new_state(), index)
                    took[index, k] = min(took[index, k], time.process_time() - started)
        per_s = np.maximum(0.0, (took[:, 1] - took[:, 0]) / (sizes[1] - sizes[0]))
        return [Cost(max(0.0, float(a - p * sizes[0])), float(p)) for a, p in zip(took[:, 0], per_s)]

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
        deadline: float | None = None,
        rung: int = 0,
        hold_s: float = 0.0,
        growth: float | None = None,
    ) -> AsyncIterator[Fragment]:
        """Fragments of this audio in order: the first at most `first_s` long, the rest at most
        `fragment_s` (defaults from the config), each with the state after it. `deadline`: when the
        client will have played everything sent before this call (`time.time()` seconds); None:
        nothing of the turn plays yet, so the first fragment has no deadline and starts playing
        `hold_s` (the client's jitter buffer) after it is made. `rung`: the rung of the session's
        last fragment, where the ladder starts. `growth`: each fragment at most this many times the
        one before (the turn passes `animator.fragment_growth`; None: straight to `fragment_s`)."""
        cfg = self.cfg
        with self.counters.track(avatar_id=avatar_id):
            await self._note_conversation()
            avatar = await self._avatar(avatar_id)
            state = state if state is not None else self.backend.new_state()
            n_frames = -(-speech.pcm.size * cfg.fps // speech.sample_rate)
            audio_16k = _exact(resample(speech.pcm, speech.sample_rate, ASR_RATE), n_frames * ASR_RATE // cfg.fps)
            bounds = fragment_bounds(n_frames, cfg.fps, first_s or cfg.first_fragment_s, fragment_s or cfg.fragment_s,
                                     growth)
            hop, rate = ASR_RATE // cfg.fps, speech.sample_rate
            if self.backend.renders_whole_pieces:
                # A backend that keeps a stream running (Ditto) renders the piece in one call, so it
                # need not push its pipeline's last frames out at every fragment; each fragment
                # leaves once its frames exist. Its ladder has one rung.
                frames, done, cut = [], 0, iter(bounds)
                a, b = next(cut, (None, None))  # no audio: no fragment
                async for batch, state in self.backend.render(avatar, audio_16k, state):
                    frames.append(batch)
                    while b is not None and done + sum(map(len, frames)) >= b:
                        ready = np.concatenate(frames)
                        frames = [ready[b - done :]]
                        pcm = speech.pcm[a * rate // cfg.fps : b * rate // cfg.fps]
                        yield await run_in_thread(self._mux, ready[: b - done], pcm, rate, state, 0)
                        done = b
                        a, b = next(cut, (None, None))
                return
            # The others render fragment by fragment, each on the rung that meets its deadline.
            for a, b in bounds:
                seconds = (b - a) / cfg.fps
                rung = self.ladder.choose(rung, seconds, None if deadline is None else deadline - time.time())
                started = time.perf_counter()
                pcm = speech.pcm[a * rate // cfg.fps : b * rate // cfg.fps]
                fragment = await self._fragment(avatar, audio_16k[a * hop : b * hop], pcm, rate, state, rung)
                self.ladder.observe(rung, seconds, time.perf_counter() - started)
                state = fragment.state
                yield fragment
                if deadline is None:  # the turn's first: it plays once it arrives, after the buffer
                    deadline = time.time() + hold_s
                deadline += seconds  # the next is due when this one has played

    async def _fragment(self, avatar: Any, audio_16k: np.ndarray, pcm: np.ndarray, rate: int, state: Any,
                        rung: int) -> Fragment:
        """One fragment's frames rendered and muxed at `rung`."""
        frames = []
        async for batch, state in self.backend.render(await self.backend.at_rung(avatar, self.rungs[rung]), audio_16k, state):
            frames.append(batch)
        return await run_in_thread(self._mux, np.concatenate(frames), pcm, rate, state, rung)

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

    def _mux(self, frames: np.ndarray, pcm: np.ndarray, rate: int, state: Any, rung: int = 0) -> Fragment:
        r = self.rungs[rung]
        crf = self.cfg.crf if r.crf is None else r.crf
        seg = mux_segment(frames, pcm, rate, self.cfg.fps, self.cfg.audio_rate, crf, r.preset, r.hold)
        return Fragment(seg.data, seg.duration_s, seg.mime, state, rung)

    def idle_stats(self) -> dict:
        """Listening video; `stats` counts speech only."""
        return self.idle_counters.snapshot()

    def ladder_stats(self) -> dict:
        """The quality ladder as this replica sees it: each rung's cost line (seconds at load 1),
        the fragments it made, and the load factor now."""
        return {"names": [r.name for r in self.rungs], **self.ladder.snapshot()}


def _exact(pcm: np.ndarray, n: int) -> np.ndarray:
    """`pcm` padded with silence or trimmed to exactly n samples (resampling rounds lengths)."""
    return np.pad(pcm[:n], (0, max(0, n - pcm.size))).astype(np.float32, copy=False)
