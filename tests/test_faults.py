"""Disconnects, barge-in, dead replicas and overload, judged by the stages' own counters.

Cancellation is shown by each stage's `stats()`: the request that was running when the client left
ends as `cancelled` (not `completed`) and `in_flight` returns to 0 before a deadline. The measured
cancellation latency is printed here and reported by benchmarks/soak.py; tests hold no timing limits.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import ray
import websockets
from ray import serve

from tests.conftest import stage_stats
from tests.test_bad_inputs import recv_event
from tests.test_turn import post_turn

STAGES = ("ASR", "LLM", "TTS", "Animator")
ATTEMPTS = 4  # a reply can finish before the client leaves; then the case is tried again


def stats(handles) -> dict[str, dict[str, int]]:
    return {name: stage_stats(name) for name in STAGES}


def wait_idle(handles, deadline_s: float = 20) -> tuple[dict, float]:
    """Counters once no stage has work in flight, and how long that took."""
    start = time.monotonic()
    while True:
        now = stats(handles)
        if all(s["in_flight"] == 0 for s in now.values()):
            return now, time.monotonic() - start
        assert time.monotonic() - start < deadline_s, f"work still in flight: {now}"
        time.sleep(0.02)


def assert_nothing_left(deadline_s: float = 20) -> dict:
    """The ingress holds no turn tasks and no admission slots once the client has gone."""
    ingress = serve.get_deployment_handle("Ingress", app_name="avatar")
    end = time.monotonic() + deadline_s
    while (d := ingress.diagnostics.remote().result(timeout_s=30))["turn_tasks"] or d["turns"] or d["sessions"]:
        assert time.monotonic() < end, d
        time.sleep(0.05)
    return d


def assert_cancelled(before: dict, during: dict, after: dict, stage: str = "LLM") -> None:
    """The stage's request that was running when the client left was cancelled, not finished."""
    assert during[stage]["in_flight"] == 1, during
    assert after[stage]["cancelled"] == before[stage]["cancelled"] + 1, (before, after)
    assert after[stage]["completed"] == before[stage]["completed"], (before, after)


def assert_every_request_ended(before: dict, after: dict) -> None:
    """Each stage request started since `before` ended as completed or cancelled; none failed."""
    for name in STAGES:
        delta = {k: after[name][k] - before[name][k] for k in ("started", "completed", "cancelled", "failed")}
        assert delta["started"] == delta["completed"] + delta["cancelled"] and delta["failed"] == 0, (name, delta)


def test_http_disconnect_cancels_stage_work(serve_app, handles, jfk_bytes):
    for attempt in range(ATTEMPTS):
        before, _ = wait_idle(handles)
        with httpx.stream("POST", f"{serve_app}/api/v1/turn", files={"audio": ("a.flac", jfk_bytes)},
                          timeout=120) as r:
            lines = r.iter_lines()
            while json.loads(next(lines))["type"] != "reply":
                pass
            during = stats(handles)
        # leaving the `with` closed the connection mid-turn
        after, seconds = wait_idle(handles)
        print(f"HTTP disconnect: stages idle {seconds:.3f} s after the client left")
        if during["LLM"]["in_flight"] == 1:
            break
    assert_cancelled(before, during, after)
    assert_every_request_ended(before, after)
    assert_nothing_left()


async def _ws_until(ws, kind: str) -> None:
    while (await recv_event(ws))["type"] != kind:
        pass


def test_websocket_close_cancels_stage_work(serve_app, handles, jfk_bytes):
    async def talk():
        async with websockets.connect(serve_app.replace("http", "ws") + "/ws", max_size=None) as ws:
            await recv_event(ws)
            await ws.send(jfk_bytes)
            await _ws_until(ws, "reply")
            return await asyncio.to_thread(stats, handles)

    for attempt in range(ATTEMPTS):
        before, _ = wait_idle(handles)
        during = asyncio.run(talk())
        after, seconds = wait_idle(handles)
        print(f"WebSocket close: stages idle {seconds:.3f} s after the client left")
        if during["LLM"]["in_flight"] == 1:
            break
    assert_cancelled(before, during, after)
    assert_nothing_left()


def test_barge_in_cancels_and_the_new_turn_completes(serve_app, handles, jfk_bytes):
    async def talk():
        async with websockets.connect(serve_app.replace("http", "ws") + "/ws", max_size=None) as ws:
            await recv_event(ws)
            await ws.send(jfk_bytes)
            await _ws_until(ws, "reply")
            during = await asyncio.to_thread(stats, handles)
            await ws.send(jfk_bytes)  # the user speaks again: barge-in
            seen = []
            while not seen or seen[-1] not in ("done", "error"):
                seen.append((await recv_event(ws))["type"])
            return during, seen

    for attempt in range(ATTEMPTS):
        before, _ = wait_idle(handles)
        during, seen = asyncio.run(talk())
        after, _ = wait_idle(handles)
        if during["LLM"]["in_flight"] == 1:
            break
    assert "cancelled" in seen and seen[-1] == "done", seen
    assert after["LLM"]["cancelled"] == before["LLM"]["cancelled"] + 1
    assert after["LLM"]["completed"] == before["LLM"]["completed"] + 1  # only the second turn's
    assert_nothing_left()


# ---- overload ---------------------------------------------------------------------------------


@pytest.fixture
def limits(serve_app):
    """Set admission limits on the running ingress for one test, then restore them."""
    ingress = serve.get_deployment_handle("Ingress", app_name="avatar")
    assert_nothing_left()  # earlier tests' connections are closed on the server side too
    original = ingress.admission.remote().result(timeout_s=30)["limits"]
    yield lambda **kw: ingress.admission.remote(kw).result(timeout_s=30)
    ingress.admission.remote(original).result(timeout_s=30)


