"""`check_health` for the stage deployments: cheap by default, a real inference now and then.

Serve calls `check_health()` on every replica every few seconds and replaces a replica whose check
raises or hangs. A loaded backend that answered recently is healthy; a replica that has been idle
longer than `probe_every_s` proves it still works with the backend's tiny real inference, run only
while no request is in flight so a probe never competes with a user's turn.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from deployments.counters import RequestCounters


class HealthProbe:
    def __init__(self, counters: RequestCounters, probe: Callable[[], Awaitable[None]], probe_every_s: float):
        self.counters, self.probe, self.every_s = counters, probe, probe_every_s
        self.last_probe = time.monotonic()

    async def check(self, backend: object) -> None:
        if backend is None:
            raise RuntimeError("the stage's backend is not loaded")
        now = time.monotonic()
        idle_since = max(self.counters.last_ok, self.last_probe)
        if self.every_s and self.counters.counts["in_flight"] == 0 and now - idle_since > self.every_s:
            await self.probe()  # raises (replica replaced) if inference is broken
            self.last_probe = time.monotonic()
