"""check_health's policy: cheap while busy or recently useful, a real inference when idle too long."""

import asyncio
import time

import pytest

from deployments.counters import RequestCounters
from deployments.health import HealthProbe


def test_probe_runs_only_when_idle_long_enough_and_failures_surface():
    counters, calls = RequestCounters(), []

    async def inference():
        calls.append(1)

    probe = HealthProbe(counters, inference, probe_every_s=0.05)
    asyncio.run(probe.check(object()))
    assert calls == []  # just used: no inference needed
    time.sleep(0.06)
    counters.counts["in_flight"] = 1
    asyncio.run(probe.check(object()))
    assert calls == []  # a request is running: never compete with it
    counters.counts["in_flight"] = 0
    asyncio.run(probe.check(object()))
    assert calls == [1]
    asyncio.run(probe.check(object()))
    assert calls == [1]  # the probe itself counts as recent proof

    with pytest.raises(RuntimeError, match="not loaded"):
        asyncio.run(probe.check(None))

    async def broken():
        raise RuntimeError("onnxruntime session is gone")

    failing = HealthProbe(RequestCounters(), broken, probe_every_s=0.01)
    time.sleep(0.02)
    with pytest.raises(RuntimeError, match="gone"):
        asyncio.run(failing.check(object()))
