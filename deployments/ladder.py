"""The Animator's quality ladder: which rung renders the next fragment, so that it reaches the client
before the fragment before it has finished playing.

The ingress knows when the client runs out of what it has been sent (`serve_app/playback.py`) and
passes that deadline with each animator call; each fragment of the call extends it by its own length.
The replica knows what a fragment costs it at each rung: a line (fixed + per second of speech) per
rung measured once when it starts, in CPU seconds, times a load factor, the ratio of the wall time
its recent fragments took to what the lines said (the other stages, other sessions and the
machine's other work all show in it). Before each fragment:

- no deadline (a turn's first fragment, idle video): the session's rung;
- the session's rung would miss the deadline: the best rung below it that makes it, else the last;
- the rung above would take at most `headroom` of the time left: one step up;
- otherwise the session's rung.

Plain arithmetic, no Ray, no clock of its own: `tests/test_playback.py` checks the decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

MARGIN_S = 0.1  # what a finished fragment still needs to reach the client (the ingress, the socket)
HEADROOM = 0.5  # step back up when the better rung would take at most this share of the time left
SMOOTHING = 0.3  # weight of the newest fragment in the load factor


@dataclass(frozen=True)
class Cost:
    """CPU seconds to render and encode a fragment at one rung: fixed + per_s x its seconds of speech
    (on idle cores, the wall time too)."""

    fixed_s: float
    per_s: float

    def of(self, seconds: float) -> float:
        return self.fixed_s + self.per_s * seconds


class Ladder:
    """One replica's ladder: the rungs' costs (best first) and the load factor it has seen."""

    def __init__(self, costs: list[Cost], margin_s: float = MARGIN_S, headroom: float = HEADROOM,
                 smoothing: float = SMOOTHING):
        if not costs:
            raise ValueError("a ladder needs at least one rung")
        # a lower rung never costs more than the one above it (a noisy measurement must not make
        # stepping down look slower)
        self.costs, best = [], costs[0]
        for cost in costs:
            best = Cost(min(best.fixed_s, cost.fixed_s), min(best.per_s, cost.per_s))
            self.costs.append(best)
        self.margin_s, self.headroom, self.smoothing = margin_s, headroom, smoothing
        self.load = 1.0
        self.fragments = [0] * len(costs)

    def __len__(self) -> int:
        return len(self.costs)

    def predict(self, rung: int, seconds: float) -> float:
        """Seconds a fragment of `seconds` of speech takes at `rung` now."""
        return self.costs[rung].of(seconds) * self.load

    def choose(self, rung: int, seconds: float, left_s: float | None) -> int:
        """The rung for the next fragment, `seconds` long, starting from the session's `rung`, with
        `left_s` seconds until its deadline (None: none)."""
        rung = min(max(rung, 0), len(self) - 1)
        if left_s is None:
            return rung
        left_s -= self.margin_s
        if self.predict(rung, seconds) > left_s:
            return next((r for r in range(rung + 1, len(self)) if self.predict(r, seconds) <= left_s), len(self) - 1)
        if rung > 0 and self.predict(rung - 1, seconds) <= self.headroom * left_s:
            return rung - 1
        return rung

    def observe(self, rung: int, seconds: float, took_s: float) -> None:
        """A fragment of `seconds` of speech at `rung` took `took_s`: update the load factor."""
        self.fragments[rung] += 1
        expected = self.costs[rung].of(seconds)
        if expected > 0:
            self.load += self.smoothing * (took_s / expected - self.load)

    def snapshot(self) -> dict:
        return {"load": round(self.load, 3), "margin_s": self.margin_s, "headroom": self.headroom,
                "rungs": [{"fixed_s": round(c.fixed_s, 4), "per_s": round(c.per_s, 4), "fragments": n}
                          for c, n in zip(self.costs, self.fragments)]}
