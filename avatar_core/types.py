"""Values that cross between the ingress and the stages (and between stages' backends)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}


@dataclass(frozen=True)
class Speech:
    """Mono float32 PCM in [-1, 1]: a whole sentence, or one chunk of it from a streaming TTS."""

    pcm: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return self.pcm.size / self.sample_rate


@dataclass(frozen=True)
class Fragment:
    """A self-contained fragmented MP4 (H.264 + AAC, equal lengths) that a MediaSource can append
    after the previous one; `state` is the animator's continuity state to pass to the next call;
    `rung`: the step of the animator's quality ladder that made it (0: the best)."""

    data: bytes
    duration_s: float
    mime: str
    state: Any
    rung: int = 0


class ClientError(ValueError):
    """What a client sent cannot be used (an undecodable upload, a voice clip that cannot be cloned).
    `code` and `message` are safe to show the client: raised in a stage, they reach it in the turn's
    `error` event (`serve_app/turn.py`) rather than a generic "stage failed"."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self):  # keep code and message when Ray pickles the exception across processes
        return (type(self), (self.code, self.message))


class AvatarError(ValueError):
    """The image cannot be animated (no usable frontal face, wrong shape or type); the message says
    why and is safe to show the client."""
