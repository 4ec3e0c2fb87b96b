"""A replica's pool of Ditto SDK instances and the streams open on them.

One `StreamSDK` renders one stream at a time (its six worker threads and queues belong to the
stream that `setup` started), so a replica holds N of them (`Slot`s) and gives each conversation's
stream one. A stream stays open between calls, so the motion runs on from sentence to sentence and
into the listening video; it is closed when it has been idle `stream_idle_s`, when a new stream
needs its slot and it is the least recently used idle one, when its request is cancelled (barge-in)
or when a worker fails. When every slot is rendering, a new stream waits for one (back-pressure;
Serve's `max_ongoing_requests` = N keeps that rare).

Ditto's six workers look up their queues and stop event on the SDK instance on every loop, so a
worker that outlives its stream (stuck in a call that ignores the stop event) would work for the next
stream `setup` starts on that instance. A slot whose threads did not stop within `close_timeout_s` is
therefore retired, never handed out again, and the replica reports itself unhealthy so that Serve
replaces it. Every close is bounded by `close_timeout_s`, a graceful one included.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .hops import HOP, HopWindows, samples_for_frames, stride
from .sink import FrameSink, SinkRouter

log = logging.getLogger("ray.serve")


class StreamError(RuntimeError):
    """A stream's worker failed or stopped answering; the stream is closed."""


class StuckThreads(StreamError):
    """A stream's worker threads did not stop: its slot is retired."""


@dataclass
class Slot:
    index: int
    sdk: Any
    stream: "Stream | None" = None
    reserved: bool = False  # taken by a stream that is being opened
    retired: bool = False  # its threads outlived their stream: never used again


