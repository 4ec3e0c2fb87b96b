"""Fewer, larger items from a fast stream: a reply's tokens, coalesced in time.

Each item of a stage's stream costs a Serve hop to the ingress and a WebSocket message through the
proxy to the page, a few ms of CPU each whatever its size; a small LLM writes 60 tokens a second, so
on shared cores that CPU comes out of the TTS and animator of the first sentence.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

_END = object()


async def coalesced(source: AsyncIterator[str], interval_s: float) -> AsyncIterator[str]:
    """The first item at once; after that at most one item per `interval_s`: every item that came
    meanwhile, joined. An item that comes after a quiet interval also goes at once, so a stream slower
    than the interval passes through unchanged. Closing this closes `source` (its producer ends)."""
    if interval_s <= 0:
        async with aclosing(source):
            async for item in source:
                yield item
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def pump() -> None:
        try:
            async with aclosing(source):
                async for item in source:
                    queue.put_nowait(item)
        except Exception as exc:  # passed to the consumer, in order
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(_END)

    task = asyncio.create_task(pump())
    try:
        last = float("-inf")
        while True:
            items = [await queue.get()]
            if items[0] is not _END and (wait := last + interval_s - loop.time()) > 0:
                await asyncio.sleep(wait)
            while not queue.empty():
                items.append(queue.get_nowait())
            stop = next((k for k, i in enumerate(items) if i is _END or isinstance(i, Exception)), None)
            if text := "".join(items[:stop]):
                yield text
                last = loop.time()
            if stop is not None:
                if isinstance(items[stop], Exception):
                    raise items[stop]
                return
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
