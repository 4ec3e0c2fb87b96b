"""The client's playback as the server sees it, per turn and per session: when the client will run out
of what it has been sent (each animator call's deadline), which quality rung the session is on, and
how late its fragments have been coming, which sizes the client's jitter buffer and the turn's first
fragment.

A client plays a turn's fragments back to back, starting `hold_s` after the first one arrived (its
jitter buffer; the page computes the same figure from its own arrivals, `ui/player.js`). A fragment
sent after the one before has finished playing is an underrun: the client stalls until it comes.

How late a turn's fragments came (`need`) is how much later than the first one's arrival playback
would have had to start for none of them to stall: over its fragments, arrival minus (the first's
arrival + the seconds of video before it). The next turn's jitter buffer is the largest need of the
session's last few turns, rounded up, capped: a session whose fragments come in time waits for
nothing. A turn's first `segment` also carries the server's figure (`hold_s`), which counts the last
turns of every session on this replica as well, and the page holds the larger of the two: a new
session on a busy replica has no history of its own.

Plain arithmetic on timestamps the caller gives; one `SessionPlayback` per conversation in this
ingress replica's memory (a conversation that moves to another replica starts afresh there).
"""

from __future__ import annotations

import time
from collections import deque

from cachetools import LRUCache

from avatar_core.playback import TURNS_REMEMBERED, hold_s, need
from serve_app.metrics import TurnCounts, count_fragment


class SessionPlayback:
    """One conversation's playback history: the rung of its last fragment, its turns' needs, and
    (`replica`) the needs of the last turns of every conversation on this replica."""

    def __init__(self, replica: deque[float] | None = None) -> None:
        self.rung = 0
        self.needs: deque[float] = deque(maxlen=TURNS_REMEMBERED)
        self.replica = replica if replica is not None else deque(maxlen=TURNS_REMEMBERED)

    @property
    def hold_s(self) -> float:
        """The jitter buffer for its next turn: from its own turns, or this replica's recent ones
        when they were later (a new conversation on a busy replica has no history of its own)."""
        return max(hold_s(list(self.needs)), hold_s(list(self.replica)))

    def add(self, need_s: float) -> None:
        self.needs.append(need_s)
        self.replica.append(need_s)


_sessions: LRUCache[str, SessionPlayback] = LRUCache(maxsize=10_000)
_replica: deque[float] = deque(maxlen=TURNS_REMEMBERED)  # this replica's last turns, every session's


def session(session_id: str) -> SessionPlayback:
    if (found := _sessions.get(session_id)) is None:
        found = _sessions[session_id] = SessionPlayback(_replica)
    return found


class TurnPlayback:
    """One turn's fragments as the client will play them. `deadline()`: when it runs out of what it
    has been sent (None before the first fragment: nothing plays yet); `sent(...)` as each fragment
    leaves; `close()` when the turn ends, which adds the turn's need to the session's."""

    def __init__(self, session: SessionPlayback, counts: TurnCounts, clock=time.time):
        self.session, self.counts, self.clock = session, counts, clock
        self.hold_s = session.hold_s  # the page's jitter buffer, as it will compute it
        self.arrivals: list[float] = []
        self.durations: list[float] = []
        self.end: float | None = None  # when the client will have played everything sent
        self.underruns = 0

    @property
    def rung(self) -> int:
        return self.session.rung

    def first_fragment_s(self, shortest_s: float, longest_s: float) -> float:
        """The turn's first fragment: short (`shortest_s`), since it gates the first frame, unless
        the client will hold it anyway; then as long as the hold (at most `longest_s`), which costs
        only its rendering and puts the turn's first seam that much later."""
        return min(max(shortest_s, self.hold_s), max(shortest_s, longest_s))

    def deadline(self) -> float | None:
        return self.end

    def sent(self, duration_s: float, rung: int) -> None:
        now = self.clock()
        if self.end is None:
            self.end = now + self.hold_s
        elif now > self.end:
            self.underruns += 1
            self.end = now
        self.end += duration_s
        self.arrivals.append(now)
        self.durations.append(duration_s)
        if rung > self.session.rung:
            self.counts.inc("step_down")
        elif rung < self.session.rung:
            self.counts.inc("step_up")
        self.session.rung = rung
        count_fragment(rung)

    def close(self) -> None:
        if len(self.arrivals) > 1:
            self.session.add(need(self.arrivals, self.durations))
