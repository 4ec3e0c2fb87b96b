"""The production LLM path, for real on CPU: the whole graph with its LLM stage on vLLM, served by Ray
Serve's own LLM deployment (`ray.serve.llm`), the ingress streaming OpenAI chat chunks from it.

    scripts/install.sh vllm && .venv-vllm/bin/python -m pytest -m vllm

Skipped where vLLM is not installed (the main venv). One graph for the module, bounded in time:
vLLM takes over a minute to start on 2 cores. What vLLM did is read from vLLM's own request log
(`enable_log_requests`): its request ids are `chatcmpl-<X-Request-ID>`, which Serve carries from
the client's HTTP or WebSocket request to the LLM server, so each turn names its engine request.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import time
import uuid
from importlib.util import find_spec
from pathlib import Path

import httpx
import pytest
import soundfile as sf
import websockets

from tests.conftest import JFK_WORDS, app_config, free_port, stages_when_idle
from tests.segments import decode_segment
from tests.test_faults import assert_nothing_left
from tests.test_stages import words
from tests.test_turn import check_segments_match_reply

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        find_spec("vllm") is None,
        reason="vLLM is not installed here: scripts/install.sh vllm, then .venv-vllm/bin/python -m pytest -m vllm",
    ),
]

READY_DEADLINE_S = 420  # measured: 100-110 s on 2 shared cores
ABORT_DEADLINE_S = 20
QUESTION = "Tell me about the moon."


def vllm_config():
    """The test config (greedy decoding, fresh storage) with the LLM on vLLM's CPU defaults, and a
    system prompt that asks for a long reply: the barge-in and leave tests need vLLM still writing
    when they interrupt it, and the shipped prompt's one or two sentences are done before the
    first fragment arrives."""
    from avatar_core.config import AppConfig

    base = app_config()
    prompt = "You are a friendly avatar. Answer every question at length, in at least eight full sentences."
    llm = AppConfig.model_validate({"llm": {"backend": "vllm", "temperature": 0.0, "system_prompt": prompt}}).llm
    return base.model_copy(update={"llm": llm})


@pytest.fixture(scope="module")
def vllm_app():
    """Ray, Serve and the graph in this process; `serve.run` waits without a deadline, so it runs in
    a thread while /healthz is polled against one."""
    import ray
    from ray import serve

    from serve_app.builder import build_app

    if ray.is_initialized():
        pytest.skip("the vLLM graph needs both cores to itself: run it alone with pytest -m vllm")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    failed: list[BaseException] = []

    def deploy() -> None:
        try:
            serve.run(build_app(vllm_config()), name="avatar", route_prefix="/")
        except BaseException as exc:  # reported by the wait below
            failed.append(exc)

    threading.Thread(target=deploy, daemon=True).start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, failed)
        yield base_url
    finally:
        serve.shutdown()
        ray.shutdown()


def wait_ready(base_url: str, failed: list) -> None:
    end, last = time.monotonic() + READY_DEADLINE_S, None
    while time.monotonic() < end:
        if failed:
            raise RuntimeError(f"the vLLM graph failed to deploy: {failed[0]!r}")
        try:
            r = httpx.get(f"{base_url}/healthz", timeout=5)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(1)
    raise TimeoutError(f"the vLLM graph was not healthy in {READY_DEADLINE_S} s; last answer: {last}")


def vllm_log() -> list[tuple[Path, str]]:
    """vLLM's log lines about chat requests, from the session's worker logs (the LLM server replica
    and its engine write to their worker's stdout)."""
    import ray

    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    return [
        (path, line.strip())
        for path in sorted(logs.glob("worker-*.out"))
        for line in path.read_text(errors="replace").splitlines()
        if "chatcmpl-" in line
    ]


def engine_saw(request_id: str) -> dict[str, list[Path]]:
    """Which worker logs say vLLM received, added and aborted `chatcmpl-<request_id>`."""
    says = {
        "received": re.compile(rf"Received request chatcmpl-{re.escape(request_id)}:"),
        "added": re.compile(rf"Added request chatcmpl-{re.escape(request_id)}-\w+\."),
        "aborted": re.compile(rf"Request chatcmpl-{re.escape(request_id)} aborted\."),
    }
    found: dict[str, list[Path]] = {k: [] for k in says}
    for path, line in vllm_log():
        for key, pattern in says.items():
            if pattern.search(line):
                found[key].append(path)
    return found


def wait_for_abort(request_id: str) -> dict[str, list[Path]]:
    end = time.monotonic() + ABORT_DEADLINE_S
    while not (saw := engine_saw(request_id))["aborted"]:
        assert time.monotonic() < end, f"vLLM never aborted chatcmpl-{request_id}: {saw}"
        time.sleep(0.2)
    return saw


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


async def http_turn(base_url: str, audio: bytes, request_id: str, leave_at: str | None = None) -> list[dict]:
    """One turn over HTTP, each event stamped with its arrival (s); `leave_at`: disconnect at the
    first event of that type."""
    started, events = time.perf_counter(), []
    async with httpx.AsyncClient(timeout=180) as client:
        async with client.stream(
            "POST", f"{base_url}/api/v1/turn", files={"audio": ("in", audio)}, headers={"X-Request-ID": request_id}
        ) as r:
            assert r.status_code == 200, await r.aread()
            async for line in r.aiter_lines():
                events.append({**json.loads(line), "at": time.perf_counter() - started})
                if events[-1]["type"] == leave_at:
                    break
    return events


def reply_of(events: list[dict]) -> str:
    return "".join(e["text"] for e in events if e["type"] == "reply")


def spoken_question(text: str) -> bytes:
    """A second speaker's question: Piper's voice from the graph's own TTS stage, as a WAV file."""
    from ray import serve

    speech = serve.get_deployment_handle("TTS", app_name="avatar").synthesize.remote(text).result(timeout_s=60)
    buf = io.BytesIO()
    sf.write(buf, speech.pcm, speech.sample_rate, format="WAV")
    return buf.getvalue()


def test_the_llm_stage_is_rays_llm_server_running_vllm(vllm_app):
    from ray import serve

    llm_config = serve.get_deployment_handle("LLM", app_name="avatar").llm_config.remote().result(timeout_s=30)
    assert type(llm_config).__name__ == "LLMConfig"
    assert llm_config.model_id == "smollm2-135m-instruct"
    assert llm_config.experimental_configs["stream_batching_interval_ms"] == 10
    assert llm_config.accelerator_config.kind == "cpu"


def test_a_turn_streams_a_reply_through_vllm_into_sentences_speech_and_video(vllm_app, jfk_bytes):
    request_id = new_id("turn")
    events = asyncio.run(http_turn(vllm_app, jfk_bytes, request_id))
    types = [e["type"] for e in events]
    assert types[0] == "turn" and types[1] == "transcript" and types[-1] == "done", events[-1]
    assert JFK_WORDS in words(events[1]["text"])
    assert types.count("reply") > 3, "the reply streams in many deltas"
    assert len(reply_of(events).split()) > 5
    segments = check_segments_match_reply(events)
    for seg in segments[:3]:
        decoded = decode_segment(httpx.get(f"{vllm_app}{seg['url']}", timeout=30).content)
        assert decoded.same_length_within_a_frame() and len(decoded.frames) > 0
    heard = decode_segment(httpx.get(f"{vllm_app}{segments[0]['url']}", timeout=30).content)
    assert heard.audio.std() > 0.01, "the first fragment carries speech"
    saw = engine_saw(request_id)
    assert len(saw["received"]) == 1 and len(saw["added"]) == 1, saw  # one engine request, vLLM's
    assert not saw["aborted"], saw
    assert events[-1]["timings"]["llm_first_token"] > 0


def test_two_concurrent_turns_are_batched_by_the_one_engine(vllm_app, jfk_bytes):
    from ray import serve

    question = spoken_question(QUESTION)
    ids = [new_id("jfk"), new_id("moon")]

    async def both():
        return await asyncio.gather(http_turn(vllm_app, jfk_bytes, ids[0]), http_turn(vllm_app, question, ids[1]))

    jfk, moon = asyncio.run(both())
    for events in (jfk, moon):
        assert events[-1]["type"] == "done", events[-1]
        check_segments_match_reply(events)  # each turn's fragments in order, covering its reply
    assert JFK_WORDS in words(jfk[1]["text"]) and "moon" in words(moon[1]["text"])
    assert reply_of(jfk).strip() != reply_of(moon).strip(), "each turn got its own reply"
    assert "moon" in reply_of(moon).lower()
    # Both replies were being written at once: each stream's first delta came before the other's last.
    spans = [[e["at"] for e in events if e["type"] == "reply"] for events in (jfk, moon)]
    assert spans[0][0] < spans[1][-1] and spans[1][0] < spans[0][-1], spans
    # ... by one engine: one LLM replica, and vLLM took both requests in the same process.
    status = serve.status().applications["avatar"].deployments["LLM"]
    assert status.replica_states == {"RUNNING": 1}, status.replica_states
    saws = [engine_saw(i) for i in ids]
    assert all(len(s["added"]) == 1 and not s["aborted"] for s in saws), saws
    assert saws[0]["added"] == saws[1]["added"], saws


def test_barge_in_makes_vllm_abort_the_request(vllm_app, jfk_bytes):
    """Push-to-talk pressed when the first fragment arrives, while vLLM is still writing the reply
    (about 8 s for this one; the first fragment comes after about 2.5 s)."""
    request_id = new_id("barge")
    before = httpx.get(f"{vllm_app}/api/v1/stats", timeout=30).json()["turns"]

    async def talk():
        ws_url = vllm_app.replace("http", "ws") + "/ws"
        async with websockets.connect(ws_url, max_size=None, additional_headers={"X-Request-ID": request_id}) as ws:
            await ws.recv()  # session
            await ws.send(jfk_bytes)
            seen = []
            while isinstance(msg := await ws.recv(), bytes) or (event := json.loads(msg))["type"] != "segment":
                if not isinstance(msg, bytes):
                    seen.append(event)
            await ws.send(json.dumps({"type": "mic", "on": True}))
            await ws.send(json.dumps({"type": "ptt", "down": True}))  # the user talks over the avatar
            while isinstance(msg := await ws.recv(), bytes) or (event := json.loads(msg))["type"] != "cancelled":
                if not isinstance(msg, bytes):
                    seen.append(event)
            return seen, event

    seen, cancelled = asyncio.run(talk())
    assert cancelled["reason"] == "barge_in"
    assert "done" not in [e["type"] for e in seen]
    saw = wait_for_abort(request_id)  # vLLM's own log: the engine aborted this request
    assert len(saw["added"]) == 1 and saw["aborted"] == saw["added"], saw
    # our side: the turn ended as a barge-in, and nothing of it is left running
    after = httpx.get(f"{vllm_app}/api/v1/stats", timeout=30).json()["turns"]
    assert after["cancelled"] == before["cancelled"] + 1 and after["barge_in"] == before["barge_in"] + 1
    assert_nothing_left()
    stages_when_idle(("TTS", "Animator"))  # their streams for this turn stop too (counters post async)


def test_a_client_that_leaves_makes_vllm_abort_the_request_and_the_next_turn_works(vllm_app, jfk_bytes):
    request_id = new_id("gone")
    events = asyncio.run(http_turn(vllm_app, jfk_bytes, request_id, leave_at="reply"))
    assert events[-1]["type"] == "reply"  # left at the first delta, the reply still being written
    saw = wait_for_abort(request_id)
    assert len(saw["added"]) == 1 and saw["aborted"] == saw["added"], saw
    assert_nothing_left()
    next_id = new_id("next")
    events = asyncio.run(http_turn(vllm_app, jfk_bytes, next_id))
    assert events[-1]["type"] == "done" and reply_of(events).strip()
    assert not engine_saw(next_id)["aborted"]
