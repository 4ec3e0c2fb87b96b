"""The front door: validates what clients send, runs turns, and streams their events out.

HTTP (`POST /api/v1/turn`, NDJSON) is the scripting interface; the WebSocket (`/ws`) is the browser's.
Conversations and segment bytes live in this replica's memory, which is why the ingress runs as a
single replica by default (see serve_config.yaml). No `from __future__ import annotations` here:
FastAPI must see the real parameter types through Serve's class-based ingress.
"""

import asyncio
import json
import logging
import re
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile

from deployments.media import MediaError, decode_audio
from serve_app import security
from serve_app.cache import LruCache
from serve_app.config import AppConfig
from serve_app.errors import http_error, install_handlers
from serve_app.turn import Conversation, Stages, run_turn
from serve_app.ws_session import WsSession, new_id

log = logging.getLogger("ray.serve")
UI_DIR = Path(__file__).resolve().parent.parent / "ui"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

app = FastAPI(title="Talking avatar", docs_url="/api/docs", openapi_url="/api/openapi.json")
app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")
app.add_middleware(security.Guard)  # auth, CORS, Origin, admission: configured per replica below
install_handlers(app)


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.1, "num_gpus": 0})
@serve.ingress(app)
class Ingress:
    def __init__(
        self,
        asr: DeploymentHandle,
        llm: DeploymentHandle,
        tts: DeploymentHandle,
        animator: DeploymentHandle,
        config: dict,
    ):
        self.cfg = AppConfig.model_validate(config)
        self.gate = security.configure(self.cfg)
        self.stages = Stages(asr, llm, tts, animator)
        limits = self.cfg.limits
        self.sessions: LruCache[str, Conversation] = LruCache(max_items=limits.sessions)
        self.segments: LruCache[str, tuple[bytes, str]] = LruCache(
            max_weight=limits.segment_cache_bytes, ttl_s=limits.segment_ttl_s, weigh=lambda s: len(s[0])
        )

    async def admission(self, limits: dict | None = None) -> dict:
        """Handle-only (no route): read or replace the admission limits at run time."""
        if limits is not None:
            cfg = self.gate.admission.cfg
            self.gate.admission.cfg = cfg.model_validate({**cfg.model_dump(), **limits})
        return self.gate.admission.snapshot()

    async def diagnostics(self) -> dict:
        """Handle-only: what this replica holds, to show that finished turns leave nothing behind."""
        code = lambda t: getattr(t.get_coro(), "cr_code", None)  # noqa: E731
        ours = [t for t in asyncio.all_tasks() if "/serve_app/" in getattr(code(t), "co_filename", "")]
        return {**self.gate.admission.snapshot(), "turn_tasks": len(ours),
                "sessions_remembered": len(self.sessions), "segment_bytes": self.segments.weight}

    # ---- status and page -------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz(self) -> JSONResponse:
        """200 once every stage has a replica that finished loading and warming up its model."""
        names = ("asr", "llm", "tts", "animator")
        calls = [asyncio.wait_for(getattr(self.stages, n).ready.remote(), 2.0) for n in names]
        results = await asyncio.gather(*calls, return_exceptions=True)
        stages = {n: ("ready" if r is True else "starting") for n, r in zip(names, results)}
        ok = all(s == "ready" for s in stages.values())
        return JSONResponse({"status": "ok" if ok else "starting", "stages": stages}, 200 if ok else 503)

    @app.get("/")
    async def index(self) -> FileResponse:
        return FileResponse(UI_DIR / "index.html")

    @app.get("/api/v1/avatars/{avatar_id}/image")
    async def avatar_image(self, avatar_id: str) -> Response:
        if avatar_id != "default":
            return http_error(404, "avatar_not_found", f"no avatar with id {avatar_id!r}")
        return FileResponse(self.cfg.animator.avatar_image)

    # ---- HTTP turn -------------------------------------------------------------------------

    @app.post("/api/v1/turn")
    async def turn(self, request: Request) -> Response:
        limit = self.cfg.limits.max_upload_bytes
        if int(request.headers.get("content-length") or 0) > limit:
            return http_error(413, "upload_too_large", f"the upload is larger than {limit} bytes")
        try:
            form = await request.form(max_files=1, max_fields=4)
        except Exception as exc:
            return http_error(400, "bad_form", f"expected multipart/form-data: {exc}")
        audio = form.get("audio")
        if not isinstance(audio, UploadFile):
            return http_error(400, "missing_audio", "send the audio file in the form field 'audio'")
        data = await audio.read(limit + 1)
        if len(data) > limit:
            return http_error(413, "upload_too_large", f"the upload is larger than {limit} bytes")
        session_id = form.get("session_id") or new_id()
        if not isinstance(session_id, str) or not _ID.match(session_id):
            return http_error(400, "bad_session_id", "session_id must be 1-64 letters, digits, _ or -")
        try:
            pcm = await asyncio.to_thread(decode_audio, data, self.cfg.limits.max_audio_s)
        except MediaError as exc:
            return http_error(413 if exc.code == "audio_too_long" else 400, exc.code, exc.message)

        conv = self.sessions.get(session_id) or Conversation(id=session_id)
        self.sessions.put(session_id, conv)
        turn_id = new_id()

        async def ndjson():
            async for event in run_turn(self.stages, conv, pcm, turn_id, self.cfg.limits.stage_timeout_s):
                if event["type"] == "segment":
                    key = f"{turn_id}-{event['index']}"
                    self.segments.put(key, (event.pop("data"), event["mime"]))
                    event["url"] = f"/api/v1/segments/{key}"
                yield json.dumps(event) + "\n"

        return StreamingResponse(
            ndjson(), media_type="application/x-ndjson", headers={"X-Session-Id": session_id}
        )

    @app.get("/api/v1/sessions/{session_id}")
    async def session(self, session_id: str) -> Response:
        """The conversation so far, as the LLM will see it on the next turn."""
        conv = self.sessions.get(session_id) if _ID.match(session_id) else None
        if conv is None:
            return http_error(404, "session_not_found", "no such session (sessions expire)")
        return JSONResponse({"session_id": conv.id, "messages": conv.history})

    @app.get("/api/v1/segments/{segment_id}")
    async def segment(self, segment_id: str) -> Response:
        found = self.segments.get(segment_id) if _ID.match(segment_id) else None
        if found is None:
            return http_error(404, "segment_not_found", "no such segment (segments expire)")
        data, mime = found
        return Response(data, media_type=mime)

    # ---- WebSocket -------------------------------------------------------------------------

    @app.websocket("/ws")
    async def ws(self, websocket: WebSocket) -> None:
        """Binary message: one utterance (any audio file) starts a turn, cancelling a running one.
        Text message: JSON control, {"type": "cancel"} or {"type": "ping"}."""
        await websocket.accept()
        session = WsSession(websocket, Conversation(id=new_id()), self)
        await session.send({"type": "session", "session_id": session.conv.id})
        try:
            await session.serve()
        except WebSocketDisconnect:
            pass
        finally:
            await session.cancel_turn(notify=False)
