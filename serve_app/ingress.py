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
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import FormData, UploadFile

from avatar_core.media import MediaError, decode_audio
from serve_app import security, turn_model
from serve_app.cache import LruCache
from avatar_core.config import AppConfig
from serve_app.errors import http_error, install_handlers
from serve_app.library import (
    VOICE_RATE,
    Library,
    content_id,
    decode_image,
    decode_voice,
    display_name,
    encode_png,
    encode_wav,
)
from serve_app.conversation import Conversation
from serve_app.turn import Stages, Turn, error_event
from serve_app.ws_session import WsSession, new_id

log = logging.getLogger("ray.serve")
UI_DIR = Path(__file__).resolve().parent.parent / "ui"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

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
        self.languages = self.cfg.languages()
        self.voice_cloning = self.cfg.backend("tts").clones_voices
        self.gate = security.configure(self.cfg)
        self.stages = Stages.of(asr, llm, tts, animator, self.cfg)
        limits = self.cfg.limits
        self.sessions: LruCache[str, Conversation] = LruCache(max_items=limits.sessions)
        self.segments: LruCache[str, tuple[bytes, str]] = LruCache(
            max_weight=limits.segment_cache_bytes, ttl_s=limits.segment_ttl_s, weigh=lambda s: len(s[0])
        )
        self.avatar_lib = Library(self.cfg.storage.dir, "avatars", ".png")
        self.voice_lib = Library(self.cfg.storage.dir, "voices", ".wav")
        # Both transports count here, through Turn: started, then one outcome each; barge-ins too.
        # Hands-free turns started at a pause the turn model called the end, and those of them
        # cancelled because the user went on (their audio merged into the next utterance).
        self.turn_counts = {
            "started": 0, "completed": 0, "failed": 0, "no_speech": 0, "cancelled": 0, "barge_in": 0,
            "speculative_started": 0, "speculative_cancelled": 0,
        }
        turn_model.for_config(self.cfg.endpointing)  # a missing model fails the deploy, not a session
        self._status: tuple[float, dict] | None = None

    def check_choice(self, avatar_id: str, voice_id: str, language: str) -> tuple[str, str] | None:
        """(code, message) if a session's avatar, voice or language cannot be used, else None."""
        if not isinstance(avatar_id, str) or (avatar_id != "default" and not self.avatar_lib.path(avatar_id)):
            return "unknown_avatar", f"no avatar with id {avatar_id!r}; see GET /api/v1/avatars"
        if not isinstance(voice_id, str) or (voice_id != "default" and not self.voice_lib.path(voice_id)):
            return "unknown_voice", f"no voice with id {voice_id!r}; see GET /api/v1/voices"
        if language not in self.languages:
            return "unsupported_language", (
                f"language {language!r} is not supported; the configured backends support: "
                + ", ".join(self.languages)
            )
        return None

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
        language = language or self.languages[0]
        problem = self.check_choice(avatar_id, voice_id, language)
        if problem is None and (session_id is not None and not _ID.match(str(session_id))):
            problem = ("bad_session_id", "session_id must be 1-64 letters, digits, _ or -")
        if problem is None and not isinstance(audio, (bytes, bytearray, memoryview, np.ndarray)):
            problem = ("bad_audio_type", "audio is an audio file's bytes or a numpy array of PCM")
        elif problem is None and not isinstance(audio, np.ndarray):
            try:
                audio = await asyncio.to_thread(decode_audio, bytes(audio), self.cfg.limits.max_audio_s)
            except MediaError as exc:
                problem = (exc.code, exc.message)
        elif problem is None:  # PCM: the checks decode_audio makes of a file
            audio = np.asarray(audio, np.float32).reshape(-1)
            limit = self.cfg.limits.max_audio_s
            if not 0 < audio.size <= limit * 16_000 or not np.isfinite(audio).all():
                problem = ("bad_pcm", f"PCM must be 16 kHz mono float32, finite, 0-{limit:g} s long")
        if problem is not None:
            yield {"type": "error", "code": problem[0], "message": problem[1], "at": 0.0}
            return
        session_id = session_id or new_id()
        conv = self.sessions.get(session_id) or Conversation(id=session_id)
        conv.avatar_id, conv.voice_id, conv.language = avatar_id, voice_id, language
        self.sessions.put(session_id, conv)
        turn = Turn(self.stages, self.cfg, conv, audio, new_id(), self.turn_counts)
        async with aclosing(turn.run()) as events:  # a caller that stops early cancels the stages now
            try:
                async for event in events:
                    event["at"] = round(turn.timings.elapsed(), 4)
                    if event["type"] == "done":
                        event["spans"] = turn.timings.spans
                    yield event
            except Exception:
                turn.outcome = "failed"  # counted as such when the turn closes
                raise

    # ---- status and page -------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz(self) -> JSONResponse:
        """200 once every stage has a running replica, i.e. one that finished loading and warming up
        its model. Read from Serve's own status (cached for a second), so a health check never
        queues behind a stage's work and never leaves a request behind."""
        now = asyncio.get_running_loop().time()
        if self._status is None or now - self._status[0] > 1.0:
            status = await asyncio.to_thread(serve.status)
            stages = {}
            for stage in ("asr", "llm", "tts", "animator"):
                # the deployment this ingress's handle calls (usually in its own application)
                handle = getattr(self.stages, stage)
                app_status = status.applications.get(handle.app_name)
                found = app_status.deployments.get(handle.deployment_name) if app_status else None
                running = found.replica_states.get("RUNNING", 0) if found else 0
                stages[stage] = "ready" if running else "starting"
            self._status = (now, stages)
        stages = self._status[1]
        ok = all(s == "ready" for s in stages.values())
        return JSONResponse({"status": "ok" if ok else "starting", "stages": stages}, 200 if ok else 503)

    @app.get("/")
    async def index(self) -> FileResponse:
        return FileResponse(UI_DIR / "index.html")

    @app.get("/api/v1/stats")
    async def stats(self) -> JSONResponse:
        """Turns this ingress replica started, completed, failed and cancelled (barge-ins among them),
        and the hands-free turns started speculatively and cancelled because the user went on."""
        return JSONResponse({"turns": self.turn_counts})

    # ---- avatars and voices --------------------------------------------------------------

    @app.get("/api/v1/avatars")
    async def avatars(self) -> JSONResponse:
        stem = self.cfg.animator.avatar_image.stem.replace("_", " ").title()
        default = {"id": "default", "name": f"{stem} (default)"}
        items = [default] + await asyncio.to_thread(self.avatar_lib.items)
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
        verdict = await self.stages.animator.register_avatar.remote(avatar_id, png)
        if not verdict["ok"]:
            return http_error(422, "no_face", verdict["message"])
        name = display_name(filename, f"Avatar {avatar_id[:6]}")
        await asyncio.to_thread(self.avatar_lib.save, avatar_id, png, {"name": name})
        url = f"/api/v1/avatars/{avatar_id}/image"
        return JSONResponse({"id": avatar_id, "name": name, "preview_url": url}, status_code=201)

    @app.get("/api/v1/avatars/{avatar_id}/image")
    async def avatar_image(self, avatar_id: str) -> Response:
        if avatar_id == "default":
            return FileResponse(self.cfg.animator.avatar_image)
        path = self.avatar_lib.path(avatar_id)
        if path is None:
            return http_error(404, "avatar_not_found", f"no avatar with id {avatar_id!r}")
        return FileResponse(path, media_type="image/png")

    @app.get("/api/v1/voices")
    async def voices(self) -> JSONResponse:
        name = getattr(self.cfg.backend("tts"), "default_voice_name", "built-in")
        default = {"id": "default", "name": name, "preview_url": None}
        items = await asyncio.to_thread(self.voice_lib.items)
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
        await asyncio.to_thread(self.voice_lib.save, voice_id, encode_wav(pcm), meta)
        note = (
            "stored; turns that choose this voice speak with it"
            if self.voice_cloning
            else "stored; used by the GPU voice-cloning backend (the embedded Piper TTS has one voice)"
        )
        return JSONResponse(
            {"id": voice_id, **meta, "preview_url": f"/api/v1/voices/{voice_id}/audio", "note": note},
            status_code=201,
        )

    @app.get("/api/v1/voices/{voice_id}/audio")
    async def voice_audio(self, voice_id: str) -> Response:
        path = self.voice_lib.path(voice_id)
        if path is None:
            return http_error(404, "voice_not_found", f"no stored clip for voice {voice_id!r}")
        return FileResponse(path, media_type="audio/wav")

    # ---- HTTP turn -------------------------------------------------------------------------

    @app.post("/api/v1/turn")
    async def turn(self, request: Request) -> Response:
        got = await self.read_upload(request, "audio", self.cfg.limits.max_upload_bytes, max_fields=8)
        if isinstance(got, JSONResponse):
            return got
        form, data, _ = got
        session_id = form.get("session_id") or new_id()
        if not isinstance(session_id, str) or not _ID.match(session_id):
            return http_error(400, "bad_session_id", "session_id must be 1-64 letters, digits, _ or -")
        choice = {k: form.get(k) or "default" for k in ("avatar_id", "voice_id")}
        choice["language"] = form.get("language") or self.languages[0]
        problem = self.check_choice(**choice)
        if problem:
            return http_error(422 if problem[0] == "unsupported_language" else 404, *problem)
        try:
            pcm = await asyncio.to_thread(decode_audio, data, self.cfg.limits.max_audio_s)
        except MediaError as exc:
            return http_error(413 if exc.code == "audio_too_long" else 400, exc.code, exc.message)

        conv = self.sessions.get(session_id) or Conversation(id=session_id)
        conv.avatar_id, conv.voice_id, conv.language = choice["avatar_id"], choice["voice_id"], choice["language"]
        self.sessions.put(session_id, conv)
        turn_id = new_id()

        async def ndjson():
            turn = Turn(self.stages, self.cfg, conv, pcm, turn_id, self.turn_counts)
            try:
                async with aclosing(turn.run()) as events:  # closed at once: the turn's cleanup runs now
                    try:
                        async for event in events:
                            if event["type"] == "segment":
                                key = f"{turn_id}-{event['index']}"
                                self.segments.put(key, (event.pop("data"), event["mime"]))
                                event["url"] = f"/api/v1/segments/{key}"
                            yield json.dumps(event) + "\n"
                    except Exception:
                        turn.outcome = "failed"  # counted as such when the turn closes
                        raise
            except Exception as exc:  # a bug: the stream ends with an error event, not mid-line
                log.error("turn=%s failed in the HTTP stream", turn_id, exc_info=exc)
                yield json.dumps(error_event("internal_error", "the turn failed on the server")) + "\n"

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
        """Hands-free (PCM stream + server VAD), push-to-talk or whole audio files; the messages are
        described in serve_app/ws_session.py."""
        await websocket.accept()
        session = WsSession(websocket, Conversation(id=new_id()), self)
        conv = session.conv
        self.sessions.put(conv.id, conv)  # readable at /api/v1/sessions/{id} like HTTP sessions
        await session.send(
            {
                "type": "session",
                "session_id": conv.id,
                "avatar_id": conv.avatar_id,
                "voice_id": conv.voice_id,
                "language": conv.language,
                "languages": self.languages,
                # Piper has one built-in voice; a cloning backend (XTTS) speaks with the chosen clip
                "voice_cloning": self.voice_cloning,
            }
        )
        try:
            await session.serve()
        except WebSocketDisconnect:
            pass
        finally:
            await session.close()
