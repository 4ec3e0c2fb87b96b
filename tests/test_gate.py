"""The gate (serve_app/security.py) and admission counting on a small FastAPI app, without Ray:
bearer token, Origin allow-list, CORS and admission with non-default settings."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from serve_app import security
from serve_app.admission import Admission, Overloaded
from avatar_core.config import AdmissionConfig, AppConfig
from serve_app.errors import install_handlers


def make_client(**cfg) -> TestClient:
    app = FastAPI()
    app.add_middleware(security.Guard)
    install_handlers(app)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.post("/api/v1/turn")
    async def turn():
        return {"ok": True}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_json({"type": "session"})
        await websocket.close()

    security.configure(AppConfig.model_validate(cfg))
    return TestClient(app)


def test_bearer_token_guards_http_and_websocket_but_not_healthz():
    client = make_client(security={"auth_token": "s3cret"})
    assert client.get("/healthz").status_code == 200
    assert client.get("/ui/app.js").status_code == 404  # static files are open: not 401
    assert client.get("/api/v1/sessions/x").status_code == 401
    r = client.post("/api/v1/turn")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.post("/api/v1/turn", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/api/v1/turn", headers={"Authorization": "Bearer s3cret"}).json() == {"ok": True}
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws"):
        pass
    assert refused.value.code == 1008
    with client.websocket_connect("/ws?access_token=s3cret") as ws:
        assert ws.receive_json() == {"type": "session"}
    with client.websocket_connect("/ws", headers={"Authorization": "Bearer s3cret"}) as ws:
        assert ws.receive_json() == {"type": "session"}


def test_websocket_origin_allow_list():
    client = make_client(security={"ws_allowed_origins": ["https://app.example"]})
    with client.websocket_connect("/ws", headers={"Origin": "https://app.example"}) as ws:
        assert ws.receive_json() == {"type": "session"}
    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws", headers={"Origin": "https://evil.example"}):
        pass
    default = make_client()  # same host only
    with pytest.raises(WebSocketDisconnect), default.websocket_connect("/ws", headers={"Origin": "https://evil.example"}):
        pass
    with default.websocket_connect("/ws", headers={"Origin": "http://testserver"}) as ws:
        assert ws.receive_json() == {"type": "session"}


def test_cors_is_off_by_default_and_configurable():
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    off = make_client()
    assert "access-control-allow-origin" not in off.options("/api/v1/turn", headers=preflight).headers
    on = make_client(security={"cors_allow_origins": ["https://app.example"], "auth_token": "t"})
    r = on.options("/api/v1/turn", headers=preflight)  # preflight passes before the token check
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    r = on.post("/api/v1/turn", headers={"Origin": "https://app.example", "Authorization": "Bearer t"})
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-session-id" in r.headers["access-control-expose-headers"].lower()


def test_admission_over_http_gives_503_with_retry_after():
    client = make_client(admission={"max_turns": 0, "retry_after_s": 7})
    r = client.post("/api/v1/turn")
    assert r.status_code == 503 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["code"] == "overloaded"
    assert client.get("/healthz").status_code == 200


def test_admission_counts_global_and_per_client_and_releases_once():
    adm = Admission(AdmissionConfig(max_turns=3, max_turns_per_client=2))
    a1, a2 = adm.acquire("turn", "a"), adm.acquire("turn", "a")
    with pytest.raises(Overloaded, match="from this client"):
        adm.acquire("turn", "a")
    b1 = adm.acquire("turn", "b")
    with pytest.raises(Overloaded, match="on this server"):
        adm.acquire("turn", "c")
    a1.release()
    a1.release()  # idempotent: a double release must not free someone else's slot
    assert adm.snapshot()["turns"] == 2
    with adm.acquire("turn", "c"):
        assert adm.snapshot()["turns"] == 3
    for slot in (a2, b1):
        slot.release()
    assert adm.snapshot()["turns"] == 0 and not adm.per_client["turn"]
