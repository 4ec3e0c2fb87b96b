"""The browser's WebSocket: one connection, one conversation, at most one turn running at a time.

Client -> server
  text {"type": "settings", "avatar_id"?, "voice_id"?, "language"?}  validated, answered "settings"
  text {"type": "mic", "on": true|false}  on: binary messages are raw PCM (s16le, 16 kHz, mono) that
       the server endpoints with Silero VAD (hands-free); off: a binary message is one whole audio file
  text {"type": "ptt", "down": true|false}  push-to-talk over the PCM stream: down interrupts the
       avatar and starts an utterance, up ends it (no VAD needed)
  text {"type": "idle", "seconds": s}  the player runs low: send s seconds of listening video
  text {"type": "interrupted", "turn_id", "heard": n, "cut": bool}  playback stopped after n sentences
       had started (fully or partly heard), the last one cut short if "cut": the history keeps only
       those sentences (and "…")
  text {"type": "cancel"} | {"type": "ping"}
Server -> client
  JSON events: session, settings, speech_start {barge_in}, utterance_end {duration_s, speculative:
  the turn model called it complete after a short pause}, cancelled {reason, merged:
  the next utterance continues this one and its transcript repeats it}, the
  turn's events (turn, transcript, reply, segment, done, error), pong; every "segment" and "idle"
  event is followed at once by one binary message with its media bytes.
"""

import asyncio
import json
import logging
import secrets
from contextlib import aclosing
from typing import TYPE_CHECKING

import numpy as np
from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from avatar_core.media import MediaError, decode_audio
from serve_app import metrics
from serve_app.admission import Overloaded
from serve_app.endpointing import RATE, Endpointer, SpeechStart, UtteranceEnd
from serve_app.security import client_of
from serve_app.conversation import Conversation
from serve_app.turn import StageError, Turn, call_stage, error_event

if TYPE_CHECKING:
    from serve_app.ingress import Ingress

log = logging.getLogger("ray.serve")


def new_id() -> str:
    return secrets.token_urlsafe(12)


