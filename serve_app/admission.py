"""Admission control at the ingress: refuse at once what the stages could only serve late.

Counting happens in the single ingress replica's event loop (no locks needed). Sessions are open
WebSockets; turns are running turns over either transport. Each kind has a global cap and a cap per
client IP, so one client cannot take every slot.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from avatar_core.config import AdmissionConfig

Kind = Literal["session", "turn"]


class Overloaded(Exception):
    def __init__(self, kind: Kind, scope: str):
        super().__init__(f"too many {kind}s {scope}; try again shortly")
        self.kind, self.scope = kind, scope


@dataclass
class Slot:
    """One admitted session or turn; release it exactly once (idempotent)."""

    admission: "Admission"
    kind: Kind
    client: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.admission._drop(self.kind, self.client)

    def __enter__(self) -> "Slot":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Admission:
    def __init__(self, cfg: AdmissionConfig):
        self.cfg = cfg
        self.total: Counter[str] = Counter()
        self.per_client: dict[Kind, Counter[str]] = {"session": Counter(), "turn": Counter()}

    def acquire(self, kind: Kind, client: str) -> Slot:
        """A slot, or Overloaded if the global or this client's cap is reached."""
        cap, per_client = (
            (self.cfg.max_sessions, self.cfg.max_sessions_per_client)
            if kind == "session"
            else (self.cfg.max_turns, self.cfg.max_turns_per_client)
        )
        if self.total[kind] >= cap:
            raise Overloaded(kind, "on this server")
        if self.per_client[kind][client] >= per_client:
            raise Overloaded(kind, "from this client")
        self.total[kind] += 1
        self.per_client[kind][client] += 1
        return Slot(self, kind, client)

    def _drop(self, kind: Kind, client: str) -> None:
        self.total[kind] -= 1
        self.per_client[kind][client] -= 1
        if self.per_client[kind][client] <= 0:
            del self.per_client[kind][client]

    def snapshot(self) -> dict:
        return {"sessions": self.total["session"], "turns": self.total["turn"], "limits": self.cfg.model_dump()}
