"""Prometheus metrics through Ray Serve's metrics API (exported by each node's Ray metrics agent).

Created lazily in the process that records them (the ingress replica), because Ray metrics need a
connected Ray worker; outside Ray (unit tests, scripts) recording is a no-op. Serve adds the
deployment, replica and application tags itself. Names as Prometheus sees them get a `ray_` prefix,
e.g. `ray_avatar_stage_seconds_bucket{stage="tts"}`.
"""

from __future__ import annotations

import logging

log = logging.getLogger("ray.serve")

# Seconds: stage calls range from milliseconds (LLM first token) to tens of seconds (timeouts).
STAGE_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60]

_metrics: dict | None = None


def _get() -> dict | None:
    global _metrics
    if _metrics is None:
        try:
            import ray
            from ray.serve.metrics import Counter, Histogram

            if not ray.is_initialized():
                return None
            _metrics = {
                "stage": Histogram(
                    "avatar_stage_seconds",
                    description="Seconds per turn stage (asr, llm_first_token, llm, tts, animator, "
                    "first_segment, total)",
                    boundaries=STAGE_BOUNDARIES,
                    tag_keys=("stage",),
                ),
                "errors": Counter(
                    "avatar_errors",
                    description="Errors reported to clients, by code (error events and HTTP 4xx/5xx)",
                    tag_keys=("code",),
                ),
                "rejections": Counter(
                    "avatar_rejections",
                    description="Requests refused at the gate, by reason (overloaded, unauthorized, "
                    "bad_origin)",
                    tag_keys=("reason",),
                ),
                "turns": Counter(
                    "avatar_turns",
                    description="Turn events: " + ", ".join(TURN_EVENTS) + " (TurnCounts says what each means)",
                    tag_keys=("event",),
                ),
                "fragments": Counter(
                    "avatar_fragments",
                    description="Fragments sent, by the animator's quality rung that made them (0: the best)",
                    tag_keys=("rung",),
                ),
            }
        except Exception as exc:  # never let telemetry break a turn
            log.warning("metrics disabled: %s", exc)
            _metrics = {}
    return _metrics or None


def observe_stage(stage: str, seconds: float) -> None:
    if m := _get():
        m["stage"].observe(seconds, tags={"stage": stage})


def count_error(code: str) -> None:
    if m := _get():
        m["errors"].inc(tags={"code": code})


def count_rejection(reason: str) -> None:
    if m := _get():
        m["rejections"].inc(tags={"reason": reason})


def count_fragment(rung: int) -> None:
    if m := _get():
        m["fragments"].inc(tags={"rung": str(rung)})


TURN_EVENTS = (
    "started", "completed", "failed", "no_speech", "cancelled", "barge_in",
    "speculative_started", "speculative_cancelled", "step_down", "step_up",
)


class TurnCounts:
    """This replica's turn counts, the one source of `/api/v1/stats` and `ray_avatar_turns_total`.

    Every turn counts `started` and then one outcome (completed, failed, no_speech, cancelled);
    `barge_in`: turns the user interrupted; `speculative_started`: hands-free turns started at a
    pause the turn model called the end, and `speculative_cancelled`: those of them cancelled because
    the user went on (their audio merged into the next utterance); `step_down` / `step_up`: fragments
    the animator made on a lower / higher quality rung than the session's fragment before
    (`serve_app/playback.py`)."""

    def __init__(self) -> None:
        self.values = dict.fromkeys(TURN_EVENTS, 0)

    def inc(self, event: str) -> None:
        self.values[event] += 1  # a KeyError for a misspelt event, not a silent new key
        if m := _get():
            m["turns"].inc(tags={"event": event})

    def snapshot(self) -> dict[str, int]:
        return dict(self.values)
