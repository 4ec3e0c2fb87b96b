"""Per-replica request counters: how much work a stage started, finished, and had cancelled, and the
choices (language, voice) its latest request carried.

Cancellation is only real if the stage stops working, so tests and operators read it here, on the
stage itself, rather than trusting the caller's side of the story. Every change is also posted to a
small named actor (`StageBoard`), because a replica whose `max_ongoing_requests` is 1 (llama.cpp)
cannot answer a `stats()` request while it works, which is exactly when the counters matter.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager

import ray

BOARD = "avatar-stage-board"


@ray.remote(num_cpus=0, max_restarts=-1)
class StageBoard:
    """The latest counters of every stage replica, keyed by the replica's actor name."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}

    def put(self, key: str, row: dict) -> None:
        self.rows[key] = row

    def rows_of(self, app: str, deployment: str) -> dict[str, dict]:
        prefix = f"SERVE_REPLICA::{app}#{deployment}#"
        return {k: v for k, v in self.rows.items() if k.startswith(prefix)}


def board():
    """The board, created by the first replica that counts, on the head node: a detached actor on a
    GPU worker would keep that node busy for good, and the cluster autoscaler would never give it
    back (tests/test_cluster_autoscaling.py)."""
    return StageBoard.options(
        name=BOARD, namespace="avatar", get_if_exists=True, lifetime="detached",
        resources={"node:__internal_head__": 0.001},
    ).remote()


class RequestCounters:
    def __init__(self, key: str | None = None) -> None:
        self.counts = {"started": 0, "completed": 0, "cancelled": 0, "failed": 0, "in_flight": 0}
        self.last: dict = {}  # what the latest request asked for (language, voice_id, ...)
        self.last_ok = time.monotonic()  # of the last completed request; read by check_health
        self.key = key
        self.board = board() if key else None
        self._post()

    @contextmanager
    def track(self, **choices):
        self.counts["started"] += 1
        self.counts["in_flight"] += 1
        if choices:
            self.last = {**choices, "at": time.time()}
        self._post()
        try:
            yield
        except (asyncio.CancelledError, GeneratorExit):
            self.counts["cancelled"] += 1
            raise
        except Exception:
            self.counts["failed"] += 1
            raise
        else:
            self.counts["completed"] += 1
            self.last_ok = time.monotonic()
        finally:
            self.counts["in_flight"] -= 1
            self._post()

    def snapshot(self) -> dict:
        return {**self.counts, "last": dict(self.last)}

    def _post(self) -> None:
        if self.board is not None:
            self.board.put.remote(self.key, self.snapshot())  # fire and forget, in order


def read_board(app: str, deployment: str) -> dict:
    """A deployment's counters (from the driver or any replica): requests summed over every replica
    that has posted, gone ones too, so that a replica Serve scales down keeps its requests counted;
    work in flight, the replicas and the choices of the latest request from the live ones only (a
    replica killed mid-request left its last row behind, in flight forever)."""
    rows = ray.get(board().rows_of.remote(app, deployment))
    total = {"started": 0, "completed": 0, "cancelled": 0, "failed": 0, "in_flight": 0, "last": {}}
    live = 0
    for key, row in rows.items():
        for name in ("started", "completed", "cancelled", "failed"):
            total[name] += row[name]
        try:
            ray.get_actor(key, namespace="serve")
        except ValueError:
            continue
        live += 1
        total["in_flight"] += row["in_flight"]
        if row["last"].get("at", 0) > total["last"].get("at", 0):
            total["last"] = row["last"]
    total["replicas"] = live
    return total
