"""Ditto (antgroup/ditto-talkinghead) in online mode as the animator backend: TensorRT on a GPU,
several streams per replica.

Not a PyPI package and not runnable here (no GPU, no weights): the cluster image clones the
repository at a pinned commit and downloads the checkpoints (docs/gpu.md, "Ditto (animator)"),
and `repo_dir` names the clone. Its code is imported from there, inside `__init__`, never copied.
What it does with the SDK, by its public API:

- one `StreamSDK(cfg_pkl, data_root)` per pool slot, built once per replica;
- per stream: `setup(source_path, output_path, online_mode=True, ...)`, `setup_Nd(-1, ...)`
  (an open-ended stream), audio fed to `run_chunk(window, chunksize)` in 200 ms hops as the pieces
  of speech arrive, `close()` when the stream ends;
- frames come out through a writer with the interface of Ditto's own (`sink.py`): no file, no
  ffmpeg, each frame straight to the Animator replica that muxes it;
- the avatar's registration (face detection, landmarks, crop, appearance features: what `setup`
  recomputes every call) runs once per avatar; each SDK's `avatar_registrar` is wrapped so that
  every later `setup` of that avatar, on any slot, reuses the result.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import cv2
import numpy as np
from cachetools import LRUCache
from pydantic import Field

from avatar_core.config import AnimatorConfig
from avatar_core.protocols import FaceBackend
from avatar_core.registry import register
from avatar_core.threads import run_in_thread
from avatar_core.types import AvatarError

from .hops import HOP, window_len
from .sink import install
from .streams import Pool, Stream, StreamError, StuckThreads

log = logging.getLogger("ray.serve")
DEFAULT_ROOT = Path("/opt/ditto-talkinghead")


@dataclass(frozen=True)
class DittoAvatar:
    key: str  # content hash of the image
    path: str  # the image in this replica's private directory (what `setup` is given)
    height: int
    width: int


@dataclass(frozen=True)
class DittoState:
    """What the ingress passes back: the stream this conversation last used (on whichever replica
    rendered it) and the frames it has been given, so a replica continues only its own, current
    stream and opens a new one otherwise."""

    stream: str = ""
    frame: int = 0


class RegisteredAvatars:
    """Stands in each SDK's `avatar_registrar`: the first registration of an image (with the same
    options) is computed by the wrapped registrar, every later one is the stored result. The source
    info is only read by the SDK's workers, so streams on all slots share it."""

    def __init__(self, limit: int = 32):
        self.results: LRUCache[tuple, dict] = LRUCache(maxsize=limit)
        self.seconds: dict[str, float] = {}  # what each registration cost (the saving per later setup)
        self.lock = threading.Lock()

    def wrap(self, registrar: Any) -> Any:
        table = self

        class Cached:
            inner = registrar

            def __call__(self, source_path, **kwargs):
                key = (str(source_path), tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
                with table.lock:
                    if (found := table.results.get(key)) is not None:
                        return found
                started = time.perf_counter()
                info = registrar(source_path, **kwargs)
                with table.lock:
                    table.seconds[str(source_path)] = time.perf_counter() - started
                    table.results[key] = info
                return info

        return Cached()


@register("animator", "ditto")
class Ditto(FaceBackend):
    class Config(AnimatorConfig):
        backend: Literal["ditto"] = "ditto"
        repo_dir: Path = Field(DEFAULT_ROOT, description="a clone of antgroup/ditto-talkinghead (pinned commit)")
        checkpoint_dir: Path = Field(
            DEFAULT_ROOT / "checkpoints" / "ditto_trt_sm89",
            description="data_root: the directory that holds the model files themselves (Ditto joins the "
            "cfg's bare file names onto it): the TensorRT engines rebuilt for the GPU, or ditto_pytorch",
        )
        cfg_pkl: Path = Field(
            DEFAULT_ROOT / "checkpoints" / "ditto_cfg" / "v0.4_hubert_cfg_trt_online.pkl",
            description="the online config (v0.4_hubert_cfg_pytorch.pkl with the PyTorch checkpoints)",
        )
        pool_size: int = Field(
            1, ge=1, le=16, description="SDK instances (concurrent streams) per replica; more than one in a "
            "process segfaulted for others (upstream issue 62): raise it only after measuring on the GPU",
        )
        chunksize: tuple[int, int, int] = Field((3, 5, 2), description="run_chunk's (left, hop, right) frames")
        sampling_timesteps: int = Field(
            50, ge=1, description="diffusion steps per clip (upstream's default; fewer buy speed)")
        overlap_v2: int = Field(
            70, ge=1, description="LMDM clip overlap: each 80-frame clip brings 80 - overlap_v2 new frames, "
            "so 70 emits every 0.4 s (the maintainers' online setting, upstream issue 14); upstream's "
            "default of 10 would hold the first frame back 2.8 s")
        max_size: int | None = Field(None, ge=64, description="longest side of the output; None: the SDK's 1920")
        fade_in: int = Field(-1, description="frames fading in from the still face when a stream opens")
        setup_kwargs: dict[str, Any] = Field(default_factory=dict, description="more StreamSDK.setup options (emo, crop_scale, ...)")
        sdk_kwargs: dict[str, dict[str, Any]] = Field(default_factory=dict, description="StreamSDK(..., **kwargs): cfg overrides")
        stream_idle_s: float = Field(30.0, gt=0, description="an open stream nobody used this long is closed")
        frame_timeout_s: float = Field(30.0, gt=0, description="longest wait for the next frame")
        close_timeout_s: float = Field(10.0, gt=0, description="longest wait for a stopped stream's threads")
        extra_flush_hops: int = Field(0, ge=0, description="silence hops fed beyond the computed lag")
        scratch_dir: Path | None = Field(
            None, description="where each replica keeps the registered avatars' images (a directory of its "
            "own inside, removed when it stops); None: the system's temp dir")

    max_concurrency: ClassVar[int] = 1  # the default pool_size; `concurrency(cfg)` gives the real one
    renders_whole_pieces: ClassVar[bool] = True  # one render per piece of speech: the stream runs on

    @classmethod
    def concurrency(cls, cfg: Config) -> int:
        return cfg.pool_size

    @classmethod
    def languages(cls, cfg: Config) -> None:
        return None  # driven by audio features: any language

    def __init__(self, cfg: Config):
        self.cfg = cfg
        module = self._import(cfg)
        self.router = install(module)
        self.registered = RegisteredAvatars()
        self.max_concurrency = cfg.pool_size
        sdks = []
        for _ in range(cfg.pool_size):
            sdk = module.StreamSDK(str(cfg.cfg_pkl), str(cfg.checkpoint_dir), **cfg.sdk_kwargs)
            sdk.avatar_registrar = self.registered.wrap(sdk.avatar_registrar)
            sdks.append(sdk)
        self.pool = Pool(sdks)
        log.info(
            "ditto: %d SDK instance(s), overlap_v2=%d, sampling_timesteps=%d, max_size=%s, chunksize=%s, "
            "data_root=%s, cfg=%s", cfg.pool_size, cfg.overlap_v2, cfg.sampling_timesteps, cfg.max_size,
            tuple(cfg.chunksize), cfg.checkpoint_dir, cfg.cfg_pkl,
        )
        # Registered avatars' images, removed when the backend closes or the replica exits.
        self._avatar_tmp = tempfile.TemporaryDirectory(prefix="ditto-avatars-", dir=cfg.scratch_dir)
        self.avatar_dir = Path(self._avatar_tmp.name)
        self.avatar_lock: asyncio.Lock | None = None
        self._expiry: asyncio.Task | None = None
        self._reported = False

    @staticmethod
    def _import(cfg: Config) -> Any:
        missing = [
            f"{what} {path}" for what, path, ok in (
                ("repo_dir", cfg.repo_dir, (cfg.repo_dir / "stream_pipeline_online.py").is_file()),
                ("checkpoint_dir", cfg.checkpoint_dir, cfg.checkpoint_dir.is_dir()),
                ("cfg_pkl", cfg.cfg_pkl, cfg.cfg_pkl.is_file()),
            ) if not ok
        ]
        if missing:
            raise RuntimeError(
                "the ditto animator needs the antgroup/ditto-talkinghead clone and its checkpoints "
                f"(see docs/gpu.md, \"Ditto (animator)\"); missing: {'; '.join(missing)}"
            )
        models = [p for p in cfg.checkpoint_dir.iterdir() if p.suffix in (".engine", ".onnx", ".pth")]
        if not models:
            below = sorted(p.name for p in cfg.checkpoint_dir.iterdir() if p.is_dir())
            raise RuntimeError(
                f"checkpoint_dir {cfg.checkpoint_dir} holds no model file (.engine, .onnx, .pth): Ditto joins "
                "the cfg's bare file names onto it, so name the directory of the files themselves"
                + (f", e.g. {cfg.checkpoint_dir / below[0]}" if below else "")
            )
        if str(cfg.repo_dir) not in sys.path:
            sys.path.insert(0, str(cfg.repo_dir))
        if any(p.suffix == ".pth" for p in models):
            # The PyTorch fallback: torch 2.6 and later load with weights_only=True unless told otherwise,
            # and Ditto's torch.load calls predate that; these are the pinned release's own files.
            os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
            log.info("ditto: PyTorch checkpoints, loaded with weights_only=False (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD)")
        return importlib.import_module("stream_pipeline_online")

    # --- avatars -----------------------------------------------------------------------------
    async def prepare_avatar(self, image_rgb: np.ndarray) -> DittoAvatar:
        """Register the face once: a `setup` on a free slot computes it (the wrapper keeps it, with
        the exact options `setup` passes), and the stream it started is closed at once."""
        img = np.asarray(image_rgb)
        if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
            raise AvatarError(f"expected an HxWx3 uint8 RGB image, got shape {img.shape} dtype {img.dtype}")
        img = np.ascontiguousarray(img[:, :, :3])
        key = hashlib.sha1(img.tobytes() + repr(img.shape).encode()).hexdigest()[:16]
        path = self.avatar_dir / f"{key}.png"
        if not path.is_file():
            cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        self.avatar_lock = self.avatar_lock or asyncio.Lock()
        async with self.avatar_lock:
            slot = await self.pool.acquire()
            stream = Stream("register-" + key, slot, DittoAvatar(key, str(path), 0, 0), self.router, self.cfg)
            try:
                await self._open(stream)
            except Exception as exc:
                raise AvatarError(f"Ditto could not register a face in the image ({type(exc).__name__}: {exc})") from exc
            height, width = slot.sdk.source_info["img_rgb_lst"][0].shape[:2]  # the output size
            error = await self.pool.close(stream, graceful=True)
            if error is not None:
                raise RuntimeError(f"Ditto failed after registering the avatar: {error!r}") from error
        log.info("ditto avatar %s registered in %.2fs", key, self.registered.seconds.get(str(path), 0.0))
        return DittoAvatar(key, str(path), int(height), int(width))

    # --- rendering ---------------------------------------------------------------------------
    def new_state(self) -> DittoState:
        return DittoState()

    async def render(self, avatar: DittoAvatar, audio_16k: np.ndarray, state: DittoState) -> AsyncIterator[tuple[np.ndarray, DittoState]]:
        n = max(1, -(-len(audio_16k) // HOP))
        pcm = np.zeros(n * HOP, np.float32)
        pcm[: len(audio_16k)] = audio_16k
        async for item in self._run(avatar, pcm, n, state):
            yield item

    async def idle(self, avatar: DittoAvatar, n_frames: int, state: DittoState) -> AsyncIterator[tuple[np.ndarray, DittoState]]:
        """Listening: the same stream, fed silence (as Ditto's maintainers advise for idle video)."""
        async for item in self._run(avatar, None, n_frames, state):
            yield item

    async def _run(self, avatar: DittoAvatar, pcm: np.ndarray | None, n: int, state: DittoState):
        self._start_expiry()
        stream = await self._stream_for(avatar, state)
        done = False
        try:
            async for batch in stream.frames(pcm, n):
                stream.delivered += len(batch)
                yield batch, DittoState(stream.key, stream.delivered)
            done = True
        except StreamError as exc:
            error = await self.pool.close(stream, graceful=False)
            raise RuntimeError(f"{exc}: {error!r}" if error else str(exc)) from (error or exc)
        finally:
            if not done and not stream.closed:  # cancelled (barge-in, client gone) or failed
                await self.pool.close(stream, graceful=False)
            self.pool.done(stream)

    async def _stream_for(self, avatar: DittoAvatar, state: DittoState | None) -> Stream:
        """This conversation's open stream if this replica holds it and it is where the state
        says; else a new one on a free slot."""
        old = self.pool.streams.get(state.stream) if state and state.stream else None
        if old is not None and not old.busy:
            if old.avatar.key == avatar.key and old.delivered == state.frame:
                old.busy = True
                self.pool.streams.move_to_end(old.key)
                return old
            await self.pool.close(old, graceful=True)  # another avatar, or an older state
        slot = await self.pool.acquire()
        stream = Stream(secrets.token_urlsafe(9), slot, avatar, self.router, self.cfg)
        stream.busy = True
        await self._open(stream)
        if not self._reported:
            self._reported = True
            log.info("ditto: first stream open: frames leave in blocks of valid_clip_len=%d (%.2f s)",
                     stream.valid_clip_len, stream.valid_clip_len / 25)
        return stream

    async def _open(self, stream: Stream) -> None:
        """`setup` in a thread; if it fails or the caller is cancelled, the slot is freed (and the
        threads a finished `setup` started are stopped)."""
        try:
            await run_in_thread(stream.open)
        except BaseException:
            if stream.started:
                self.pool.attach(stream)
                await self.pool.close(stream, graceful=False)
            else:
                self.pool.release(stream.slot)
            raise
        self.pool.attach(stream)

    def _start_expiry(self) -> None:
        if self._expiry is None or self._expiry.done():
            self._expiry = asyncio.get_running_loop().create_task(self._expire_forever())

    async def _expire_forever(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.cfg.stream_idle_s / 2))
            await self.pool.expire(self.cfg.stream_idle_s)

    async def probe(self) -> None:
        """One HuBERT window on a free slot (a busy replica is evidently working); unhealthy once a
        slot is retired (threads that outlived their stream hold it), so that Serve replaces it."""
        retired = [slot.index for slot in self.pool.slots if slot.retired]
        if retired:
            raise StuckThreads(f"ditto slots {retired} retired: worker threads that did not stop")
        slot = self.pool.try_acquire()
        if slot is None:
            return
        try:
            window = np.zeros(window_len(self.cfg.chunksize), np.float32)
            await run_in_thread(lambda: slot.sdk.wav2feat(window, chunksize=tuple(self.cfg.chunksize)))
        finally:
            self.pool.release(slot)

    async def aclose(self) -> None:
        """Close every stream (their threads end) and remove the registered avatars' images."""
        if self._expiry is not None:
            self._expiry.cancel()
        await self.pool.close_all()
        self._avatar_tmp.cleanup()

    def close(self) -> None:
        """Stop every stream at once, from any thread: the SDK's worker threads are not daemons,
        so a replica that exits with a stream open would wait for them forever."""
        for slot in self.pool.slots:
            if slot.stream is not None and not slot.stream.closed:
                slot.stream.closed = True
                slot.stream.shutdown(graceful=False)
        self._avatar_tmp.cleanup()
