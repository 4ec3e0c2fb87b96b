"""Serve's default autoscaling policy as Ray 2.60 writes it (`ray/serve/autoscaling_policy.py`):
desired = mean ongoing requests over `look_back_period_s` / `target_ongoing_requests`, scaled by the
up/down factors, held until the wish has lasted `upscale_delay_s` / `downscale_delay_s` (wall-clock
timestamps), clipped to [min, max]. tests/test_capacity.py checks it against Ray's own functions."""

from __future__ import annotations

import math
from dataclasses import dataclass

# slack for a ratio that is a whole number in exact arithmetic but a hair above it in floating point
EPS = 1e-9


@dataclass
class Autoscaling:
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0  # Serve's defaults
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    look_back_period_s: float = 30.0
    upscaling_factor: float = 1.0
    downscaling_factor: float = 1.0

    @classmethod
    def of(cls, d: dict | None, fixed: int | None = None) -> "Autoscaling":
        if d is None:
            n = fixed or 1
            return cls(min_replicas=n, max_replicas=n)
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Policy:
    """Ray's `replica_queue_length_autoscaling_policy` wrapped in `_apply_autoscaling_config` and
    `apply_bounds`, with the decision state (direction, first timestamp) it keeps between calls."""

    def __init__(self, cfg: Autoscaling):
        self.cfg = cfg
        self.counter = 0  # >0 wanting up, <0 wanting down
        self.since: float | None = None

    def decide(self, now: float, running: int, target: int, total_requests: float) -> int:
        cfg = self.cfg
        if running == 0:
            desired: float = target if total_requests <= 0 else max(1, target)
            return self.bounds(math.ceil(desired))
        desired = total_requests / cfg.target_ongoing_requests  # running * (total / (target * running))
        delta = desired - running
        factor = cfg.upscaling_factor if delta > 0 else cfg.downscaling_factor
        scaled = math.ceil(running + factor * delta - EPS)
        if math.ceil(desired - EPS) < running and scaled == running:
            scaled -= 1
        return self.bounds(self._delay(now, max(0, scaled), target))

    def _delay(self, now: float, desired: int, target: int) -> int:
        cfg = self.cfg
        if desired > target:
            if self.counter < 0:
                self.counter, self.since = 0, None
            self.counter += 1
            self.since = now if self.since is None else self.since
            if now - self.since + 1e-6 >= cfg.upscale_delay_s:
                self.counter, self.since = 0, None
                return desired
        elif desired < target:
            if self.counter > 0:
                self.counter, self.since = 0, None
            self.counter -= 1
            self.since = now if self.since is None else self.since
            if now - self.since + 1e-6 >= cfg.downscale_delay_s:
                self.counter, self.since = 0, None
                return max(1, desired) if target > 1 else desired
        else:
            self.counter, self.since = 0, None
        return target

    def bounds(self, n: int) -> int:
        return max(self.cfg.min_replicas, min(self.cfg.max_replicas, n))
