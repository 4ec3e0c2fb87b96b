"""The browser's WebSocket: one connection, one conversation, at most one turn running at a time.

The messages each way are the models in `serve_app/events.py` (reference: docs/protocol.md): text
messages are JSON control messages (settings, mic, ptt, idle, interrupted, cancel, ping); binary
messages are raw PCM while the mic is on, else one whole audio file each. Every `segment` and `idle`
event is followed at once by one binary message with its media bytes.
"""

import asyncio
import json
import logging

import numpy as np
from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from serve_app import events as ev
from serve_app.admission import Overloaded
from serve_app.conversation import Conversation
from serve_app.endpointing import RATE, Endpointer, SpeechStart, UtteranceEnd
from serve_app.errors import error
from serve_app.security import client_of
from serve_app.service import Rejected, TurnService
from serve_app.turn import StageError, call_stage

log = logging.getLogger("ray.serve")


class WsSession:
    """One browser connection: reads client messages, runs at most one turn at a time."""

    def __init__(self, websocket: WebSocket, service: TurnService):
        self.websocket, self.service = websocket, service
        self.cfg = service.cfg
        self.conv: Conversation | None = None  # set by open()
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

    async def send(self, event: ev.Event, data: bytes | None = None) -> None:
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(event.to_json()))
            if data is not None:
                await self.websocket.send_bytes(data)

    async def open(self, session_id: str | None = None) -> None:
        """Continue the stored conversation `session_id` names (a page reconnecting, perhaps to
        another replica after its own was lost), or start a new one; Rejected if the store fails."""
        service = self.service
        resumed = await service.resume(session_id) if session_id else None
        self.conv = conv = resumed or await service.conversation()  # readable at /api/v1/sessions/{id}
        await self.send(ev.SessionOpened(
            session_id=conv.id, avatar_id=conv.avatar_id, voice_id=conv.voice_id, language=conv.language,
            languages=service.languages, voice_cloning=service.voice_cloning, resumed=resumed is not None,
        ))

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
            await self.send(error("upload_too_large", "the audio message is too large"))
            return
        try:
            pcm = await self.service.decode(data)
        except Rejected as exc:
            await self.send(error(exc.code, exc.message))
            return
        await self.cancel_turn("new_turn")
        await self.start_turn(pcm)

    async def pcm(self, data: bytes) -> None:
        if len(data) % 2 or len(data) > RATE * 2:  # at most one second of s16le a message
            await self.send(error("bad_audio_frame", "PCM frames are s16le, at most 1 s each"))
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
                await self.send(ev.SpeechStarted(barge_in=barge_in))
                if barge_in:
                    # Not answered yet: the user was not finished; their next utterance continues
                    # this one, so the turn is redone with both ("merged").
                    merged = not self.turn_spoke
                    if merged:
                        self.carry = self.last_pcm
                        if self.turn_speculative:  # started early, and the user was not done
                            self.service.counts.inc("speculative_cancelled")
                    await self.cancel_turn("barge_in", merged=merged)
            elif isinstance(event, UtteranceEnd):
                await self.utterance(event.pcm, event.speculative)

    async def utterance(self, pcm: np.ndarray, speculative: bool = False) -> None:
        if self.carry is not None:
            pcm, self.carry = np.concatenate([self.carry, pcm]), None
        await self.send(ev.UtteranceEnded(duration_s=round(len(pcm) / RATE, 2), speculative=speculative))
        await self.cancel_turn("new_turn")
        if await self.start_turn(pcm) and speculative:
            self.turn_speculative = True
            self.service.counts.inc("speculative_started")

    async def end_ptt(self) -> None:
        chunks, self.ptt = self.ptt or [], None
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        if len(pcm) < RATE * self.cfg.endpointing.min_speech_s:
            await self.send(error("too_short", "hold the button while you speak"))
            return
        await self.utterance(pcm)

    # ---- control -------------------------------------------------------------------------

    async def control(self, text: str) -> None:
        if len(text.encode()) > self.cfg.limits.max_text_bytes:
            await self.send(error("message_too_large", "text messages are small JSON controls"))
            return
        try:
            msg = ev.parse_client_message(text)
        except ev.BadMessage as exc:
            await self.send(error("bad_message", str(exc)))
            return
        match msg:
            case ev.Cancel():
                await self.cancel_turn("client")
            case ev.Ping():
                await self.send(ev.Pong())
            case ev.Settings():
                await self.settings(msg)
            case ev.Mic(on=on):
                self.streaming = on
                self.endpointer.reset()
                self.ptt, self.carry = None, None
            case ev.PushToTalk() if not self.streaming:
                await self.send(error("mic_off", 'push-to-talk streams PCM: send {"type": "mic", "on": true} first'))
            case ev.PushToTalk(down=True):
                await self.cancel_turn("barge_in")
                self.ptt = []
            case ev.PushToTalk(down=False) if self.ptt is not None:
                await self.end_ptt()
            case ev.IdleRequest(seconds=seconds):
                await self.request_idle(seconds)
            case ev.Interrupted(turn_id=turn_id, heard=heard, cut=cut):
                if turn_id == self.turn_id and heard <= len(self.sent):
                    await self.cancel_turn("barge_in")  # now the turn has recorded what it sent...
                    said = " ".join(self.sent[:heard]) + ("…" if cut and heard else "")
                    self.conv.keep_heard(said)  # ...of which this much was heard
                    try:
                        await self.service.save(self.conv)
                    except Rejected as exc:
                        await self.send(error(exc.code, exc.message))

    async def settings(self, msg: ev.Settings) -> None:
        conv = self.conv
        wanted = {k: getattr(msg, k) or getattr(conv, k) for k in ("avatar_id", "voice_id", "language")}
        try:
            choice = self.service.choice(**wanted)
        except Rejected as exc:
            await self.send(error(exc.code, exc.message))
            return
        self.service.choose(conv, choice)
        try:
            await self.service.save(conv)
        except Rejected as exc:
            await self.send(error(exc.code, exc.message))
            return
        await self.send(ev.SettingsApplied(**wanted))

    # ---- turns ---------------------------------------------------------------------------

    async def start_turn(self, pcm: np.ndarray) -> bool:
        try:  # callers cancel this session's running turn first, which frees its slot
            slot = self.service.gate.admission.acquire("turn", client_of(self.websocket.scope))
        except Overloaded as exc:
            await self.send(error("overloaded", str(exc)))
            return False
        self.last_pcm, self.turn_spoke, self.turn_speculative = pcm, False, False
        self.turn = asyncio.create_task(self.run(pcm))
        self.turn.add_done_callback(lambda _, s=slot: s.release())
        return True

    async def run(self, pcm) -> None:
        turn = self.service.turn(self.conv, pcm)
        self.turn_id, self.sent = turn.turn_id, []
        try:
            async with self.service.running(turn, failed=lambda exc: not self.gone(exc)) as events:
                async for event, data in events:
                    if isinstance(event, ev.Segment):
                        event.bytes = len(data)
                        self.turn_spoke = True
                        if event.sentence == len(self.sent):  # a sentence's first fragment
                            self.sent.append(event.text)
                    await self.send(event, data)
        except Rejected as exc:  # the store failed: the turn may not be remembered
            await self.send(error(exc.code, exc.message))
        except Exception as exc:
            if self.gone(exc):
                return  # the client left mid-turn; the turn's cleanup has cancelled the stages
            log.error("turn=%s failed in the session", turn.turn_id, exc_info=exc)
            await self.send(error("internal_error", "the turn failed on the server"))

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
                self.service.counts.inc("barge_in")
            if notify:
                await self.send(ev.Cancelled(reason=reason, merged=merged))
        self.turn = None

    # ---- listening video -----------------------------------------------------------------

    async def request_idle(self, seconds: float | None) -> None:
        if self.idle and not self.idle.done():
            return  # one at a time: the player asks again when it runs low
        limit = self.cfg.session.idle_segment_s
        seconds = min(seconds, limit) if seconds else limit
        self.idle = asyncio.create_task(self.send_idle(seconds))

    async def send_idle(self, seconds: float) -> None:
        conv, timeout = self.conv, self.cfg.limits.stage_timeout_s
        try:
            async with conv.anim_lock:
                request = self.service.stages.face(conv.id).idle_segment.remote(seconds, conv.anim_state, conv.avatar_id)
                seg = await call_stage("animator", request, timeout)
                conv.anim_state = seg.state
            await self.send(ev.IdleVideo(duration_s=seg.duration_s, mime=seg.mime, bytes=len(seg.data)), seg.data)
        except StageError as exc:
            await self.send(error(exc.code, f"listening video: {exc.message}"))
        except Exception as exc:
            if not self.gone(exc):
                log.error("listening video failed", exc_info=exc)

    async def close(self) -> None:
        await self.cancel_turn(notify=False)
        if self.idle:
            self.idle.cancel()
            await asyncio.gather(self.idle, return_exceptions=True)
