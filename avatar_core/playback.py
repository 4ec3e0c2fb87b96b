"""A client's playback of a reply, as plain arithmetic on arrival times: it starts the turn's speech
`hold` seconds after the first fragment arrived (its jitter buffer), then plays the fragments back to
back; a fragment that arrives after the one before has finished playing is an underrun (the video
stalls until it comes). One spelling for the ingress (`serve_app/playback.py`), the page's mirror
(`ui/player.js`, checked against this by tests/test_playback.py) and the planner (`capacity/`)."""

from __future__ import annotations

from collections.abc import Sequence

MAX_HOLD_S = 1.0  # the longest jitter buffer: beyond it, waiting costs more than a stall
HOLD_STEP_S = 0.05  # the buffer is rounded up to this
TURNS_REMEMBERED = 5
LATE_S = 0.02  # lateness below this is noise (a timer tick, a socket write)


def need(arrivals: Sequence[float], durations: Sequence[float]) -> float:
    """How long after the first fragment's arrival playback must start so that no fragment arrives
    after the one before has finished playing (0 when none would)."""
    worst, played = 0.0, 0.0
    for arrived, duration in zip(arrivals, durations):
        worst = max(worst, arrived - arrivals[0] - played)
        played += duration
    return worst if worst >= LATE_S else 0.0


def hold_s(needs: Sequence[float]) -> float:
    """The jitter buffer for the next turn: the largest recent need, rounded up to HOLD_STEP_S,
    at most MAX_HOLD_S."""
    worst = max(needs[-TURNS_REMEMBERED:], default=0.0)
    steps = -(-round(worst * 1000) // round(HOLD_STEP_S * 1000))  # whole steps, rounded up
    return min(MAX_HOLD_S, steps * HOLD_STEP_S)


def play(arrivals: Sequence[float], durations: Sequence[float], hold: float) -> tuple[float, int, float]:
    """(when speech starts showing, underruns, when it ends) for a reply started `hold` seconds
    after its first fragment arrived."""
    start = arrivals[0] + hold
    end, underruns = start, 0
    for arrived, length in zip(arrivals, durations):
        if arrived > end + 1e-6:
            underruns += 1
            end = arrived
        end += length
    return start, underruns, end


def underruns(arrivals: Sequence[float], durations: Sequence[float], hold: float = 0.0) -> int:
    """Fragments that arrived after the one before had finished playing (`play`'s count; 0 for none)."""
    return play(arrivals, durations, hold)[1] if arrivals else 0
