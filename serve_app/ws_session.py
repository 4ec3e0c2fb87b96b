"""The browser's WebSocket: one connection, one conversation, at most one turn running at a time.

The messages each way are the models in `serve_app/events.py` (reference: docs/protocol.md): text
messages are JSON control messages (settings, mic, ptt, idle, interrupted, cancel, ping); binary
messages are raw PCM while the mic is on, else one whole audio file each. Every `segment` and `idle`
event is followed at once by one binary message with its media bytes.

Hands-free, the endpointer (`serve_app/endpointing.py`) hears the microphone and the turn-taking
state machine (`serve_app/turn_taking.py`) decides; this class carries out its actions: ASR of the
speech so far at a pause, ending the utterance, starting a turn (with that transcript when it is
of exactly this speech), cancelling one, merged or not.

While the words of a pause are awaited, the PCM that arrives meanwhile waits too; when they come,
the audio of the time ASR took is heard first, then the words, then the rest. The decision so
depends on the audio alone and on how long ASR took, not on how fast the client sends: a page
streaming in real time and a test sending a clip at once see the same turns. Meanwhile a copy of the
endpointer hears the held PCM ahead (`foresee`), so Smart Turn's verdict on the pause in it is ready
when the real endpointer gets there.
"""

import asyncio
import json
import logging
import time

import numpy as np
from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from serve_app import events as ev
from serve_app import turn_taking as tt
from serve_app.admission import Overloaded
from serve_app.conversation import Conversation
from serve_app.endpointing import RATE, Hush, Pause, Resume, SpeechStart, UtteranceEnd
from serve_app.errors import error
from serve_app.security import client_of
from serve_app.service import Rejected, TurnService
from serve_app.turn import StageError, Turn, call_stage
from serve_app.vad import BatchedEndpointer, may_ask_turn_model

log = logging.getLogger("ray.serve")


