"""The browser's WebSocket: one connection, one conversation, at most one turn running at a time."""

import asyncio
import json
import secrets
from typing import TYPE_CHECKING

from fastapi import WebSocket, WebSocketDisconnect

from deployments.media import MediaError, decode_audio
from serve_app.admission import Overloaded
from serve_app.security import client_of
from serve_app.turn import Conversation, error_event, run_turn

if TYPE_CHECKING:
    from serve_app.ingress import Ingress


def new_id() -> str:
    return secrets.token_urlsafe(12)


class WsSession:
    """One browser connection: reads client messages, runs at most one turn at a time."""

    def __init__(self, websocket: WebSocket, conv: Conversation, ingress: "Ingress"):
        self.websocket, self.conv, self.ingress = websocket, conv, ingress
        self.turn: asyncio.Task | None = None
        self._send_lock = asyncio.Lock()  # a segment's JSON and its bytes go out back to back

    async def send(self, event: dict, data: bytes | None = None) -> None:
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(event))
            if data is not None:
                await self.websocket.send_bytes(data)

    async def serve(self) -> None:
        limits = self.ingress.cfg.limits
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                data = message["bytes"]
                if len(data) > limits.max_upload_bytes:
                    await self.send(error_event("upload_too_large", "the audio message is too large"))
                    continue
                try:
                    pcm = await asyncio.to_thread(decode_audio, data, limits.max_audio_s)
                except MediaError as exc:
                    await self.send(error_event(exc.code, exc.message))
                    continue
                await self.cancel_turn()
                try:  # the barge-in above freed this session's own slot first
                    slot = self.ingress.gate.admission.acquire("turn", client_of(self.websocket.scope))
                except Overloaded as exc:
                    await self.send(error_event("overloaded", str(exc)))
                    continue
                self.turn = asyncio.create_task(self.run(pcm))
                self.turn.add_done_callback(lambda _, s=slot: s.release())
            else:
                await self.control(message.get("text") or "")

    async def control(self, text: str) -> None:
        if len(text.encode()) > self.ingress.cfg.limits.max_text_bytes:
            await self.send(error_event("message_too_large", "text messages are small JSON controls"))
            return
        try:
            msg = json.loads(text)
            kind = msg.get("type") if isinstance(msg, dict) else None
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; deep nesting recurses
            kind = None
        if kind == "cancel":
            await self.cancel_turn()
        elif kind == "ping":
            await self.send({"type": "pong"})
        else:
            await self.send(error_event("bad_message", "expected JSON {\"type\": \"cancel\" | \"ping\"}"))

    async def run(self, pcm) -> None:
        turn_id = new_id()
        timeout = self.ingress.cfg.limits.stage_timeout_s
        try:
            async for event in run_turn(self.ingress.stages, self.conv, pcm, turn_id, timeout):
                data = event.pop("data", None)
                if data is not None:
                    event["bytes"] = len(data)
                await self.send(event, data)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client left mid-turn; run_turn's cleanup has cancelled the stages

    async def cancel_turn(self, notify: bool = True) -> None:
        if self.turn and not self.turn.done():
            self.turn.cancel()
            await asyncio.gather(self.turn, return_exceptions=True)
            if notify:
                await self.send({"type": "cancelled"})
        self.turn = None
