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
    """A deployment's autoscaling_config, its defaults Serve's own (read through Ray's
    `AutoscalingConfig`, never retyped here)."""

    min_replicas: int
    max_replicas: int
    target_ongoing_requests: float
    upscale_delay_s: float
    downscale_delay_s: float
    look_back_period_s: float
    upscaling_factor: float = 1.0  # Ray's None: no smoothing
    downscaling_factor: float = 1.0

    @classmethod
    def of(cls, d: dict | None, fixed: int | None = None) -> "Autoscaling":
        """From a Serve config's `autoscaling_config` (or a fixed `num_replicas` without one)."""
        from ray.serve.config import AutoscalingConfig

        if d is None:
            n = fixed or 1
            d = {"min_replicas": n, "max_replicas": n}
        ray = AutoscalingConfig(**d)
        return cls(
            min_replicas=ray.min_replicas, max_replicas=ray.max_replicas,
            target_ongoing_requests=float(ray.target_ongoing_requests),
            upscale_delay_s=ray.upscale_delay_s, downscale_delay_s=ray.downscale_delay_s,
            look_back_period_s=ray.look_back_period_s,
            upscaling_factor=ray.upscaling_factor or 1.0, downscaling_factor=ray.downscaling_factor or 1.0,
        )


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