class WsSession:
    """One browser connection: reads client messages, runs at most one turn at a time."""

    def __init__(self, websocket: WebSocket, service: TurnService):
        self.websocket, self.service = websocket, service
        self.cfg = service.cfg
        self.conv: Conversation | None = None  # set by open()
        self.turn: asyncio.Task | None = None
        self.turn_id = ""  # the latest turn and the sentences it sent, in order
        self.sent: list[str] = []
        self.idle: asyncio.Task | None = None
        self.streaming = False
        self.ptt: list[np.ndarray] | None = None  # push-to-talk audio while the key is down
        self.endpointer = BatchedEndpointer(self.cfg.endpointing, decide=False)  # serve_app/vad.py
        self.taking = tt.TurnTaking(self.cfg.endpointing)
        self.heard: dict[int, asyncio.Task] = {}  # transcripts of the speech up to a pause, by key
        self.held: list[np.ndarray] | None = None  # PCM that arrived while a pause's words were awaited
        self.foreseeing: asyncio.Task | None = None  # Smart Turn on the held PCM's pause, ahead of time
        self.waiters: set[asyncio.Task] = set()
        self._ear = asyncio.Lock()  # the endpointer and the state machine: one event at a time
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
        async with self._ear:
            await self.act(self.taking.utterance(pcm, merge=False))

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
        async with self._ear:
            if self.held is not None:
                self.held.append(chunk)
                self.foresee()
            else:
                await self.hear([chunk])

    def foresee(self) -> None:
        """While a hush's words are awaited, push the held PCM through a copy of the endpointer in a
        thread: Smart Turn judges the pause in it beside ASR, and the real push finds the verdict
        ready. Once per hush (a copy that did not reach the pause yet tries again with more)."""
        if self.foreseeing is not None or self.endpointer.turn_model is None:
            return
        ghost, chunks = self.endpointer.ahead(), list(self.held)
        task = self.foreseeing = asyncio.create_task(asyncio.to_thread(ghost.foresee, chunks))

        def done(t: asyncio.Task) -> None:
            failed = not t.cancelled() and t.exception() is not None
            if failed:
                log.warning("foreseeing a pause failed", exc_info=t.exception())
            if (t.cancelled() or failed or not t.result()) and self.foreseeing is t:
                self.foreseeing = None  # the next held chunk tries again

        task.add_done_callback(done)

    async def hear(self, chunks: list[np.ndarray]) -> None:
        """Push PCM through the endpointer and act on what it hears; once a pause's words are
        awaited, the rest waits with them (`held`). Called with `_ear` held."""
        for k, chunk in enumerate(chunks):
            for event in await self.listen(chunk):
                await self.on(event)
            if self.held is not None:
                self.held.extend(chunks[k + 1 :])
                return

    async def listen(self, chunk: np.ndarray) -> list:
        """The endpointer's events for this PCM: on the event loop when the push cannot reach the turn
        model (a message's VAD, one ONNX call, costs less than the hop to a thread), else in a thread,
        since at a pause the turn model takes tens of ms, which would stall every session."""
        if may_ask_turn_model(self.endpointer, len(chunk)):
            return await asyncio.to_thread(self.endpointer.push, chunk)
        return self.endpointer.push(chunk)

    async def on(self, event) -> None:
        taking, now = self.taking, event.at_s
        if isinstance(event, SpeechStart):
            await self.send(ev.SpeechStarted(barge_in=taking.running))
            await self.act(taking.speech_started(now))
        elif isinstance(event, Hush):
            await self.act(taking.hushed(now, event.pcm))
        elif isinstance(event, Pause):
            await self.act(taking.paused(now, event.pcm, event.p_complete))
        elif isinstance(event, Resume):
            await self.act(taking.resumed(now))
        elif isinstance(event, UtteranceEnd):
            duration = len(event.pcm) + (0 if taking.carry is None else len(taking.carry))
            await self.send(ev.UtteranceEnded(duration_s=round(duration / RATE, 2), speculative=event.speculative))
            await self.act(taking.utterance_ended(now, event.pcm, event.speculative))

    async def act(self, actions: list[tt.Action]) -> None:
        """Carry out the state machine's actions, in order. Called with `_ear` held."""
        for action in actions:
            match action:
                case tt.Transcribe(key=key, pcm=pcm):
                    self.transcribe(key, pcm)
                case tt.Forget(key=key):
                    if (task := self.heard.pop(key, None)) is not None:
                        task.cancel()
                case tt.EndUtterance():
                    if (end := self.endpointer.end()) is not None:
                        await self.on(end)
                case tt.CancelTurn(reason=reason, merged=merged, withdraw=withdraw, speculative=speculative):
                    if merged and speculative:  # started early, and the user was not done
                        self.service.counts.inc("speculative_cancelled")
                    await self.cancel_turn(reason, merged=merged, withdraw=withdraw)
                case tt.StartTurn(pcm=pcm, transcript=key, speculative=speculative, turn=serial):
                    heard = self.heard.pop(key, None) if key is not None else None
                    for task in self.heard.values():
                        task.cancel()
                    self.heard.clear()
                    if await self.start_turn(pcm, serial, heard) and speculative:
                        self.service.counts.inc("speculative_started")

    def transcribe(self, key: int, pcm: np.ndarray) -> None:
        """ASR of the speech so far, at a pause, while the user may go on. With `words`, the decision
        waits for it, and so does the PCM that arrives meanwhile (`held`)."""
        request = self.service.stages.asr.transcribe.remote(pcm, self.conv.language, self.conv.last_reply())
        task = self.heard[key] = asyncio.create_task(call_stage("asr", request, self.cfg.limits.stage_timeout_s))
        if self.cfg.endpointing.words:
            self.held, self.foreseeing = [], None
            waiter = asyncio.create_task(self.words_of(key, task, time.perf_counter()))
            self.waiters.add(waiter)
            waiter.add_done_callback(self.waiters.discard)

    async def words_of(self, key: int, task: asyncio.Task, started: float) -> None:
        # At most incomplete_silence_s: a slow ASR (queued behind other sessions) holds no decision
        # longer than the long silence would; the turn can still use the transcript when it comes.
        try:  # asyncio.timeout: 3.11's wait_for drops a cancel that meets the transcript
            async with asyncio.timeout(self.cfg.endpointing.incomplete_silence_s):
                text = await asyncio.shield(task)
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():
                raise  # the session is closing
            text = None  # forgotten: the speaker went on, or the mic was switched
        except (StageError, TimeoutError):
            text = None  # the decision waits for the long silence; a turn asks ASR itself
        except Exception as exc:
            log.warning("speculative ASR failed", exc_info=exc)
            text = None
        took = time.perf_counter() - started
        async with self._ear:
            held, self.held = self.held or [], None
            # first the audio of the time ASR took (speech may have come back meanwhile), then the words
            n, k = int(took * RATE), 0
            while k < len(held) and n > 0:
                n -= len(held[k])
                k += 1
            await self.hear(held[:k])
            if self.held is not None:  # another pause in that audio: its words come next
                self.held.extend(held[k:])
                return
            if text is not None:
                await self.act(self.taking.heard(key, text))
            if self.held is None:
                await self.hear(held[k:])
            else:
                self.held.extend(held[k:])

    async def end_ptt(self) -> None:
        chunks, self.ptt = self.ptt or [], None
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        if len(pcm) < RATE * self.cfg.endpointing.min_speech_s:
            await self.send(error("too_short", "hold the button while you speak"))
            return
        async with self._ear:
            carry = self.taking.carry
            duration = len(pcm) + (0 if carry is None else len(carry))
            await self.send(ev.UtteranceEnded(duration_s=round(duration / RATE, 2), speculative=False))
            await self.act(self.taking.utterance(pcm))

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
                async with self._ear:
                    await self.act(self.taking.reset())
            case ev.Ping():
                await self.send(ev.Pong())
            case ev.Settings():
                await self.settings(msg)
            case ev.Mic(on=on):
                self.streaming = on
                async with self._ear:
                    self.endpointer.reset()
                    self.held, self.ptt = None, None
                    await self.act(self.taking.reset())
            case ev.PushToTalk() if not self.streaming:
                await self.send(error("mic_off", 'push-to-talk streams PCM: send {"type": "mic", "on": true} first'))
            case ev.PushToTalk(down=True):
                async with self._ear:
                    await self.act(self.taking.interrupt())
                self.ptt = []
            case ev.PushToTalk(down=False) if self.ptt is not None:
                await self.end_ptt()
            case ev.IdleRequest(seconds=seconds):
                await self.request_idle(seconds)
            case ev.Interrupted(turn_id=turn_id, heard=heard, cut=cut):
                if turn_id == self.turn_id and heard <= len(self.sent):
                    await self.cancel_turn("barge_in")  # now the turn has recorded what it sent...
                    said = " ".join(self.sent[:heard]) + ("…" if cut and heard else "")
                    if self.conv.keep_heard(turn_id, said):  # ...of which this much was heard
                        await self.save()

    async def settings(self, msg: ev.Settings) -> None:
        conv = self.conv
        wanted = {k: getattr(msg, k) or getattr(conv, k) for k in ("avatar_id", "voice_id", "language")}
        try:
            choice = self.service.choice(**wanted)
        except Rejected as exc:
            await self.send(error(exc.code, exc.message))
            return
        self.service.choose(conv, choice)
        if await self.save():
            await self.send(ev.SettingsApplied(**wanted))

    async def save(self) -> bool:
        """Store the conversation; a store that fails is the client's error event, not the session's end."""
        try:
            await self.service.save(self.conv)
        except Rejected as exc:
            await self.send(error(exc.code, exc.message))
            return False
        return True

    # ---- turns ---------------------------------------------------------------------------

    async def start_turn(self, pcm: np.ndarray, serial: int = 0, heard: asyncio.Task | None = None) -> bool:
        try:  # the state machine cancels this session's running turn first, which frees its slot
            slot = self.service.gate.admission.acquire("turn", client_of(self.websocket.scope))
        except Overloaded as exc:
            if heard is not None:
                heard.cancel()
            self.taking.turn_ended(serial)
            await self.send(error("overloaded", str(exc)))
            return False
        turn = self.service.turn(self.conv, pcm, heard)
        self.turn_id, self.sent = turn.turn_id, []  # set here: a cancel may come before the task runs
        self.turn = asyncio.create_task(self.run(turn, serial))
        self.turn.add_done_callback(lambda _, s=slot: s.release())
        return True

    async def run(self, turn: Turn, serial: int) -> None:
        try:
            async with self.service.running(turn, failed=lambda exc: not self.gone(exc)) as events:
                async for event, data in events:
                    if isinstance(event, ev.Segment):
                        event.bytes = len(data)
                        self.taking.spoke(serial)
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
        finally:
            self.taking.turn_ended(serial)  # no-op if the state machine has cancelled it

    def gone(self, exc: Exception) -> bool:
        """The client has disconnected (sending then raises, depending on the server's stack)."""
        return isinstance(exc, WebSocketDisconnect) or WebSocketState.DISCONNECTED in (
            self.websocket.client_state, self.websocket.application_state
        )

    async def cancel_turn(
        self, reason: str = "client", notify: bool = True, merged: bool = False, withdraw: bool = False
    ) -> None:
        """Cancel the running turn. `withdraw`: it had spoken, but the user had only paused: what it
        said leaves the history too (the merged utterance is answered whole)."""
        if self.turn and not self.turn.done():
            self.turn.cancel()
            await asyncio.gather(self.turn, return_exceptions=True)
            if withdraw and self.conv.keep_heard(self.turn_id, ""):  # what it remembered goes
                await self.save()
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
        for task in [*self.heard.values(), *self.waiters]:
            task.cancel()
        if self.idle:
            self.idle.cancel()
            await asyncio.gather(self.idle, return_exceptions=True)
