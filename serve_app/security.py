"""The gate in front of every route: CORS, bearer token, WebSocket Origin check and admission.

The FastAPI app is a module-level object that Serve copies into the replica, so settings cannot be
passed to it when it is built. Instead `Guard` (added to the app at import) reads the `Gate` that the
ingress replica installs with `configure()` in its constructor, before the first request arrives.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app import metrics
from serve_app.admission import Admission, Overloaded
from serve_app.errors import error_body
from avatar_core.config import AppConfig, SecurityConfig

OPEN_PATHS = {"/healthz", "/"}  # and /ui/*: the page and its static files hold no data
TURN_PATH = "/api/v1/turn"
WS_PATH = "/ws"
WS_TRY_AGAIN_LATER = 1013  # RFC 6455 registry: "Try Again Later"


@dataclass
class Gate:
    security: SecurityConfig
    admission: Admission
    cors: ASGIApp | None = None  # built on first use, around the guarded app


_GATE: Gate | None = None


def configure(cfg: AppConfig) -> Gate:
    """Install this replica's gate; called from the ingress constructor."""
    global _GATE
    _GATE = Gate(cfg.security, Admission(cfg.admission))
    return _GATE


def client_of(scope: Scope) -> str:
    """The peer's IP as the proxy reports it (X-Forwarded-For is not trusted)."""
    client = scope.get("client")
    return client[0] if client else "unknown"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def route_path(scope: Scope) -> str:
    """The path inside the application: Serve mounts an application at its route prefix, which the
    path includes and `root_path` names."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root):]
    return path or "/"


def token_ok(scope: Scope, token: str | None) -> bool:
    if not token:
        return True
    auth = _header(scope, b"authorization") or ""
    given = auth[7:] if auth[:7].lower() == "bearer " else None
    if given is None and scope["type"] == "websocket":
        given = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("access_token") or [None])[0]
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def origin_ok(scope: Scope, allowed: list[str] | None) -> bool:
    """Browsers always send Origin on a WebSocket handshake; others may not (and are not CSRF-able)."""
    origin = _header(scope, b"origin")
    if origin is None or (allowed is not None and "*" in allowed):
        return True
    if allowed is not None:
        return origin.rstrip("/") in {a.rstrip("/") for a in allowed}
    return urlsplit(origin).netloc.lower() == (_header(scope, b"host") or "").lower()


async def _json(send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None):
    body = json.dumps(error_body(code, message)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _ws_refuse(receive: Receive, send: Send, accept: bool, code: int, reason: str) -> None:
    """Before accept, a close turns into HTTP 403 at the handshake; after it, the client sees `code`."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if accept:
        await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": code, "reason": reason[:120]})


class Guard:
    """Pure ASGI middleware, so that streamed responses and WebSockets pass through untouched and
    an admission slot is held exactly as long as the request runs (a client disconnect ends it)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = _GATE
        if gate is None or scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if gate.security.cors_allow_origins and scope["type"] == "http":
            if gate.cors is None:
                gate.cors = CORSMiddleware(
                    self._guarded,
                    allow_origins=gate.security.cors_allow_origins,
                    allow_credentials=gate.security.cors_allow_credentials,
                    allow_methods=["GET", "POST"],
                    allow_headers=["authorization", "content-type"],
                    expose_headers=["x-session-id", "retry-after"],
                )
            return await gate.cors(scope, receive, send)
        return await self._guarded(scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate: Gate = _GATE  # type: ignore[assignment]
        path, ws = route_path(scope), scope["type"] == "websocket"
        is_open = path in OPEN_PATHS or path.startswith("/ui/")
        if not is_open and not token_ok(scope, gate.security.auth_token):
            metrics.count_rejection("unauthorized")
            if ws:
                return await _ws_refuse(receive, send, False, 1008, "unauthorized")
            return await _json(send, 401, "unauthorized", "a valid bearer token is required",
                               {"WWW-Authenticate": "Bearer"})
        if ws and not origin_ok(scope, gate.security.ws_allowed_origins):
            metrics.count_rejection("bad_origin")
            return await _ws_refuse(receive, send, False, 1008, "origin not allowed")

        slot: Any = None
        if ws and path == WS_PATH or not ws and path == TURN_PATH and scope.get("method") == "POST":
            try:
                slot = gate.admission.acquire("session" if ws else "turn", client_of(scope))
            except Overloaded as exc:
                metrics.count_rejection("overloaded")
                if ws:
                    return await _ws_refuse(receive, send, True, WS_TRY_AGAIN_LATER, str(exc))
                retry = str(gate.admission.cfg.retry_after_s)
                return await _json(send, 503, "overloaded", str(exc), {"Retry-After": retry})
        try:
            await self.app(scope, receive, send)
        finally:
            if slot is not None:
                slot.release()
