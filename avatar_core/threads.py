"""Bridge a blocking iterator (a model's token loop) into an async generator that can be cancelled."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


async def iterate_in_thread(make_iter: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Run `make_iter()` in a worker thread and yield its items here.

    When the consumer stops early (client gone, turn cancelled), the worker sees the stop flag at its
    next item and ends; this generator waits for it, so the model is free again when it returns.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in make_iter():
                if stop.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, item)
        except BaseException as exc:  # forwarded to the consumer below
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    worker = loop.run_in_executor(None, work)
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        await asyncio.shield(worker)


async def run_in_thread(fn: Callable[..., T], *args) -> T:
    """`asyncio.to_thread`, except that a cancelled caller still waits for the thread to finish.

    A thread cannot be interrupted, so cancelling `to_thread` only abandons it: the replica's request
    counters would say idle while the CPU still renders. Waiting keeps `in_flight` honest and means a
    cancelled request frees the replica when its current call (one sentence at most) ends.
    """
    work = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.gather(work, return_exceptions=True)
        raise