class WsSession:
    """One browser connection: reads client messages, runs at most one turn at a time."""

    def __init__(self, websocket: WebSocket, conv: Conversation, ingress: "Ingress"):
        self.websocket, self.conv, self.ingress = websocket, conv, ingress
        self.cfg = ingress.cfg
        self.turn: asyncio.Task | None = None
        self.turn_spoke = False  # the running turn has sent speech
        self.turn_speculative = False  # it started at a pause the turn model called the end
        self.last_pcm: np.ndarray | None = None  # the running turn's utterance
        self.carry: np.ndarray | None = None  # speech of a turn interrupted before it spoke
        self.turn_id = ""  # the latest turn and the sentences it sent, in order
        self.sent: list[str] = []
        self.idle: asyncio.Task | None = None
        self.streaming = False
        self.ptt: list[np.ndarray] | None = None  # push-to-talk audio while the key is down
        self.endpointer = Endpointer(self.cfg.endpointing)
        self._send_lock = asyncio.Lock()  # a segment's JSON and its bytes go out back to back

    async def send(self, event: dict, data: bytes | None = None) -> None:
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(event))
            if data is not None:
                await self.websocket.send_bytes(data)

    async def serve(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                if self.streaming:
                    await self.pcm(message["bytes"])
                else:
                    await self.audio_file(message["bytes"])
            else:
                await self.control(message.get("text") or "")

    # ---- audio in ------------------------------------------------------------------------

    async def audio_file(self, data: bytes) -> None:
        limits = self.cfg.limits
        if len(data) > limits.max_upload_bytes:
            await self.send(error_event("upload_too_large", "the audio message is too large"))
            return
        try:
            pcm = await asyncio.to_thread(decode_audio, data, limits.max_audio_s)
        except MediaError as exc:
            await self.send(error_event(exc.code, exc.message))
            return
        await self.cancel_turn("new_turn")
        await self.start_turn(pcm)

    async def pcm(self, data: bytes) -> None:
        if len(data) % 2 or len(data) > RATE * 2:  # at most one second of s16le a message
            await self.send(error_event("bad_audio_frame", "PCM frames are s16le, at most 1 s each"))
            return
        chunk = np.frombuffer(data, "<i2")
        if self.ptt is not None:
            self.ptt.append(chunk.astype(np.float32) / 32768.0)
            if sum(map(len, self.ptt)) > self.cfg.limits.max_audio_s * RATE:
                await self.end_ptt()
            return
        # In a thread: at a pause the turn model takes tens of ms, which would stall every session.
        for event in await asyncio.to_thread(self.endpointer.push, chunk):
            if isinstance(event, SpeechStart):
                barge_in = self.turn is not None and not self.turn.done()
                await self.send({"type": "speech_start", "barge_in": barge_in})
                if barge_in:
                    # Not answered yet: the user was not finished; their next utterance continues
                    # this one, so the turn is redone with both ("merged").
                    merged = not self.turn_spoke
                    if merged:
                        self.carry = self.last_pcm
                        if self.turn_speculative:  # started early, and the user was not done
                            self.ingress.turn_counts["speculative_cancelled"] += 1
                            metrics.count_speculative("cancelled")
                    await self.cancel_turn("barge_in", merged=merged)
            elif isinstance(event, UtteranceEnd):
                await self.utterance(event.pcm, event.speculative)

    async def utterance(self, pcm: np.ndarray, speculative: bool = False) -> None:
        if self.carry is not None:
            pcm, self.carry = np.concatenate([self.carry, pcm]), None
        event = {"type": "utterance_end", "duration_s": round(len(pcm) / RATE, 2), "speculative": speculative}
        await self.send(event)
        await self.cancel_turn("new_turn")
        if await self.start_turn(pcm) and speculative:
            self.turn_speculative = True
            self.ingress.turn_counts["speculative_started"] += 1
            metrics.count_speculative("started")

    async def end_ptt(self) -> None:
        chunks, self.ptt = self.ptt or [], None
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        if len(pcm) < RATE * self.cfg.endpointing.min_speech_s:
            await self.send(error_event("too_short", "hold the button while you speak"))
            return
        await self.utterance(pcm)

    # ---- control -------------------------------------------------------------------------

    async def control(self, text: str) -> None:
        if len(text.encode()) > self.ingress.cfg.limits.max_text_bytes:
            await self.send(error_event("message_too_large", "text messages are small JSON controls"))
            return
        try:
            msg = json.loads(text)
            kind = msg.get("type") if isinstance(msg, dict) else None
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; deep nesting recurses
            msg, kind = {}, None
        if kind == "cancel":
            await self.cancel_turn("client")
        elif kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "settings":
            await self.settings(msg)
        elif kind == "mic":
            self.streaming = bool(msg.get("on"))
            self.endpointer.reset()
            self.ptt, self.carry = None, None
        elif kind == "ptt" and not self.streaming:
            await self.send(error_event("mic_off", 'push-to-talk streams PCM: send {"type": "mic", "on": true} first'))
        elif kind == "ptt":
            if msg.get("down"):
                await self.cancel_turn("barge_in")
                self.ptt = []
            elif self.ptt is not None:
                await self.end_ptt()
        elif kind == "idle":
            await self.request_idle(msg.get("seconds"))
        elif kind == "interrupted":
            heard = msg.get("heard")
            cut = msg.get("cut") is True
            if msg.get("turn_id") == self.turn_id and isinstance(heard, int) and 0 <= heard <= len(self.sent):
                await self.cancel_turn("barge_in")  # now the turn has recorded what it sent...
                said = " ".join(self.sent[:heard]) + ("…" if cut and heard else "")
                self.conv.keep_heard(said)  # ...of which this much was heard
        else:
            await self.send(
                error_event(
                    "bad_message",
                    'expected JSON with "type": settings | mic | ptt | idle | cancel | ping',
                )
            )

    async def settings(self, msg: dict) -> None:
        conv = self.conv
        wanted = {k: msg.get(k, getattr(conv, k)) for k in ("avatar_id", "voice_id", "language")}
        problem = self.ingress.check_choice(**wanted)
        if problem:
            await self.send(error_event(*problem))
            return
        conv.avatar_id, conv.voice_id, conv.language = wanted["avatar_id"], wanted["voice_id"], wanted["language"]
        await self.send({"type": "settings", **wanted})

    # ---- turns ---------------------------------------------------------------------------

    async def start_turn(self, pcm: np.ndarray) -> bool:
        try:  # callers cancel this session's running turn first, which frees its slot
            slot = self.ingress.gate.admission.acquire("turn", client_of(self.websocket.scope))
        except Overloaded as exc:
            await self.send(error_event("overloaded", str(exc)))
            return False
        self.last_pcm, self.turn_spoke, self.turn_speculative = pcm, False, False
        self.turn = asyncio.create_task(self.run(pcm))
        self.turn.add_done_callback(lambda _, s=slot: s.release())
        return True

    async def run(self, pcm) -> None:
        turn_id = self.turn_id = new_id()
        self.sent = []
        turn = Turn(self.ingress.stages, self.cfg, self.conv, pcm, turn_id, self.ingress.turn_counts)
        try:
            async with aclosing(turn.run()) as events:  # closed at once: the turn's cleanup runs now
                try:
                    async for event in events:
                        data = event.pop("data", None)
                        if data is not None:
                            event["bytes"] = len(data)
                            self.turn_spoke = True
                            if event["sentence"] == len(self.sent):  # a sentence's first fragment
                                self.sent.append(event["text"])
                        await self.send(event, data)
                except Exception as exc:
                    if not self.gone(exc):
                        turn.outcome = "failed"  # counted as such when the turn closes
                    raise
        except Exception as exc:
            if self.gone(exc):
                return  # the client left mid-turn; the turn's cleanup has cancelled the stages
            log.error("turn=%s failed in the session", turn_id, exc_info=exc)
            await self.send(error_event("internal_error", "the turn failed on the server"))

    def gone(self, exc: Exception) -> bool:
        """The client has disconnected (sending then raises, depending on the server's stack)."""
        return isinstance(exc, WebSocketDisconnect) or WebSocketState.DISCONNECTED in (
            self.websocket.client_state, self.websocket.application_state
        )

    async def cancel_turn(self, reason: str = "client", notify: bool = True, merged: bool = False) -> None:
        if self.turn and not self.turn.done():
            self.turn.cancel()
            await asyncio.gather(self.turn, return_exceptions=True)
            if reason == "barge_in":
                self.ingress.turn_counts["barge_in"] += 1
            if notify:
                await self.send({"type": "cancelled", "reason": reason, "merged": merged})
        self.turn = None

    # ---- listening video -----------------------------------------------------------------

    async def request_idle(self, seconds) -> None:
        if self.idle and not self.idle.done():
            return  # one at a time: the player asks again when it runs low
        limit = self.cfg.session.idle_segment_s
        seconds = min(float(seconds), limit) if isinstance(seconds, (int, float)) and seconds > 0 else limit
        self.idle = asyncio.create_task(self.send_idle(seconds))

    async def send_idle(self, seconds: float) -> None:
        conv, timeout = self.conv, self.cfg.limits.stage_timeout_s
        try:
            async with conv.anim_lock:
                request = self.ingress.stages.face(conv.id).idle_segment.remote(seconds, conv.anim_state, conv.avatar_id)
                seg = await call_stage("animator", request, timeout)
                conv.anim_state = seg.state
            event = {"type": "idle", "duration_s": seg.duration_s, "mime": seg.mime, "bytes": len(seg.data)}
            await self.send(event, seg.data)
        except StageError as exc:
            await self.send(error_event(exc.code, f"listening video: {exc.message}"))
        except Exception as exc:
            if not self.gone(exc):
                log.error("listening video failed", exc_info=exc)

    async def close(self) -> None:
        await self.cancel_turn(notify=False)
        if self.idle:
            self.idle.cancel()
            await asyncio.gather(self.idle, return_exceptions=True)
