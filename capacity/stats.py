"""The one quantile used by the planner and the benchmarks, so that a p95 means the same thing in
run.py's JSON, the soak's table and the simulation it is compared with."""

from __future__ import annotations

import math
from collections.abc import Iterable


def quantile(xs: Iterable[float], q: float) -> float:
    """The q-quantile (q in [0, 1]) by linear interpolation between the closest ranks: numpy's
    default method, and `statistics.quantiles(..., method="inclusive")`. The value itself for one
    sample; NaN for none (a run that measured nothing prints NaN rather than failing)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q is a fraction in [0, 1], not {q}")
    s = sorted(xs)
    if not s:
        return math.nan
    i = (len(s) - 1) * q
    lo, hi = math.floor(i), math.ceil(i)
    return s[lo] + (s[hi] - s[lo]) * (i - lo)
