"""The front door scales out: conversations live in the session store, so any ingress replica serves any
session, and a conversation survives losing the replica it was on. Real Serve replicas (killed for
real), a real redis-server, real speech; every check reads the history's words.

Each test deploys its own ingress application (`second_app`) on the session's stages: two replicas
sharing Redis, or one on the SQLite default."""

import asyncio
import json
import time

import httpx
import pytest
import websockets

from avatar_core.config import StoreConfig
from tests.conftest import JFK_WORDS, app_config, second_app
from tests.redis_server import redis_server
from tests.test_turn import post_turn


def ingress_replicas(app: str) -> list[str]:
    """Actor names of the application's running Ingress replicas, from the Serve controller."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()["applications"][app]["deployments"]["Ingress"]
    return [r["actor_name"] for r in details["replicas"] if r["state"] == "RUNNING"]


def kill_ingress(app: str, base: str) -> None:
    """Kill every Ingress replica of `app` (the controller starts new ones) and wait until the new
    ones answer."""
    import ray

    old = set(ingress_replicas(app))
    for name in old:
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = set(ingress_replicas(app))
        if now and not now & old:
            try:
                if httpx.get(f"{base}/healthz", timeout=10).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.5)
    raise TimeoutError(f"{app}'s Ingress did not come back")


def history(base: str, session_id: str) -> list[dict]:
    r = httpx.get(f"{base}/api/v1/sessions/{session_id}", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["messages"]


def heard(events: list[dict]) -> str:
    return next(e["text"] for e in events if e["type"] == "transcript")


@pytest.fixture(scope="module")
def redis():
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def two_doors(serve_app, redis):
    """Application `doors`: two Ingress replicas on the session's stages, the store in Redis."""
    from ray import serve

    cfg = app_config().model_copy(update={"store": StoreConfig(backend="redis", url=redis.url, timeout_s=1)})
    base = second_app(serve_app, "doors", cfg, ingress={"num_replicas": 2})
    try:
        yield base
    finally:
        serve.delete("doors")


def test_an_http_conversation_keeps_its_history_on_either_replica(two_doors, jfk_bytes):
    events, headers = post_turn(two_doors, jfk_bytes)
    session, replicas, segments = headers["x-session-id"], {headers["x-replica"]}, [events]
    turns = 1
    while len(replicas) < 2 and turns < 12:  # Serve's router spreads requests over both replicas
        events, headers = post_turn(two_doors, jfk_bytes, session_id=session)
        assert headers["x-session-id"] == session and events[-1]["type"] == "done", events[-1]
        replicas.add(headers["x-replica"])
        segments.append(events)
        turns += 1
    assert len(replicas) == 2, "every turn went to one replica"
    messages = history(two_doors, session)
    assert [m["role"] for m in messages] == ["user", "assistant"] * turns
    assert all(JFK_WORDS in m["content"].lower() for m in messages[::2])
    # each reply as its turn streamed it, in order
    replies = ["".join(e["text"] for e in ev if e["type"] == "reply").strip() for ev in segments]
    assert [m["content"] for m in messages[1::2]] == replies
    # every segment answers from whichever replica the request reaches
    for url in [e["url"] for ev in segments for e in ev if e["type"] == "segment"][:6]:
        for _ in range(2):
            r = httpx.get(f"{two_doors}{url}", timeout=30)
            assert r.status_code == 200 and r.headers["content-type"].startswith("video/mp4") and len(r.content) > 1000


async def ws_turn(ws, audio: bytes) -> list[dict]:
    await ws.send(audio)
    events = []
    while not events or events[-1]["type"] not in ("done", "error"):
        msg = await asyncio.wait_for(ws.recv(), 120)
        if isinstance(msg, str):
            events.append(json.loads(msg))
    return events