def test_http_overload_gives_503_and_admitted_turns_finish(serve_app, jfk_bytes, limits):
    limits(max_turns=1)

    async def go():
        async with httpx.AsyncClient(base_url=serve_app, timeout=120) as client:
            async with client.stream("POST", "/api/v1/turn", files={"audio": ("a.flac", jfk_bytes)}) as first:
                lines = first.aiter_lines()
                assert json.loads(await anext(lines))["type"] == "turn"
                refused = await client.post("/api/v1/turn", files={"audio": ("a.flac", jfk_bytes)})
                rest = [json.loads(line) async for line in lines if line]
            return refused, rest

    refused, rest = asyncio.run(go())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
    assert refused.json()["error"]["code"] == "overloaded"
    assert rest[-1]["type"] == "done", rest[-1]
    limits(max_turns=8)
    assert post_turn(serve_app, jfk_bytes)[0][-1]["type"] == "done"  # the slot was given back


@pytest.mark.parametrize("limit", ["max_sessions", "max_sessions_per_client"])
def test_websocket_overload_closes_with_1013(serve_app, limits, limit):
    limits(**{limit: 1})

    async def go():
        url = serve_app.replace("http", "ws") + "/ws"
        async with websockets.connect(url) as first:
            assert (await recv_event(first))["type"] == "session"
            async with websockets.connect(url) as second:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(second.recv(), 30)
            await first.send(json.dumps({"type": "ping"}))  # the admitted session is unaffected
            return closed.value.rcvd, await recv_event(first)

    close, pong = asyncio.run(go())
    assert close.code == 1013 and "too many sessions" in close.reason
    assert pong == {"type": "pong"}


def test_websocket_turn_over_the_limit_gets_an_error_event(serve_app, limits, jfk_bytes):
    limits(max_turns=0)

    async def go():
        async with websockets.connect(serve_app.replace("http", "ws") + "/ws", max_size=None) as ws:
            await recv_event(ws)
            await ws.send(jfk_bytes)
            return await recv_event(ws)

    event = asyncio.run(go())
    assert event["type"] == "error" and event["code"] == "overloaded", event


# ---- security (the defaults) -----------------------------------------------------------------


def test_websocket_from_another_origin_is_refused(serve_app):
    async def go(origin):
        async with websockets.connect(serve_app.replace("http", "ws") + "/ws", origin=origin) as ws:
            return (await recv_event(ws))["type"]

    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(go("http://evil.example"))
    assert refused.value.response.status_code == 403
    assert asyncio.run(go(serve_app)) == "session"  # same host: allowed


# ---- a replica dies mid-turn (last: it replaces replicas) -------------------------------------


def busy_replica(deployment: str):
    """The live replica of `deployment` that is working now, if any (the deployment may have
    scaled out: the StageBoard says which replica has a request in flight)."""
    from deployments.counters import board

    for key, row in ray.get(board().rows_of.remote("avatar", deployment)).items():
        if row["in_flight"]:
            try:
                return ray.get_actor(key, namespace="serve")
            except ValueError:  # a replica killed earlier left its row behind
                continue
    return None


@pytest.mark.parametrize("stage", ["LLM", "Animator"])
def test_killed_replica_gives_an_error_event_then_recovers(serve_app, handles, jfk_bytes, stage):
    for attempt in range(ATTEMPTS):
        wait_idle(handles)
        with httpx.stream("POST", f"{serve_app}/api/v1/turn", files={"audio": ("a.flac", jfk_bytes)},
                          timeout=120) as r:
            events = []
            lines = (json.loads(line) for line in r.iter_lines() if line)
            while True:  # wait until the stage is working on this turn, then kill its replica
                events.append(next(lines))
                if events[-1]["type"] in ("done", "error"):
                    break
                if events[-1]["type"] in ("reply", "segment") and (replica := busy_replica(stage)):
                    ray.kill(replica, no_restart=True)
                    killed_at = time.monotonic()
                    events += list(lines)
                    break
        if events[-1]["type"] == "error":
            break
    assert events[-1]["type"] == "error" and events[-1]["code"] == "stage_failed", events[-1]
    assert stage.lower() in events[-1]["message"].lower()
    print(f"{stage} killed: error event after {time.monotonic() - killed_at:.2f} s")

    deadline = time.monotonic() + 180
    while True:  # Serve notices the dead replica and starts a new one
        last = post_turn(serve_app, jfk_bytes)[0][-1]
        if last["type"] == "done":
            break
        assert time.monotonic() < deadline, f"no successful turn after the kill; last: {last}"
        time.sleep(1)


def test_stage_timeout_gives_an_error_and_cancels_the_replica_work(serve_app, handles):
    """`call_stage` against the real TTS replica with a deadline it cannot meet.

    Under load the deadline can pass before the request reaches the replica; then the replica never
    starts it (nothing to cancel there) and the case is tried again."""
    from serve_app.turn import StageError, call_stage

    long_text = "This sentence is long enough to keep the voice busy for a while. " * 6

    async def go():
        with pytest.raises(StageError) as err:
            await call_stage("tts", handles["TTS"].synthesize.remote(long_text), 0.05)
        return err.value

    for _ in range(ATTEMPTS):
        before, _ = wait_idle(handles)
        err = asyncio.run(go())
        after, _ = wait_idle(handles)
        assert err.code == "stage_timeout" and "tts" in err.message
        started = after["TTS"]["started"] - before["TTS"]["started"]
        assert after["TTS"]["cancelled"] - before["TTS"]["cancelled"] == started, (before, after)
        assert after["TTS"]["completed"] == before["TTS"]["completed"], (before, after)
        if started:
            break
    assert started == 1, "the request never reached the TTS replica before its deadline"
