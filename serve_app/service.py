"""The turn service: what every transport shares. It owns the conversations (in the session store),
the choices a session may make (avatar, voice, language), the segments kept for HTTP clients, the turn
counts, and runs turns.

The HTTP routes, the WebSocket session and the Ingress handle each validate through it, run turns
through it and only serialise what it yields, so a rule (a session id's shape, an unknown voice's
error) lives in one place.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass

import numpy as np

from avatar_core.config import AppConfig
from avatar_core.media import MediaError, decode_audio
from serve_app import security
from serve_app.conversation import Conversation
from serve_app.events import Segment, TurnEvent
from serve_app.library import Library
from serve_app.metrics import TurnCounts
from serve_app.store import Store, StoreUnavailable, open_store
from serve_app.turn import Stages, Turn

log = logging.getLogger("ray.serve")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def new_id() -> str:
    return secrets.token_urlsafe(12)


def valid_id(value: object) -> bool:
    """Ids that clients send (sessions, segments) are short tokens, never paths."""
    return isinstance(value, str) and bool(_ID.match(value))


def check_session_id(value: object) -> None:
    if not valid_id(value):
        raise Rejected(400, "bad_session_id", "session_id must be 1-64 letters, digits, _ or -")


class Rejected(Exception):
    """A request the service will not run: `code` and `message` for the client, `status` for HTTP."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Choice:
    avatar_id: str = "default"
    voice_id: str = "default"
    language: str = "en"


STORE_DOWN = "the session store is unreachable; try again shortly"