class Stream:
    """One conversation's open SDK stream. Frames are numbered on the stream's own clock; `pos` is
    where the next caller's frames begin, `delivered` how many frames callers have received."""

    def __init__(self, key: str, slot: Slot, avatar: Any, router: SinkRouter, cfg: Any):
        self.key, self.slot, self.avatar, self.cfg = key, slot, avatar, cfg
        self.chunksize = tuple(cfg.chunksize)
        self.router = router
        self.sink = FrameSink(asyncio.get_running_loop())
        self.windows = HopWindows(self.chunksize)
        self.pos = 0
        self.delivered = 0
        self.valid_clip_len = 0
        self.busy = False
        self.started = False  # setup returned: the SDK's threads run
        self.closed = False
        self.last_used = time.monotonic()
        self.stop = threading.Event()  # the feeding thread stops before its next window

    # --- blocking parts, run in threads -------------------------------------------------------
    def open(self) -> None:
        sdk = self.slot.sdk
        kwargs = {**self.cfg.setup_kwargs, "online_mode": True}
        for name in ("sampling_timesteps", "overlap_v2", "max_size"):
            if getattr(self.cfg, name) is not None:
                kwargs[name] = getattr(self.cfg, name)
        try:
            sdk.setup(self.avatar.path, self.router.path(self.key, self.sink), **kwargs)
        finally:
            self.router.discard(self.key)  # taken by setup's writer, unless setup failed before it
        self.started = True
        sdk.setup_Nd(N_d=-1, fade_in=self.cfg.fade_in, fade_out=-1, ctrl_info={})  # open-ended
        self.valid_clip_len = int(sdk.audio2motion.valid_clip_len)

    def _feed(self, pcm: np.ndarray) -> None:
        for window in self.windows.push(pcm):
            if self.stop.is_set():
                return
            self.slot.sdk.run_chunk(window, self.chunksize)

    def shutdown(self, graceful: bool) -> BaseException | None:
        """Close the SDK stream within `close_timeout_s`: `graceful` lets the workers finish what
        they hold (the SDK's `close()`, which joins them without a limit, runs in a thread of its
        own and is given the time); then, or at once, they are stopped and their queues drained (a
        worker blocked on a full queue is freed). Returns the worker's error that `close()`
        re-raised, or StuckThreads if a thread is still alive at the deadline."""
        sdk = self.slot.sdk
        deadline = time.monotonic() + self.cfg.close_timeout_s
        outcome: list[BaseException | None] = []

        def close() -> None:
            try:
                sdk.close()  # pushes the end marker, joins the threads, re-raises a worker's error
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                outcome.append(exc)

        closer = None
        if graceful:
            closer = threading.Thread(target=close, name=f"ditto-close-{self.key}", daemon=True)
            closer.start()
            closer.join(timeout=self.cfg.close_timeout_s / 2)
        if closer is None or closer.is_alive():
            self.stop.set()
            sdk.stop_event.set()
            queues = [q for q in vars(sdk).values() if isinstance(q, queue.Queue)]
            while any(t.is_alive() for t in sdk.thread_list) and time.monotonic() < deadline:
                for q in queues:
                    while True:
                        try:
                            q.get_nowait()
                        except queue.Empty:
                            break
                for t in sdk.thread_list:
                    t.join(timeout=0.02)
            alive = [t.name for t in sdk.thread_list if t.is_alive()]
            if alive:
                self.sink.close()
                return StuckThreads(f"Ditto worker threads did not stop within {self.cfg.close_timeout_s:g} s: {alive}")
            if closer is None:
                close()
            else:
                closer.join(timeout=max(0.0, deadline - time.monotonic()) + 1.0)
        self.sink.close()
        return outcome[0] if outcome else StuckThreads("Ditto's close() did not return")

    # --- the caller's side ---------------------------------------------------------------------
    async def frames(self, pcm: np.ndarray | None, n: int) -> AsyncIterator[np.ndarray]:
        """The n frames for `pcm` (n * 640 samples; None = silence), in batches as they leave.

        Speech starts where the audio fed so far ends. Silence starts at `pos`: the silence fed
        after the previous call (to push its last frames out) is already the start of it. Then
        enough silence follows for the SDK to emit the last of the n frames; its frames go to the
        next silent call, or are skipped by the next speech."""
        fed_frames = self.windows.fed // HOP
        start = self.pos if pcm is None else fed_frames
        end = start + n
        if pcm is None:
            pcm = np.zeros(max(0, end * HOP - self.windows.fed), np.float32)
        need = samples_for_frames(end, self.valid_clip_len, self.chunksize)
        need += self.cfg.extra_flush_hops * stride(self.chunksize)
        pad = max(0, need - self.windows.fed - len(pcm))
        pcm = np.concatenate([pcm, np.zeros(-(-pad // HOP) * HOP, np.float32)])
        feeding = asyncio.get_running_loop().run_in_executor(None, self._feed, pcm)
        try:
            got, batch = start, []
            while got < end:
                index, frame = await self._next(feeding)
                if index < start:
                    continue  # pushed out by silence after the previous call, skipped by speech
                batch.append(frame)
                got += 1
                if self.sink.frames.empty() or got == end:
                    yield np.stack(batch)
                    batch = []
            self.pos = end
            await asyncio.shield(feeding)
        except BaseException:
            self.stop.set()
            self.slot.sdk.stop_event.set()
            await asyncio.gather(feeding, return_exceptions=True)
            raise

    async def _next(self, feeding: asyncio.Future) -> tuple[int, np.ndarray]:
        waited = 0.0
        while True:
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for drops a cancel that meets a frame
                async with asyncio.timeout(0.1):
                    item = await self.sink.frames.get()
            except TimeoutError:
                waited += 0.1
                if feeding.done() and feeding.exception() is not None:
                    raise StreamError(f"Ditto run_chunk failed: {feeding.exception()!r}") from feeding.exception()
                if self.slot.sdk.stop_event.is_set():
                    raise StreamError("a Ditto worker stopped")
                if waited > self.cfg.frame_timeout_s:
                    raise StreamError(f"no frame from Ditto in {self.cfg.frame_timeout_s:g} s")
                continue
            if item is None:
                raise StreamError("Ditto's writer closed before the stream ended")
            return item


class Pool:
    """N slots and the streams open on them, most recently used last."""

    def __init__(self, sdks: list[Any]):
        self.slots = [Slot(i, sdk) for i, sdk in enumerate(sdks)]
        self.streams: OrderedDict[str, Stream] = OrderedDict()
        self._changed: asyncio.Event | None = None

    @property
    def changed(self) -> asyncio.Event:
        """Set when a slot is freed or a stream goes idle (either can serve a waiting stream)."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def try_acquire(self) -> Slot | None:
        for slot in self.slots:
            if slot.stream is None and not slot.reserved and not slot.retired:
                slot.reserved = True
                return slot
        return None

    async def acquire(self) -> Slot:
        """A slot with no stream: a free one, else the least recently used idle stream's (closed),
        else wait until a stream ends."""
        while True:
            if all(slot.retired for slot in self.slots):
                raise StuckThreads("every Ditto slot of this replica is retired (worker threads that did "
                                   "not stop); the replica is unhealthy and Serve replaces it")
            slot = self.try_acquire()
            if slot is not None:
                return slot
            victim = next((s for s in self.streams.values() if not s.busy), None)
            if victim is not None:
                await self.close(victim, graceful=True)
                continue
            self.changed.clear()
            await self.changed.wait()

    def release(self, slot: Slot) -> None:
        slot.stream, slot.reserved = None, False
        self.changed.set()

    def retire(self, slot: Slot) -> None:
        """Its threads outlived their stream and would serve the next one: never hand it out."""
        slot.stream, slot.reserved, slot.retired = None, False, True
        log.error("ditto slot %d retired: its worker threads did not stop", slot.index)
        self.changed.set()

    def done(self, stream: Stream) -> None:
        """A call on `stream` ended: it stays open, idle, for its conversation's next call."""
        stream.busy = False
        stream.last_used = time.monotonic()
        self.changed.set()

    def attach(self, stream: Stream) -> None:
        stream.slot.stream, stream.slot.reserved = stream, False
        self.streams[stream.key] = stream

    async def close(self, stream: Stream, graceful: bool) -> BaseException | None:
        """Close a stream and free its slot; waits for the threads even if the caller is cancelled."""
        if stream.closed:
            return None
        stream.closed = True
        stream.busy = True  # nobody picks it up meanwhile
        self.streams.pop(stream.key, None)
        work = asyncio.get_running_loop().run_in_executor(None, stream.shutdown, graceful)
        try:
            error = await asyncio.shield(work)
        except asyncio.CancelledError:
            (error,) = await asyncio.gather(work, return_exceptions=True)
            self._free(stream.slot, error)
            raise
        self._free(stream.slot, error)
        if error is not None:
            log.warning("ditto stream %s closed with an error: %r", stream.key, error)
        return error

    def _free(self, slot: Slot, error: BaseException | None) -> None:
        if isinstance(error, StuckThreads):
            self.retire(slot)
        else:
            self.release(slot)

    async def expire(self, idle_s: float) -> None:
        now = time.monotonic()
        for stream in [s for s in self.streams.values() if not s.busy and now - s.last_used > idle_s]:
            await self.close(stream, graceful=True)

    async def close_all(self) -> None:
        for stream in list(self.streams.values()):
            await self.close(stream, graceful=not stream.busy)
