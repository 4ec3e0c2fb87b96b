"""Whole turns through Serve's HTTP proxy: NDJSON over HTTP and JSON + binary over the WebSocket."""

import asyncio
import json

import httpx
import numpy as np
import websockets

from tests.conftest import JFK_WORDS
from tests.segments import decode_segment
from tests.test_stages import words
from serve_app.sentences import SentenceSplitter


def post_turn(
    base_url: str, audio: bytes, session_id: str | None = None, extra: dict | None = None
) -> tuple[list[dict], httpx.Headers]:
    data = ({"session_id": session_id} if session_id else {}) | (extra or {})
    with httpx.stream(
        "POST", f"{base_url}/api/v1/turn", files={"audio": ("jfk.flac", audio)}, data=data, timeout=120
    ) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.iter_lines() if line], r.headers


def check_segments_match_reply(events: list[dict]) -> list[dict]:
    """Fragments arrive in order, each sentence of the streamed reply as one or more in a row, its
    last one marked, covering the whole reply."""
    reply = "".join(e["text"] for e in events if e["type"] == "reply")
    segments = [e for e in events if e["type"] == "segment"]
    assert [s["index"] for s in segments] == list(range(len(segments)))
    sentences = sorted({s["sentence"] for s in segments})
    assert [s["sentence"] for s in segments] == sorted(s["sentence"] for s in segments)  # in a row
    assert [s["sentence"] for s in segments if s["last"]] == sentences == list(range(len(sentences)))
    splitter = SentenceSplitter()
    texts = [next(s["text"] for s in segments if s["sentence"] == i) for i in sentences]
    assert texts == splitter.push(reply) + splitter.flush()
    return segments


