"""What a stage backend implements: one abstract base per stage, with defaults for the optional parts.

A backend subclasses its stage's base, nests its `Config` model and is registered with
`registry.register`, which checks it against the base. All methods that do work are async, because
the GPU engines are (vLLM's engine, Ditto's worker threads); a CPU backend offloads its blocking
calls to threads inside itself, and serialises its one engine with a lock of its own if it must, never
in the deployment. `max_concurrency` is what one replica can really run at once; the builder gives the
deployment that `max_ongoing_requests`, so Serve's router, not a lock, queues the rest and scales out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avatar_core.types import Message, Speech

if TYPE_CHECKING:
    from avatar_core.registry import BackendConfig


class Backend(ABC):
    Config: ClassVar[type[BackendConfig]]
    stage: ClassVar[str]  # set by `register`
    name: ClassVar[str]
    max_concurrency: ClassVar[int] = 1

    @abstractmethod
    def __init__(self, cfg: Any) -> None:
        """Loads the model; nothing is downloaded."""

    @classmethod
    def concurrency(cls, cfg: Any) -> int:
        """Requests one replica runs at once, where it depends on the config (Ditto's pool)."""
        return cls.max_concurrency

    @classmethod
    def languages(cls, cfg: Any) -> frozenset[str] | None:
        """The languages this backend handles with `cfg`; None: any."""
        return None

    @classmethod
    def deployment(cls, cfg: Any) -> Any | None:
        """A bound Serve application to use instead of our stage deployment (Ray's vLLM server), or
        None: the stage deployment builds this class."""
        return None

    @abstractmethod
    async def probe(self) -> None:
        """One tiny real inference: warm-up and health check."""

    def stats(self) -> dict | None:
        """The backend's own counters for the stage's `stats()` (e.g. XTTS's cached voices)."""
        return None

    def close(self) -> None:
        """Stop threads of its own (Ditto's SDK workers), so the replica's process can exit."""


class AsrBackend(Backend):
    @abstractmethod
    async def transcribe(self, pcm_16k: np.ndarray, language: str, context: str = "") -> str:
        """The words in the speech. `context`: the avatar's reply just before, which a backend that
        can takes as a hint; the others ignore it."""


class ChatBackend(Backend):
    """Run inside our LLM stage, or (a backend whose `deployment` is someone else's, Ray's vLLM
    server) a client for that deployment's protocol through `chat_client`."""

    @classmethod
    def chat_client(cls, handle: Any, cfg: Any) -> Callable[[list[Message]], Any] | None:
        """A function from messages to an async iterator of text deltas with `cancel()`, for a
        backend with its own deployment; None: the ingress calls our LLM stage's `chat`."""
        return None

    @abstractmethod
    def chat(self, messages: list[Message], max_tokens: int, temperature: float) -> AsyncIterator[str]: ...


class SpeechBackend(Backend):
    clones_voices: ClassVar[bool] = False  # False: one built-in voice; the session's voice_id is ignored
    default_voice_name: ClassVar[str] = "built-in"

    @abstractmethod
    def stream(self, text: str, voice_wav: str | None, voice_id: str, language: str) -> AsyncIterator[Speech]:
        """The sentence's audio in chunks as they are made (one chunk if the engine cannot stream).
        `voice_wav` is the stored reference clip of `voice_id` (None for the default voice)."""


class Rung(BaseModel):
    """One step of an animator's quality ladder. The Animator stage applies these fields when it
    encodes; a backend's subclass adds what it renders differently (`FaceBackend.at_rung`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "full"
    hold: int = Field(1, ge=1, le=5, description="each rendered frame is shown this many frames: fps / hold "
                      "frames a second are rendered and encoded")
    crf: int | None = Field(None, ge=0, le=51, description="x264 quality; None: the animator's `crf`")
    preset: str = Field("ultrafast", description="x264 preset (ultrafast is x264's fastest)")


class FaceBackend(Backend):
    # True: one render call per piece of speech, the backend cutting fragments itself (Ditto's stream
    # runs on); False: the stage renders each fragment's frames with its own call.
    renders_whole_pieces: ClassVar[bool] = False

    def ladder(self) -> list[Rung]:
        """The quality ladder, best first, that the Animator steps down when it falls behind the
        client's playback and back up with headroom. One rung: it never steps."""
        return [Rung()]

    async def at_rung(self, avatar: Any, rung: Rung) -> Any:
        """The avatar as this backend renders it at `rung` (its own knobs: output size, ...);
        `render` on the result makes that rung's frames."""
        return avatar

    @abstractmethod
    async def prepare_avatar(self, image_rgb: np.ndarray) -> Any:
        """The avatar ready to animate; raises AvatarError if the image cannot be animated."""

    @abstractmethod
    def new_state(self) -> Any: ...

    @abstractmethod
    def render(self, avatar: Any, audio_16k: np.ndarray, state: Any) -> AsyncIterator[tuple[np.ndarray, Any]]:
        """Frames (N, H, W, 3) RGB in batches as they are made, each with the state after it;
        ceil(len(audio_16k) / (16000 / fps)) frames in all."""

    @abstractmethod
    def idle(self, avatar: Any, n_frames: int, state: Any) -> AsyncIterator[tuple[np.ndarray, Any]]:
        """Listening frames: the same life, mouth at rest."""


STAGE_BASES: dict[str, type[Backend]] = {
    "asr": AsrBackend, "llm": ChatBackend, "tts": SpeechBackend, "animator": FaceBackend,
}