class TurnService:
    def __init__(self, stages: Stages, cfg: AppConfig, store: Store | None = None):
        self.stages, self.cfg = stages, cfg
        self.store = store or open_store(cfg)
        self.languages = cfg.languages()
        tts = cfg.backend("tts")
        self.voice_cloning, self.default_voice_name = tts.clones_voices, tts.default_voice_name
        self.gate = security.configure(cfg)
        self.counts = TurnCounts()
        self.avatars = Library(cfg.storage.dir, "avatars", ".png")
        self.voices = Library(cfg.storage.dir, "voices", ".wav")

    async def warm(self) -> None:
        """One small request through each of our stages' handles, when the replica starts: a handle's
        first request waits while Serve's router learns the stage's replicas, and without this a
        replica's first turn pays that on its TTS and animator calls."""
        stages = self.stages
        handles = [stages.asr, stages.tts, stages.animator] + ([stages.llm] if stages.llm_client is None else [])
        results = await asyncio.gather(*(h.stats.remote() for h in handles), return_exceptions=True)
        for handle, result in zip(handles, results):
            if isinstance(result, Exception):
                log.warning("warming the route to %s failed: %r", handle.deployment_name, result)

    # ---- validation ----------------------------------------------------------------------------

    def choice(self, avatar_id: object = None, voice_id: object = None, language: object = None) -> Choice:
        """The session's avatar, voice and language (None: the default), or Rejected naming what
        cannot be used."""
        avatar_id = "default" if avatar_id is None else avatar_id
        voice_id = "default" if voice_id is None else voice_id
        language = self.languages[0] if language is None else language
        if not isinstance(avatar_id, str) or (avatar_id != "default" and not self.avatars.path(avatar_id)):
            raise Rejected(404, "unknown_avatar", f"no avatar with id {avatar_id!r}; see GET /api/v1/avatars")
        if not isinstance(voice_id, str) or (voice_id != "default" and not self.voices.path(voice_id)):
            raise Rejected(404, "unknown_voice", f"no voice with id {voice_id!r}; see GET /api/v1/voices")
        if language not in self.languages:
            raise Rejected(422, "unsupported_language", (
                f"language {language!r} is not supported; the configured backends support: "
                + ", ".join(self.languages)
            ))
        return Choice(avatar_id, voice_id, language)

    async def decode(self, audio: object) -> np.ndarray:
        """16 kHz mono float32 PCM from an audio file's bytes or from PCM, checked like a file."""
        limit = self.cfg.limits.max_audio_s
        if isinstance(audio, np.ndarray):
            pcm = np.asarray(audio, np.float32).reshape(-1)
            if not 0 < pcm.size <= limit * 16_000 or not np.isfinite(pcm).all():
                raise Rejected(400, "bad_pcm", f"PCM must be 16 kHz mono float32, finite, 0-{limit:g} s long")
            return pcm
        if not isinstance(audio, (bytes, bytearray, memoryview)):
            raise Rejected(400, "bad_audio_type", "audio is an audio file's bytes or a numpy array of PCM")
        try:
            return await asyncio.to_thread(decode_audio, bytes(audio), limit)
        except MediaError as exc:
            raise Rejected(413 if exc.code == "audio_too_long" else 400, exc.code, exc.message) from None

    async def prepare(
        self, audio: object, session_id: object = None, avatar_id: object = None, voice_id: object = None,
        language: object = None,
    ) -> tuple[Conversation, np.ndarray]:
        """A one-shot turn's conversation (choices applied) and its audio, checked in the order of
        cost; Rejected names the first problem, and then nothing has changed."""
        choice = self.choice(avatar_id, voice_id, language)
        if session_id is not None:
            check_session_id(session_id)
        pcm = await self.decode(audio)
        return await self.conversation(session_id, choice), pcm

    # ---- conversations ---------------------------------------------------------------------------

    async def conversation(self, session_id: object = None, choice: Choice | None = None) -> Conversation:
        """The conversation `session_id` names (a new one if it is unknown or None), with `choice`
        applied, saved, so GET /api/v1/sessions/{id} shows it on any replica."""
        conv = await self.resume(session_id) if session_id is not None else None
        conv = conv or Conversation(id=session_id or new_id(), language=self.languages[0])
        if choice is not None:
            self.choose(conv, choice)
        await self.save(conv)
        return conv

    async def resume(self, session_id: object) -> Conversation | None:
        """The stored conversation, or None if the id is unknown (or expired)."""
        check_session_id(session_id)
        try:
            return await self.store.load(session_id)
        except StoreUnavailable as exc:
            log.warning("store: %s", exc)
            raise Rejected(503, "store_unavailable", STORE_DOWN) from exc

    async def save(self, conv: Conversation) -> None:
        try:
            await self.store.save(conv)
        except StoreUnavailable as exc:
            log.warning("store: %s", exc)
            raise Rejected(503, "store_unavailable", STORE_DOWN) from exc

    @staticmethod
    def choose(conv: Conversation, choice: Choice) -> None:
        conv.avatar_id, conv.voice_id, conv.language = choice.avatar_id, choice.voice_id, choice.language

    # ---- turns -----------------------------------------------------------------------------------

    def turn(self, conv: Conversation, pcm: np.ndarray, heard: asyncio.Task | None = None) -> Turn:
        return Turn(self.stages, self.cfg, conv, pcm, new_id(), self.counts, heard)

    @asynccontextmanager
    async def running(
        self, turn: Turn, failed: Callable[[Exception], bool] = lambda exc: True
    ) -> AsyncIterator[AsyncIterator[tuple[TurnEvent, bytes | None]]]:
        """The turn's events and bytes, for a transport to send. Leaving the block early (a client
        gone, a barge-in) cancels the stages at once; an exception for which `failed` holds counts
        the turn as failed rather than cancelled. However the turn ends, its conversation is saved
        after it; a save that fails after a turn that did not raises Rejected (store_unavailable)."""
        ended = False
        try:
            async with aclosing(turn.run()) as events:
                try:
                    yield events
                except Exception as exc:
                    if failed(exc):
                        turn.outcome = "failed"  # counted as such when the turn closes
                    raise
            ended = True
            await self.save(turn.conv)
        finally:
            if not ended:  # cancelled or failed: still keep what the user heard, quietly
                try:
                    await self.store.save(turn.conv)
                except StoreUnavailable as exc:
                    log.warning("store: %s; turn=%s not remembered", exc, turn.turn_id)

    # ---- segments for HTTP clients ------------------------------------------------------------

    async def keep_segment(self, turn: Turn, event: Segment, data: bytes) -> str:
        """Keep a segment's bytes for GET /api/v1/segments/{id} (any replica); its URL."""
        key = f"{turn.turn_id}-{event.index}"
        try:
            await self.store.put_segment(key, data, event.mime)
        except StoreUnavailable as exc:
            log.warning("store: %s", exc)
            raise Rejected(503, "store_unavailable", STORE_DOWN) from exc
        return f"/api/v1/segments/{key}"

    async def segment(self, segment_id: str) -> tuple[bytes, str] | None:
        if not valid_id(segment_id):
            return None
        try:
            return await self.store.get_segment(segment_id)
        except StoreUnavailable as exc:
            raise Rejected(503, "store_unavailable", STORE_DOWN) from exc
