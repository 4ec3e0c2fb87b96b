"""More than one conversation at once: two sessions side by side, and a burst of turns that makes
Serve scale a stage out (the test graph has serve_config.yaml's autoscaling, reacting faster)."""

import asyncio
import io
import json
import threading
import time

import httpx
import numpy as np
import soundfile as sf
import websockets
from ray import serve

from avatar_core.media import resample
from tests.conftest import JFK_WORDS, ROOT
from tests.segments import decode_segment, image_rgb, shows
from tests.test_faults import limits  # noqa: F401  (fixture)
from tests.test_stages import words
from tests.test_turn import check_segments_match_reply

MOON = "Tell me about the moon."


def spoken_question(handles, text: str) -> bytes:
    """A second question in real speech: the Piper voice saying `text`, as a WAV file."""
    speech = handles["TTS"].synthesize.remote(text).result()
    out = io.BytesIO()
    sf.write(out, resample(speech.pcm, speech.sample_rate, 16_000), 16_000, format="WAV")
    return out.getvalue()


async def ws_session(base: str, audio: bytes, avatar_id: str, started: asyncio.Event, wait_for: asyncio.Event):
    """One conversation: choose the avatar, wait for the other session's turn to begin, speak; return
    the session id, the turn's events and its media."""
    async with websockets.connect(base.replace("http", "ws") + "/ws", max_size=None) as ws:
        session = json.loads(await ws.recv())["session_id"]
        await ws.send(json.dumps({"type": "settings", "avatar_id": avatar_id}))
        assert json.loads(await ws.recv())["avatar_id"] == avatar_id
        await wait_for.wait()
        await ws.send(audio)
        events, media, times = [], [], {}
        while not events or events[-1]["type"] not in ("done", "error"):
            msg = await asyncio.wait_for(ws.recv(), 180)
            if isinstance(msg, bytes):
                media.append(msg)
                continue
            events.append(json.loads(msg))
            times.setdefault(events[-1]["type"], time.monotonic())
            if events[-1]["type"] == "turn":
                started.set()
        return session, events, media, times


def test_two_sessions_at_once_each_get_only_their_own(serve_app, handles, jfk_bytes):
    face = (ROOT / "assets" / "avatars" / "grace_hopper.jpg").read_bytes()
    grace = httpx.post(f"{serve_app}/api/v1/avatars", files={"image": ("grace.jpg", face)}, timeout=60).json()
    moon = spoken_question(handles, MOON)
    images = {
        "default": image_rgb(httpx.get(f"{serve_app}/api/v1/avatars/default/image", timeout=30).content),
        grace["id"]: image_rgb(httpx.get(f"{serve_app}{grace['preview_url']}", timeout=30).content),
    }

    async def both():
        a_started, b_started, go = asyncio.Event(), asyncio.Event(), asyncio.Event()
        go.set()
        return await asyncio.gather(  # B speaks as soon as A's turn has begun: the turns overlap
            ws_session(serve_app, jfk_bytes, "default", a_started, go),
            ws_session(serve_app, moon, grace["id"], b_started, a_started),
        )

    (a_id, a_events, a_media, a_times), (b_id, b_events, b_media, b_times) = asyncio.run(both())
    assert b_times["turn"] < a_times["done"] and a_times["turn"] < b_times["done"], (a_times, b_times)  # overlapping
    for events, media, avatar, question in (
        (a_events, a_media, "default", JFK_WORDS), (b_events, b_media, grace["id"], "about the moon"),
    ):
        assert events[-1]["type"] == "done", events[-1]
        transcript = next(e["text"] for e in events if e["type"] == "transcript")
        assert question in words(transcript), transcript
        segments = check_segments_match_reply(events)  # its own fragments, in order, its own reply
        assert len(media) == len(segments)
        for data in media:  # its own face in every fragment
            assert shows(decode_segment(data).frames[0], images) == avatar
    assert {e["session_id"] for e in a_events if e["type"] == "turn"} == {a_id}
    assert {e["session_id"] for e in b_events if e["type"] == "turn"} == {b_id}
    for sid, events, question in ((a_id, a_events, JFK_WORDS), (b_id, b_events, "about the moon")):
        messages = httpx.get(f"{serve_app}/api/v1/sessions/{sid}", timeout=30).json()["messages"]
        reply = "".join(e["text"] for e in events if e["type"] == "reply").strip()
        assert [m["role"] for m in messages] == ["user", "assistant"], messages
        assert question in words(messages[0]["content"]) and messages[1]["content"] == reply


def replicas_running() -> dict[str, int]:
    deployments = serve.status().applications["avatar"].deployments
    return {name: d.replica_states.get("RUNNING", 0) for name, d in deployments.items()}


def test_a_burst_of_turns_scales_a_stage_out_and_every_turn_completes_in_order(serve_app, jfk_bytes, limits):  # noqa: F811
    """Six turns at once from one client: the stages' queues grow, Serve adds a replica (the test
    graph upscales after 1 s instead of 5 s), and every turn still completes with its fragments in
    order."""
    limits(max_turns=8, max_turns_per_client=8)
    deadline = time.monotonic() + 120
    while set(replicas_running().values()) != {1}:  # an earlier test's extra replica has to go first
        assert time.monotonic() < deadline, replicas_running()
        time.sleep(1)
    seen: dict[str, int] = {}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            for name, n in replicas_running().items():
                seen[name] = max(seen.get(name, 0), n)
            time.sleep(0.25)

    async def turn(client: httpx.AsyncClient) -> list[dict]:
        async with client.stream("POST", "/api/v1/turn", files={"audio": ("a.flac", jfk_bytes)}) as r:
            assert r.status_code == 200, await r.aread()
            return [json.loads(line) async for line in r.aiter_lines() if line]

    async def burst(n: int):
        async with httpx.AsyncClient(base_url=serve_app, timeout=300) as client:
            return await asyncio.gather(*(turn(client) for _ in range(n)))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        results = []
        for _ in range(3):  # a burst, and another while the first replica is still being added
            results += asyncio.run(burst(6))
            if any(n >= 2 for n in seen.values()):
                break
    finally:
        stop.set()
        watcher.join()
    assert any(seen[name] >= 2 for name in ("ASR", "LLM", "TTS", "Animator")), seen
    for events in results:
        assert events[-1]["type"] == "done", events[-1]
        assert JFK_WORDS in words(next(e["text"] for e in events if e["type"] == "transcript"))
        check_segments_match_reply(events)
    assert seen["Ingress"] == 1  # the ingress keeps conversations in memory: one replica
    print(f"most replicas seen during the burst: {seen}")
