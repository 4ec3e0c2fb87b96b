"""A cancelled stage request frees its replica only when the model call has really ended."""

import asyncio
import threading
import time

import pytest

from deployments.counters import RequestCounters
from avatar_core.threads import run_in_thread


def test_cancelled_run_in_thread_returns_only_after_the_thread_finished():
    finished = threading.Event()
    counters = RequestCounters()

    def render():
        time.sleep(0.3)
        finished.set()
        return "frame"

    async def request():
        with counters.track():
            return await run_in_thread(render)

    async def main():
        task = asyncio.create_task(request())
        await asyncio.sleep(0.05)
        assert counters.counts["in_flight"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return finished.is_set()

    assert asyncio.run(main()) is True  # to_thread would return at once, thread still running
    assert counters.snapshot() == {"started": 1, "completed": 0, "cancelled": 1, "failed": 0, "in_flight": 0, "last": {}}
    assert asyncio.run(run_in_thread(lambda: 41 + 1)) == 42
