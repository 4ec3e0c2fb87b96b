"""What every stage deployment does besides its own work: build its backend from the config through
the registry, warm it up, answer health checks, and count its requests."""

from __future__ import annotations

import logging
import time

from ray import serve
from ray.serve.exceptions import RayServeException

from avatar_core import registry
from avatar_core.protocols import Backend
from avatar_core.registry import BackendConfig
from deployments.counters import RequestCounters
from deployments.health import HealthProbe

log = logging.getLogger("ray.serve")


class Stage:
    """Base of the four stage deployments. `stage` names the registry's section ("asr", ...)."""

    stage = ""

    async def __init__(self, cfg: BackendConfig):
        started = time.perf_counter()
        self.cfg = cfg
        self.backend: Backend = registry.build(self.stage, cfg)
        await self.backend.probe()  # warm-up: a user's first turn pays no lazy loading
        try:
            ctx = serve.get_replica_context()
            name, deployment = f"SERVE_REPLICA::{ctx.app_name}#{ctx.deployment}#{ctx.replica_id.unique_id}", ctx.deployment
        except RayServeException:  # built in-process, without Serve (benchmarks/run.py): no board
            name, deployment = None, self.stage
        self.counters = RequestCounters(name)
        self.health = HealthProbe(self.counters, self.backend.probe, cfg.health_probe_s)
        log.info("%s ready: backend=%s in %.2fs", deployment, cfg.backend, time.perf_counter() - started)

    async def check_health(self) -> None:
        await self.health.check(self.__dict__.get("backend"))

    def __del__(self) -> None:
        """Serve calls this when it stops the replica: a backend with threads of its own (Ditto's
        SDK workers) stops them, or the process could not exit."""
        backend = self.__dict__.get("backend")  # absent if __init__ failed before building it
        if backend is not None:
            backend.close()

    def stats(self) -> dict:
        """This replica's counters (the StageBoard has them too, readable while the replica works),
        and the backend's own, if it keeps any (`backend`: e.g. XTTS's cached voices)."""
        own = self.backend.stats()
        return {**self.counters.snapshot(), **({"backend": own} if own is not None else {})}
