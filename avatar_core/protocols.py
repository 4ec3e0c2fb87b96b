"""What a stage backend implements. One class per backend, registered with `registry.register`.

All methods that do work are async, because the GPU engines are (vLLM's engine, Ditto's worker
threads); a CPU backend offloads its blocking calls to threads inside itself, and serialises its one
engine with a lock of its own if it must, never in the deployment. `max_concurrency` is what one
replica can really run at once; the builder gives the deployment that `max_ongoing_requests`, so
Serve's router, not a lock, queues the rest and scales out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar, Protocol

import numpy as np

from avatar_core.types import Message, Speech


class Backend(Protocol):
    max_concurrency: ClassVar[int]

    def __init__(self, cfg: Any) -> None: ...  # loads the model; nothing is downloaded

    @classmethod
    def languages(cls, cfg: Any) -> frozenset[str] | None: ...  # None: any language

    async def probe(self) -> None: ...  # one tiny real inference: warm-up and health check


class AsrBackend(Backend, Protocol):
    async def transcribe(self, pcm_16k: np.ndarray, language: str) -> str: ...


class ChatBackend(Backend, Protocol):
    """Run inside our LLM stage. A backend whose stage is someone else's deployment (Ray's vLLM
    server, `backends/vllm.py`) instead has two classmethods: `deployment(cfg)`, the bound
    deployment, and `chat_client(handle, cfg)`, which gives the ingress a function from messages to
    an async iterator of text deltas with `cancel()`."""

    def chat(self, messages: list[Message], max_tokens: int, temperature: float) -> AsyncIterator[str]: ...


class SpeechBackend(Backend, Protocol):
    clones_voices: ClassVar[bool]  # False: one built-in voice; the session's voice_id is ignored

    def stream(self, text: str, voice_wav: str | None, voice_id: str, language: str) -> AsyncIterator[Speech]:
        """The sentence's audio in chunks as they are made (one chunk if the engine cannot stream).
        `voice_wav` is the stored reference clip of `voice_id` (None for the default voice)."""
        ...


class FaceBackend(Backend, Protocol):
    async def prepare_avatar(self, image_rgb: np.ndarray) -> Any: ...  # raises AvatarError

    def new_state(self) -> Any: ...

    def render(self, avatar: Any, audio_16k: np.ndarray, state: Any) -> AsyncIterator[tuple[np.ndarray, Any]]:
        """Frames (N, H, W, 3) RGB in batches as they are made, each with the state after it;
        ceil(len(audio_16k) / (16000 / fps)) frames in all."""
        ...

    def idle(self, avatar: Any, n_frames: int, state: Any) -> AsyncIterator[tuple[np.ndarray, Any]]:
        """Listening frames: the same life, mouth at rest."""
        ...