def test_http_turn_with_real_speech(serve_app, jfk_bytes):
    events, headers = post_turn(serve_app, jfk_bytes)
    types = [e["type"] for e in events]
    assert types[0] == "turn" and types[1] == "transcript" and types[-1] == "done", types
    assert JFK_WORDS in words(events[1]["text"])
    assert types.count("reply") > 3
    segments = check_segments_match_reply(events)
    assert segments[-1]["sentence"] >= 1, "this reply has several sentences"
    sentence_audio = {}
    for seg in segments:
        r = httpx.get(f"{serve_app}{seg['url']}", timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == seg["mime"]
        decoded = decode_segment(r.content)
        assert decoded.same_length_within_a_frame()
        assert abs(decoded.video_s - seg["duration_s"]) < 1e-6
        sentence_audio.setdefault(seg["sentence"], []).append(decoded.audio)
    for sentence, parts in sentence_audio.items():  # a sentence's tail fragment may be its pause
        assert np.concatenate(parts).std() > 0.01, f"sentence {sentence} carries speech"
    timings = events[-1]["timings"]
    for stage in ("asr", "llm_first_token", "llm", "tts", "animator", "first_segment", "total"):
        assert timings[stage] > 0, stage
    assert timings["first_segment"] <= timings["total"]
    assert headers["x-session-id"] == events[0]["session_id"]


def test_http_session_keeps_the_conversation(serve_app, jfk_bytes):
    reply = lambda evs: "".join(e["text"] for e in evs if e["type"] == "reply").strip()  # noqa: E731
    first, headers = post_turn(serve_app, jfk_bytes)
    session = headers["x-session-id"]
    second, _ = post_turn(serve_app, jfk_bytes, session_id=session)
    assert second[0]["session_id"] == session and second[-1]["type"] == "done"
    r = httpx.get(f"{serve_app}/api/v1/sessions/{session}", timeout=30)
    assert r.status_code == 200
    messages = r.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2
    assert [m["content"] for m in messages[1::2]] == [reply(first), reply(second)]
    assert JFK_WORDS in words(messages[0]["content"])
    assert httpx.get(f"{serve_app}/api/v1/sessions/unknown", timeout=30).status_code == 404


def test_http_turn_rejects_a_missing_or_bad_upload(serve_app, jfk_bytes):
    r = httpx.post(f"{serve_app}/api/v1/turn", data={"x": "1"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_audio"
    r = httpx.post(f"{serve_app}/api/v1/turn", files={"audio": ("a.wav", b"not audio")}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "undecodable_audio"
    r = httpx.get(f"{serve_app}/api/v1/segments/nope", timeout=30)
    assert r.status_code == 404
    events, _ = post_turn(serve_app, jfk_bytes)  # and the next turn works
    assert events[-1]["type"] == "done"


def test_websocket_turn_sends_events_and_media(serve_app, jfk_bytes):
    async def talk():
        async with websockets.connect(serve_app.replace("http", "ws") + "/ws", max_size=None) as ws:
            hello = json.loads(await ws.recv())
            assert hello["type"] == "session" and hello["session_id"]
            await ws.send(b"garbage that is not audio")
            error = json.loads(await ws.recv())
            assert error["type"] == "error" and error["code"] == "undecodable_audio"
            await ws.send("{not json")
            assert json.loads(await ws.recv())["code"] == "bad_message"
            await ws.send(jfk_bytes)
            events, media = [], []
            while True:
                msg = await asyncio.wait_for(ws.recv(), 120)
                if isinstance(msg, bytes):
                    assert events[-1]["type"] == "segment" and events[-1]["bytes"] == len(msg)
                    media.append(msg)
                    continue
                events.append(json.loads(msg))
                if events[-1]["type"] in ("done", "error"):
                    return events, media

    events, media = asyncio.run(talk())
    assert events[-1]["type"] == "done", events[-1]
    transcript = next(e for e in events if e["type"] == "transcript")
    assert JFK_WORDS in words(transcript["text"])
    segments = check_segments_match_reply(events)
    assert len(media) == len(segments) >= 1
    for data in media:
        decoded = decode_segment(data)
        assert decoded.same_length_within_a_frame()


def test_websocket_cancel_stops_the_turn(serve_app, jfk_bytes):
    """A `cancel` right after the transcript: the turn ends with `cancelled`, and no stage finishes
    any work for it (the stages' own counters)."""
    from tests.test_faults import STAGES, assert_every_request_ended, wait_idle

    async def talk():
        async with websockets.connect(serve_app.replace("http", "ws") + "/ws", max_size=None) as ws:
            await ws.recv()  # session
            await ws.send(jfk_bytes)
            while json.loads(await ws.recv())["type"] != "transcript":
                pass
            await ws.send(json.dumps({"type": "cancel"}))
            seen = []
            while True:
                msg = await asyncio.wait_for(ws.recv(), 60)
                if isinstance(msg, str):
                    seen.append(json.loads(msg)["type"])
                    if seen[-1] == "cancelled":
                        break
            await ws.send(json.dumps({"type": "ping"}))
            while (msg := await asyncio.wait_for(ws.recv(), 30)) and (isinstance(msg, bytes) or json.loads(msg)["type"] != "pong"):
                pass
            return seen

    before, _ = wait_idle(None)
    seen = asyncio.run(talk())
    after, _ = wait_idle(None)
    assert seen[-1] == "cancelled" and "done" not in seen
    assert {n: after[n]["completed"] for n in STAGES if n != "ASR"} == {n: before[n]["completed"] for n in STAGES if n != "ASR"}
    assert after["ASR"]["completed"] == before["ASR"]["completed"] + 1  # the transcript came first
    assert after["LLM"]["started"] - before["LLM"]["started"] == after["LLM"]["cancelled"] - before["LLM"]["cancelled"]
    assert_every_request_ended(before, after)


def test_http_turns_count_in_stats(serve_app, jfk_bytes):
    """One count of turns for both transports (HTTP turns used to be missing from it)."""
    before = httpx.get(f"{serve_app}/api/v1/stats", timeout=30).json()["turns"]
    events, _ = post_turn(serve_app, jfk_bytes)
    assert events[-1]["type"] == "done"
    after = httpx.get(f"{serve_app}/api/v1/stats", timeout=30).json()["turns"]
    assert after["started"] == before["started"] + 1 and after["completed"] == before["completed"] + 1
    assert {k: after[k] - before[k] for k in ("failed", "no_speech", "cancelled")} == {
        "failed": 0, "no_speech": 0, "cancelled": 0}
