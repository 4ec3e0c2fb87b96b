"""What one conversation carries from turn to turn, and the messages the LLM sees.

The ingress owns the conversation (history, choices, the animator's continuity state; kept in the
session store between turns) and passes what each stage needs with every call, so replicas stay
stateless and a barge-in can keep only the words the user heard. The prompt is built here, not in the LLM stage, so every LLM backend (ours, or Ray's
vLLM server) sees the same system prompt, language instruction and history.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from avatar_core.config import LlmConfig
from avatar_core.types import Message
from serve_app.worked_sums import with_worked_sum


@dataclass
class Conversation:
    id: str
    history: list[Message] = field(default_factory=list)
    anim_state: Any = None  # the animator's continuity state, passed back on every call
    avatar_id: str = "default"
    voice_id: str = "default"
    language: str = "en"
    max_messages: int = 24
    # The turn whose exchange ends the history: only it can be cut back to what the user heard (an
    # interruption that names a turn withdrawn or never remembered must not touch an older reply).
    last_turn: str | None = None
    # Speech and idle (listening) video both advance anim_state; one render at a time keeps the
    # animation clock continuous across them.
    anim_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def record(self) -> dict[str, Any]:
        """What the session store keeps (everything but the lock)."""
        return {"id": self.id, "history": self.history, "anim_state": self.anim_state, "avatar_id": self.avatar_id,
                "voice_id": self.voice_id, "language": self.language, "max_messages": self.max_messages,
                "last_turn": self.last_turn}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Conversation":
        return cls(**record)

    def remember(self, user_text: str, said: str, turn_id: str | None = None) -> None:
        if said:
            self.history += [{"role": "user", "content": user_text}, {"role": "assistant", "content": said}]
            del self.history[: -self.max_messages]
            self.last_turn = turn_id

    def last_reply(self) -> str:
        """The reply the user last heard (what a barge-in left of it): the context ASR hears their next
        words in. Not their own last words: Whisper copies its prompt, so a user who repeats what was
        misheard would be misheard the same way again."""
        return self.history[-1]["content"] if self.history and self.history[-1]["role"] == "assistant" else ""

    def keep_heard(self, turn_id: str, said: str) -> bool:
        """The user interrupted turn `turn_id`'s playback: its reply becomes what they heard of it
        (nothing: the exchange goes). A no-op unless that turn's exchange ends the history; says
        whether the history changed."""
        if turn_id != self.last_turn or len(self.history) < 2 or self.history[-1]["role"] != "assistant":
            return False
        if said:
            self.history[-1] = {"role": "assistant", "content": said}
        else:
            del self.history[-2:]
            self.last_turn = None
        return True

    def messages(self, cfg: LlmConfig, user_text: str) -> list[Message]:
        """System prompt with the session's language, the last `history_turns` exchanges, the new
        user message (with a calculator's line where it asks a sum; the history keeps the words)."""
        kept = self.history[-2 * cfg.history_turns :] if cfg.history_turns else []
        if cfg.worked_sums and self.language == "en":
            user_text = with_worked_sum(user_text, [m["content"] for m in kept if m["role"] == "user"])
        system = cfg.system_message(self.language)
        return [{"role": "system", "content": system}, *kept, {"role": "user", "content": user_text}]
