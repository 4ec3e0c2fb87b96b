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
    after the previous one; `state` is the animator's continuity state to pass to the next call."""

    data: bytes
    duration_s: float
    mime: str
    state: Any


class AvatarError(ValueError):
    """The image cannot be animated (no usable frontal face, wrong shape or type); the message says
    why and is safe to show the client."""
