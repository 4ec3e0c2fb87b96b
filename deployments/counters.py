"""Per-replica request counters: how much work a stage started, finished, and had cancelled.

Cancellation is only real if the stage stops working, so tests and operators read it here, on the
stage itself, rather than trusting the caller's side of the story.
"""

import asyncio
import time
from contextlib import contextmanager


class RequestCounters:
    def __init__(self) -> None:
        self.counts = {"started": 0, "completed": 0, "cancelled": 0, "failed": 0, "in_flight": 0}
        self.last_ok = time.monotonic()  # of the last completed request; read by check_health

    @contextmanager
    def track(self):
        self.counts["started"] += 1
        self.counts["in_flight"] += 1
        try:
            yield
        except (asyncio.CancelledError, GeneratorExit):
            self.counts["cancelled"] += 1
            raise
        except Exception:
            self.counts["failed"] += 1
            raise
        else:
            self.counts["completed"] += 1
            self.last_ok = time.monotonic()
        finally:
            self.counts["in_flight"] -= 1

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)
