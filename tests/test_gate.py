"""The gate (serve_app/security.py) on the real ingress: bearer token, WebSocket Origin allow-list and
CORS, on a second application with every security setting on (tests/conftest.py `secure_app`, at
route prefix /secure); and admission counting as a unit."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from avatar_core.config import AdmissionConfig
from serve_app.admission import Admission, Overloaded
from tests.conftest import OTHER_ORIGIN, SECURE_TOKEN, JFK_WORDS
from tests.test_stages import words

BEARER = {"Authorization": f"Bearer {SECURE_TOKEN}"}


async def ws_hello(base: str, query: str = "", **kwargs) -> dict:
    async with websockets.connect(base.replace("http", "ws") + "/ws" + query, **kwargs) as ws:
        return json.loads(await asyncio.wait_for(ws.recv(), 30))


def refused_status(base: str, query: str = "", **kwargs) -> int:
    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(ws_hello(base, query, **kwargs))
    return refused.value.response.status_code


def test_bearer_token_guards_http_and_websocket_but_not_health_or_the_page(secure_app, jfk_bytes):
    # open: health, the page and its static files (they hold no data)
    assert httpx.get(f"{secure_app}/healthz", timeout=30).status_code == 200
    assert httpx.get(f"{secure_app}/", timeout=30).status_code == 200
    assert httpx.get(f"{secure_app}/ui/app.js", timeout=30).status_code == 200
    # everything else wants the token
    for method, path in (("GET", "/api/v1/stats"), ("GET", "/api/v1/avatars"), ("GET", "/api/v1/sessions/x"),
                         ("POST", "/api/v1/turn"), ("POST", "/api/v1/avatars")):
        r = httpx.request(method, f"{secure_app}{path}", timeout=30)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", (method, path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    wrong = httpx.get(f"{secure_app}/api/v1/stats", headers={"Authorization": "Bearer wrong"}, timeout=30)
    assert wrong.status_code == 401
    assert httpx.get(f"{secure_app}/api/v1/stats", headers=BEARER, timeout=30).json()["turns"]["started"] >= 0
    # a whole turn with the token
    with httpx.stream("POST", f"{secure_app}/api/v1/turn", files={"audio": ("a.flac", jfk_bytes)},
                      headers=BEARER, timeout=120) as r:
        events = [json.loads(line) for line in r.iter_lines() if line]
    assert events[-1]["type"] == "done" and JFK_WORDS in words(events[1]["text"])
    # the WebSocket: refused at the handshake without it; by query parameter or header with it
    assert refused_status(secure_app) == 403
    assert refused_status(secure_app, "?access_token=wrong") == 403
    assert asyncio.run(ws_hello(secure_app, f"?access_token={SECURE_TOKEN}"))["type"] == "session"
    assert asyncio.run(ws_hello(secure_app, additional_headers=BEARER))["type"] == "session"


def test_websocket_origin_allow_list(serve_app, secure_app):
    token = f"?access_token={SECURE_TOKEN}"
    assert asyncio.run(ws_hello(secure_app, token, origin=OTHER_ORIGIN))["type"] == "session"
    assert asyncio.run(ws_hello(secure_app, token, origin=serve_app))["type"] == "session"  # the page's own
    assert refused_status(secure_app, token, origin="https://evil.example") == 403


def test_cors_for_the_allowed_origin_only(serve_app, secure_app):
    preflight = {"Origin": OTHER_ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}
    r = httpx.options(f"{secure_app}/api/v1/turn", headers=preflight, timeout=30)  # before the token check
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == OTHER_ORIGIN
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    r = httpx.get(f"{secure_app}/api/v1/avatars", headers={"Origin": OTHER_ORIGIN, **BEARER}, timeout=30)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == OTHER_ORIGIN
    assert "x-session-id" in r.headers["access-control-expose-headers"].lower()
    evil = {**preflight, "Origin": "https://evil.example"}
    assert "access-control-allow-origin" not in httpx.options(f"{secure_app}/api/v1/turn", headers=evil, timeout=30).headers
    # the session's own app has CORS off (the default)
    r = httpx.options(f"{serve_app}/api/v1/turn", headers=preflight, timeout=30)
    assert "access-control-allow-origin" not in r.headers


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