def test_a_websocket_conversation_continues_after_its_replica_is_killed(two_doors, jfk_bytes):
    url = two_doors.replace("http", "ws") + "/ws"

    async def before():
        async with websockets.connect(url, max_size=None) as ws:
            hello = json.loads(await ws.recv())
            assert hello["type"] == "session" and hello["resumed"] is False
            await ws.send(json.dumps({"type": "settings", "language": "en"}))
            assert json.loads(await ws.recv())["type"] == "settings"
            events = await ws_turn(ws, jfk_bytes)
            assert events[-1]["type"] == "done", events[-1]
            kill_ingress("doors", two_doors)  # both replicas: the one holding this socket among them
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 60)
            return hello["session_id"], heard(events)

    async def after(session_id):
        async with websockets.connect(f"{url}?session_id={session_id}", max_size=None) as ws:
            hello = json.loads(await ws.recv())
            events = await ws_turn(ws, jfk_bytes)
            return hello, events

    session_id, first_heard = asyncio.run(before())
    hello, events = asyncio.run(after(session_id))
    assert hello["session_id"] == session_id and hello["resumed"] is True
    assert events[-1]["type"] == "done", events[-1]
    messages = history(two_doors, session_id)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == first_heard and JFK_WORDS in messages[2]["content"].lower()


def test_an_unknown_session_id_starts_a_new_conversation(two_doors):
    async def go():
        async with websockets.connect(two_doors.replace("http", "ws") + "/ws?session_id=nobody-here", max_size=None) as ws:
            return json.loads(await ws.recv())

    hello = asyncio.run(go())
    assert hello["resumed"] is False and hello["session_id"] != "nobody-here"
    assert history(two_doors, hello["session_id"]) == []


def test_losing_the_store_gives_clear_errors_and_service_resumes(two_doors, redis, jfk_bytes):
    url = two_doors.replace("http", "ws") + "/ws"

    async def open_session():
        ws = await websockets.connect(url, max_size=None)
        hello = json.loads(await ws.recv())
        return ws, hello

    async def go():
        ws, hello = await open_session()  # admitted while the store is up
        redis.stop()
        try:
            # a new HTTP turn: 503 with the reason
            r = httpx.post(f"{two_doors}/api/v1/turn", files={"audio": ("jfk.flac", jfk_bytes)}, timeout=60)
            assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
            assert httpx.get(f"{two_doors}/api/v1/sessions/{hello['session_id']}", timeout=30).status_code == 503
            health = httpx.get(f"{two_doors}/healthz", timeout=30)
            assert health.status_code == 503 and health.json()["store"] == "unreachable"
            # a new WebSocket session: closed with 1013 (try again later) and the reason
            with pytest.raises(websockets.ConnectionClosed) as closed:
                fresh, _ = await open_session()
                await asyncio.wait_for(fresh.recv(), 60)
            assert closed.value.rcvd.code == 1013 and "session store" in closed.value.rcvd.reason
            # the running session: its turn is answered, then an error says it was not remembered
            events = await ws_turn(ws, jfk_bytes)
            assert events[-1]["type"] == "done", events[-1]
            after_done = json.loads(await asyncio.wait_for(ws.recv(), 60))
            assert after_done == {"type": "error", "code": "store_unavailable",
                                  "message": "the session store is unreachable; try again shortly"}
        finally:
            redis.start()
        # back: the same session goes on, and new ones open
        events = await ws_turn(ws, jfk_bytes)
        assert events[-1]["type"] == "done", events[-1]
        await ws.close()
        ws2, hello2 = await open_session()
        await ws2.close()
        return hello, hello2

    hello, hello2 = asyncio.run(go())
    assert hello2["type"] == "session"
    # Redis restarted empty (no persistence in the test server): the session was written again after
    # the store came back, with the turn that followed
    messages = history(two_doors, hello["session_id"])
    assert messages[-2]["role"] == "user" and JFK_WORDS in messages[-2]["content"].lower()


def test_the_sqlite_default_keeps_conversations_across_an_ingress_restart(serve_app, jfk_bytes):
    """One machine, no server to run: the store is a file beside the uploads."""
    from ray import serve

    base = second_app(serve_app, "restart", app_config())
    try:
        events, headers = post_turn(base, jfk_bytes)
        session = headers["x-session-id"]
        said = "".join(e["text"] for e in events if e["type"] == "reply").strip()
        kill_ingress("restart", base)
        messages = history(base, session)
        assert [m["content"] for m in messages] == [heard(events), said]
        events2, headers2 = post_turn(base, jfk_bytes, session_id=session)
        assert headers2["x-replica"] != headers["x-replica"] and events2[-1]["type"] == "done"
        assert len(history(base, session)) == 4
    finally:
        serve.delete("restart")
