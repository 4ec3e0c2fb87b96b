"""The front door: validates what clients send, runs turns, and streams their events out.

HTTP (`POST /api/v1/turn`, NDJSON) is the scripting interface; the WebSocket (`/ws`) is the browser's.
What the transports share (validation, conversations, turns, counts) is the turn service's
(`serve_app/service.py`); this class keeps only the routes. Conversations and segment bytes live in
the session store (`serve_app/store.py`: SQLite on one machine, Redis on a cluster), so replicas are
interchangeable. No `from __future__ import annotations` here: FastAPI must see the real parameter
types through Serve's class-based ingress.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import numpy as np
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import FormData, UploadFile

from avatar_core.config import AppConfig, shipped
from avatar_core.media import MediaError
from serve_app import security, turn_model
from serve_app.errors import error, http_error, install_handlers
from serve_app.events import Done, Segment
from serve_app.library import VOICE_RATE, content_id, decode_image, decode_voice, display_name, encode_png, encode_wav
from serve_app.service import Rejected, TurnService, valid_id
from serve_app.store import StoreUnavailable
from serve_app.turn import Stages
from serve_app.ws_session import WsSession

log = logging.getLogger("ray.serve")
UI_DIR = shipped("ui")  # the page: the checkout's ui/, or the installed wheel's copy

app = FastAPI(title="Talking avatar", docs_url="/api/docs", openapi_url="/api/openapi.json")
app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")
app.add_middleware(security.Guard)  # auth, CORS, Origin, admission: configured per replica below
install_handlers(app)


@serve.deployment(name="Ingress", max_ongoing_requests=100, ray_actor_options={"num_cpus": 0.1, "num_gpus": 0})
@serve.ingress(app)
class Ingress:
    def __init__(
        self,
        asr: DeploymentHandle,
        llm: DeploymentHandle,
        tts: DeploymentHandle,
        animator: DeploymentHandle,
        config: AppConfig,
    ):
        self.cfg = AppConfig.model_validate(config)
        self.service = TurnService(Stages.of(asr, llm, tts, animator, self.cfg), self.cfg)
        turn_model.for_config(self.cfg.endpointing)  # a missing model fails the deploy, not a session
        self.replica = serve.get_replica_context().replica_id.unique_id  # X-Replica: which one answered
        self._status: tuple[float, dict, str] | None = None
        self._warming = asyncio.get_running_loop().create_task(self.service.warm())  # Serve runs this in its loop

    async def read_upload(
        self, request: Request, field: str, limit: int, max_fields: int = 4
    ) -> tuple[FormData, bytes, str | None] | JSONResponse:
        """The form, and the bytes and filename of its one file field; or the error response.
        The declared size may exceed `limit` by 64 KiB of multipart headers; the file may not."""
        if int(request.headers.get("content-length") or 0) > limit + 64 * 1024:
            return http_error(413, "upload_too_large", f"the upload is larger than {limit} bytes")
        try:
            form = await request.form(max_files=1, max_fields=max_fields)
        except Exception as exc:
            return http_error(400, "bad_form", f"expected multipart/form-data: {exc}")
        file = form.get(field)
        if not isinstance(file, UploadFile):
            return http_error(400, f"missing_{field}", f"send the file in the form field {field!r}")
        data = await file.read(limit + 1)
        if len(data) > limit:
            return http_error(413, "upload_too_large", f"the upload is larger than {limit} bytes")
        return form, data, file.filename

    async def admission(self, limits: dict | None = None) -> dict:
        """Handle-only (no route): read or replace the admission limits at run time."""
        admission = self.service.gate.admission
        if limits is not None:
            admission.cfg = admission.cfg.model_validate({**admission.cfg.model_dump(), **limits})
        return admission.snapshot()

    async def diagnostics(self) -> dict:
        """Handle-only: what this replica holds, to show that finished turns leave nothing behind."""
        code = lambda t: getattr(t.get_coro(), "cr_code", None)  # noqa: E731
        ours = [t for t in asyncio.all_tasks() if "/serve_app/" in getattr(code(t), "co_filename", "")]
        return {**self.service.gate.admission.snapshot(), "turn_tasks": len(ours)}

    async def run_turn(
        self,
        audio: bytes | np.ndarray,
        session_id: str | None = None,
        avatar_id: str = "default",
        voice_id: str = "default",
        language: str | None = None,
    ) -> AsyncIterator[dict]:
        """Handle-only (no route), for notebooks and scripts: one turn's events, as `POST
        /api/v1/turn` streams them but with each segment's bytes in `data`, every event stamped with
        `at` (seconds since the turn started, on this replica's clock), and `done` also carrying
        `spans`: when each stage worked on each sentence and fragment. `audio` is an audio file's
        bytes or 16 kHz mono float32 PCM. Validated like the route; not subject to admission."""
        service = self.service
        try:
            conv, pcm = await service.prepare(audio, session_id, avatar_id, voice_id, language)
        except Rejected as exc:
            yield {**error(exc.code, exc.message).to_json(), "at": 0.0}
            return
        turn = service.turn(conv, pcm)
        try:
            async with service.running(turn) as events:
                async for event, data in events:
                    if isinstance(event, Done):
                        event.spans = turn.timings.spans
                    out = event.to_json() | {"at": round(turn.timings.elapsed(), 4)}
                    yield out if data is None else out | {"data": data}
        except Rejected as exc:  # the store failed after the turn: it is not remembered
            yield {**error(exc.code, exc.message).to_json(), "at": round(turn.timings.elapsed(), 4)}

    # ---- status and page -------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz(self) -> JSONResponse:
        """200 once every stage has a running replica, i.e. one that finished loading and warming up
        its model, and the session store answers. Read from Serve's own status (cached for a
        second), so a health check never queues behind a stage's work and never leaves a request
        behind."""
        now = asyncio.get_running_loop().time()
        if self._status is None or now - self._status[0] > 1.0:
            status = await asyncio.to_thread(serve.status)
            stages = {}
            for stage in ("asr", "llm", "tts", "animator"):
                # the deployment this ingress's handle calls (usually in its own application)
                handle = getattr(self.service.stages, stage)
                app_status = status.applications.get(handle.app_name)
                found = app_status.deployments.get(handle.deployment_name) if app_status else None
                running = found.replica_states.get("RUNNING", 0) if found else 0
                stages[stage] = "ready" if running else "starting"
            try:
                await self.service.store.ping()
                store = "ready"
            except StoreUnavailable:
                store = "unreachable"
            self._status = (now, stages, store)
        _, stages, store = self._status
        ok = all(s == "ready" for s in stages.values())
        body = {"status": "ok" if ok and store == "ready" else "starting" if store == "ready" else "store_unreachable",
                "stages": stages, "store": store}
        return JSONResponse(body, 200 if body["status"] == "ok" else 503)

    @app.get("/")
    async def index(self) -> FileResponse:
        """The page."""
        return FileResponse(UI_DIR / "index.html")

    @app.get("/api/v1/stats")
    async def stats(self) -> JSONResponse:
        """Turns this ingress replica started, completed, failed and cancelled (barge-ins among them),
        and the hands-free turns started speculatively and cancelled because the user went on."""
        return JSONResponse({"turns": self.service.counts.snapshot()})

    # ---- avatars and voices --------------------------------------------------------------

    @app.get("/api/v1/avatars")
    async def avatars(self) -> JSONResponse:
        """The avatars a session may choose: the default and every uploaded one."""
        stem = self.cfg.animator.avatar_image.stem.replace("_", " ").title()
        default = {"id": "default", "name": f"{stem} (default)"}
        items = [default] + await asyncio.to_thread(self.service.avatars.items)
        for item in items:
            item["preview_url"] = f"/api/v1/avatars/{item['id']}/image"
        return JSONResponse({"avatars": items})

    @app.post("/api/v1/avatars")
    async def add_avatar(self, request: Request) -> Response:
        """A face image (PNG, JPEG, WebP). 422 if it has no face the animator can use."""
        got = await self.read_upload(request, "image", self.cfg.storage.max_image_bytes)
        if isinstance(got, JSONResponse):
            return got
        _, data, filename = got
        try:
            png = await asyncio.to_thread(lambda: encode_png(decode_image(data, self.cfg.storage)))
        except MediaError as exc:
            return http_error(413 if exc.code == "image_too_large" else 400, exc.code, exc.message)
        avatar_id = content_id(data)
        verdict = await self.service.stages.animator.register_avatar.remote(avatar_id, png)
        if not verdict["ok"]:
            return http_error(422, "no_face", verdict["message"])
        name = display_name(filename, f"Avatar {avatar_id[:6]}")
        await asyncio.to_thread(self.service.avatars.save, avatar_id, png, {"name": name})
        url = f"/api/v1/avatars/{avatar_id}/image"
        return JSONResponse({"id": avatar_id, "name": name, "preview_url": url}, status_code=201)

    @app.get("/api/v1/avatars/{avatar_id}/image")
    async def avatar_image(self, avatar_id: str) -> Response:
        """An avatar's image (PNG for uploaded ones)."""
        if avatar_id == "default":
            return FileResponse(self.cfg.animator.avatar_image)
        path = self.service.avatars.path(avatar_id)
        if path is None:
            return http_error(404, "avatar_not_found", f"no avatar with id {avatar_id!r}")
        return FileResponse(path, media_type="image/png")

    @app.get("/api/v1/voices")
    async def voices(self) -> JSONResponse:
        """The voices a session may choose: the TTS's built-in one and every uploaded clip."""
        default = {"id": "default", "name": self.service.default_voice_name, "preview_url": None}
        items = await asyncio.to_thread(self.service.voices.items)
        for item in items:
            item["preview_url"] = f"/api/v1/voices/{item['id']}/audio"
        return JSONResponse({"voices": [default] + items})

    @app.post("/api/v1/voices")
    async def add_voice(self, request: Request) -> Response:
        """A 2-30 s reference clip. Stored for the GPU voice-cloning TTS backend (XTTS-v2); the
        embedded Piper TTS speaks with its one built-in voice whichever voice is chosen."""
        got = await self.read_upload(request, "audio", self.cfg.limits.max_upload_bytes)
        if isinstance(got, JSONResponse):
            return got
        _, data, filename = got
        try:
            pcm = await asyncio.to_thread(decode_voice, data, self.cfg.storage)
        except MediaError as exc:
            return http_error(413 if exc.code == "voice_too_long" else 400, exc.code, exc.message)
        voice_id = content_id(data)
        name = display_name(filename, f"Voice {voice_id[:6]}")
        meta = {"name": name, "duration_s": round(len(pcm) / VOICE_RATE, 2)}
        await asyncio.to_thread(self.service.voices.save, voice_id, encode_wav(pcm), meta)
        note = (
            "stored; turns that choose this voice speak with it"
            if self.service.voice_cloning
            else "stored; used by the GPU voice-cloning backend (the embedded Piper TTS has one voice)"
        )
        return JSONResponse(
            {"id": voice_id, **meta, "preview_url": f"/api/v1/voices/{voice_id}/audio", "note": note},
            status_code=201,
        )

    @app.get("/api/v1/voices/{voice_id}/audio")
    async def voice_audio(self, voice_id: str) -> Response:
        """An uploaded voice's reference clip (WAV)."""
        path = self.service.voices.path(voice_id)
        if path is None:
            return http_error(404, "voice_not_found", f"no stored clip for voice {voice_id!r}")
        return FileResponse(path, media_type="audio/wav")

    # ---- HTTP turn -------------------------------------------------------------------------

    @app.post("/api/v1/turn")
    async def turn(self, request: Request) -> Response:
        """One turn from an audio file (form field `audio`; optional `session_id`, `avatar_id`,
        `voice_id`, `language`): its events as NDJSON, the session id in `X-Session-Id`."""
        got = await self.read_upload(request, "audio", self.cfg.limits.max_upload_bytes, max_fields=8)
        if isinstance(got, JSONResponse):
            return got
        form, data, _ = got
        service = self.service
        fields = ("session_id", "avatar_id", "voice_id", "language")
        try:
            conv, pcm = await service.prepare(data, *(form.get(k) or None for k in fields))
        except Rejected as exc:
            return http_error(exc.status, exc.code, exc.message)
        turn = service.turn(conv, pcm)

        async def ndjson():
            try:
                async with service.running(turn) as events:  # closed at once: the turn's cleanup runs now
                    async for event, data in events:
                        if isinstance(event, Segment):
                            event.url = await service.keep_segment(turn, event, data)
                        yield json.dumps(event.to_json()) + "\n"
            except Rejected as exc:  # the store failed mid-turn: say so, and end the stream
                yield json.dumps(error(exc.code, exc.message).to_json()) + "\n"
            except Exception as exc:  # a bug: the stream ends with an error event, not mid-line
                log.error("turn=%s failed in the HTTP stream", turn.turn_id, exc_info=exc)
                yield json.dumps(error("internal_error", "the turn failed on the server").to_json()) + "\n"

        headers = {"X-Session-Id": conv.id, "X-Replica": self.replica}
        return StreamingResponse(ndjson(), media_type="application/x-ndjson", headers=headers)

    @app.get("/api/v1/sessions/{session_id}")
    async def session(self, session_id: str) -> Response:
        """The conversation so far, as the LLM will see it on the next turn."""
        try:
            conv = await self.service.resume(session_id) if valid_id(session_id) else None
        except Rejected as exc:
            return http_error(exc.status, exc.code, exc.message)
        if conv is None:
            return http_error(404, "session_not_found", "no such session (sessions expire)")
        return JSONResponse({"session_id": conv.id, "messages": conv.history})

    @app.get("/api/v1/segments/{segment_id}")
    async def segment(self, segment_id: str) -> Response:
        """A segment's media (fragmented MP4) named by a `segment` event's `url`."""
        try:
            found = await self.service.segment(segment_id)
        except Rejected as exc:
            return http_error(exc.status, exc.code, exc.message)
        if found is None:
            return http_error(404, "segment_not_found", "no such segment (segments expire)")
        data, mime = found
        return Response(data, media_type=mime)

    # ---- WebSocket -------------------------------------------------------------------------

    @app.websocket("/ws")
    async def ws(self, websocket: WebSocket) -> None:
        """Hands-free (PCM stream + server VAD), push-to-talk or whole audio files; the messages are
        the models of serve_app/events.py (docs/protocol.md)."""
        await websocket.accept()
        session = WsSession(websocket, self.service)
        try:
            await session.open(websocket.query_params.get("session_id"))
        except Rejected as exc:  # a resumable conversation cannot be read or written now
            await websocket.close(code=1013 if exc.status == 503 else 1008, reason=exc.message[:120])
            return
        try:
            await session.serve()
        except WebSocketDisconnect:
            pass
        finally:
            await session.close()
