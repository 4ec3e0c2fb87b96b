"""Life that does not depend on the audio: blinks, gaze shifts, head sway and breathing.

Everything is a pure function of the session frame clock and the seed, so a replica that is handed
the clock renders exactly what any other replica would, and consecutive segments join seamlessly.
Random event times (blinks, saccades) come from one seeded sequence per stream, generated once.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_EVENTS = 20_000  # per stream: > 11 hours of saccades, 22 of blinks; then the schedule repeats


@lru_cache(maxsize=16)
def _schedule(seed: int, stream: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Event start times (s), per-event random values (n, 4) and the schedule's period."""
    rng = np.random.default_rng([seed, stream])
    if stream == 0:  # blinks: 2-6 s apart
        gaps = rng.uniform(2.0, 6.0, _EVENTS)
    else:  # gaze: saccades 0.6-3.5 s apart
        gaps = rng.uniform(0.6, 3.5, _EVENTS)
    starts = np.cumsum(gaps)
    return starts, rng.random((_EVENTS, 4)), float(starts[-1] + gaps[0])


def _last_event(seed: int, stream: int, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each time: index of the latest event at or before it (-1: none yet), the time since, all values."""
    starts, vals, period = _schedule(seed, stream)
    tt = np.mod(t, period)
    i = np.searchsorted(starts, tt, side="right") - 1
    since = tt - np.where(i >= 0, starts[np.maximum(i, 0)], 0.0)
    return i, since, vals


def blink(t: np.ndarray, seed: int) -> np.ndarray:
    """Lid closure 0..1: ~150-250 ms blinks, fast down (40 %), slower up, every 2-6 s."""
    i, since, vals = _last_event(seed, 0, t)
    dur = 0.15 + 0.10 * vals[np.maximum(i, 0), 0]
    x = since / dur
    close = np.where(x < 0.4, np.sin(0.5 * np.pi * x / 0.4), np.cos(0.5 * np.pi * (x - 0.4) / 0.6))
    return np.where((i >= 0) & (x < 1.0), np.clip(close, 0.0, 1.0), 0.0)


def gaze(t: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Iris offset in eye units (-1..1): holds a target, then a ~60 ms saccade to the next one."""
    i, since, vals = _last_event(seed, 1, t)

    def target(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = vals[np.maximum(k, 0)]
        away = (k >= 0) & (k % 3 != 0)  # every third saccade comes back to the listener
        return np.where(away, (v[:, 1] * 2 - 1) * 0.8, 0.0), np.where(away, (v[:, 2] * 2 - 1) * 0.35, 0.0)

    cx, cy = target(i)
    px, py = target(i - 1)
    a = np.clip(since / 0.06, 0.0, 1.0)
    a = a * a * (3 - 2 * a)
    return px + (cx - px) * a, py + (cy - py) * a


def head(t: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head sway: tx, ty in motion units (~px on an 80 px wide face) and roll in radians.

    Sums of slow sines with seeded, incommensurate frequencies: smooth, never repeating soon,
    |tx| < 1.4, |ty| < 0.8 (plus 0.6 of breathing), |roll| < 1 degree.
    """
    rng = np.random.default_rng([seed, 2])
    out = []
    for amp in (1.4, 0.8, np.deg2rad(1.0)):
        f = rng.uniform(0.05, 0.32, 3)
        ph = rng.uniform(0, 2 * np.pi, 3)
        w = np.array([0.5, 0.3, 0.2])
        out.append(amp * (w[:, None] * np.sin(2 * np.pi * f[:, None] * t[None, :] + ph[:, None])).sum(0))
    tx, ty, roll = out
    return tx, ty + breathing(t, seed), roll


def breathing(t: np.ndarray, seed: int) -> np.ndarray:
    """Vertical bob of ~0.6 motion units at a resting 14-16 breaths a minute."""
    rng = np.random.default_rng([seed, 3])
    f = rng.uniform(0.23, 0.27)
    return 0.6 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
