"""A table of bad (and odd but valid) client inputs over HTTP and WebSocket.

Every row names what is sent and the exact answer expected: an HTTP status with a JSON error code, an
error event in the turn's stream, or a transcript (odd formats that must work). After each row the
server must still be healthy (and a WebSocket session must still answer a ping); a real turn per
transport closes the corpus. Add rows by appending to HTTP_CASES / WS_CASES.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from tests import media_cases as m
from tests.conftest import JFK_WORDS, TEST_MAX_UPLOAD
from tests.test_stages import words
from tests.test_turn import post_turn

TURN = "/api/v1/turn"
TRAVERSAL = "..%2F..%2F..%2Fetc%2Fpasswd"


@dataclass(frozen=True)
class HttpCase:
    name: str
    request: Callable[[], dict[str, Any]]  # httpx.request keyword arguments (method, url path, ...)
    status: int
    code: str | None = None  # JSON error code, or the error event's code when status is 200
    expect_words: str | None = None  # status 200: the transcript must contain these words


def upload(make: Callable[[], bytes], name: str = "audio.bin", **form: str) -> Callable[[], dict]:
    return lambda: {"method": "POST", "url": TURN, "files": {"audio": (name, make())}, "data": form}


def post_file(url: str, field: str, make: Callable[[], bytes], name: str = "upload.bin") -> Callable[[], dict]:
    return lambda: {"method": "POST", "url": url, "files": {field: (name, make())}}


AVATARS, VOICES = "/api/v1/avatars", "/api/v1/voices"


def get(path: str) -> Callable[[], dict]:
    return lambda: {"method": "GET", "url": path}


def raw(method: str, content: bytes | None = None, **headers: str) -> Callable[[], dict]:
    return lambda: {"method": method, "url": TURN, "content": content, "headers": headers}


def chunked(size: int) -> Callable[[], dict]:
    """A multipart body streamed without Content-Length, so only the app's read cap can stop it."""
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def body():
        yield head
        for _ in range(size // 65536 + 1):
            yield b"\0" * 65536
        yield tail

    return lambda: {"method": "POST", "url": TURN, "content": body(),
                    "headers": {"content-type": f"multipart/form-data; boundary={boundary}"}}


JFK_FIRST_WORDS = "ask not what your country"

HTTP_CASES = [
    # -- the body and the form
    HttpCase("empty body", raw("POST"), 400, "missing_audio"),
    HttpCase("json body", raw("POST", b'{"audio": "x"}', **{"content-type": "application/json"}), 400, "missing_audio"),
    HttpCase("audio as a text field", lambda: {"method": "POST", "url": TURN, "data": {"audio": "hello"}}, 400, "missing_audio"),
    HttpCase("multipart without boundary", raw("POST", b"--x\r\n\r\n", **{"content-type": "multipart/form-data"}), 400, "bad_form"),
    HttpCase("two audio files", lambda: {"method": "POST", "url": TURN, "files": [("audio", ("a", b"1")), ("audio", ("b", b"2"))]}, 400, "bad_form"),
    HttpCase("too many fields", upload(m.jfk_flac, **{k: "1" for k in "abcdefghi"}), 400, "bad_form"),
    HttpCase("declared too large", raw("POST", b"x" * (TEST_MAX_UPLOAD + 64 * 1024 + 1), **{"content-type": "multipart/form-data; boundary=x"}), 413, "upload_too_large"),
    HttpCase("streamed too large", chunked(TEST_MAX_UPLOAD + 1), 413, "upload_too_large"),
    # -- the audio
    HttpCase("empty file", upload(lambda: b""), 400, "empty_audio"),
    HttpCase("text file", upload(lambda: b"hello world this is text"), 400, "undecodable_audio"),
    HttpCase("random bytes", upload(lambda: np.random.default_rng(0).bytes(65_536)), 400, "undecodable_audio"),
    HttpCase("zero bytes", upload(lambda: bytes(4096)), 400, "undecodable_audio"),
    HttpCase("flac header only", upload(lambda: m.jfk_flac()[:200]), 400, "undecodable_audio"),
    HttpCase("wav header only", upload(lambda: m.jfk_wav()[:44]), 400, "empty_audio"),
    HttpCase("png image", upload(m.png, "a.png"), 400, "no_audio_stream"),
    HttpCase("video without audio", upload(m.video_only_mp4, "a.mp4"), 400, "no_audio_stream"),
    HttpCase("NaN samples", upload(lambda: m.poisoned_wav(float("nan"))), 400, "non_finite_audio"),
    HttpCase("inf samples", upload(lambda: m.poisoned_wav(float("inf"))), 400, "non_finite_audio"),
    HttpCase("longer than max_audio_s", upload(lambda: m.silence_wav(61)), 413, "audio_too_long"),
    HttpCase("silence only", upload(lambda: m.silence_wav(2)), 200, "no_speech"),
    # -- odd but valid audio: must work
    HttpCase("truncated flac (first half)", upload(lambda: m.jfk_flac()[: len(m.jfk_flac()) // 2]), 200, expect_words="ask not"),
    HttpCase("wav 8 kHz", upload(lambda: m.jfk_wav(8_000)), 200, expect_words=JFK_FIRST_WORDS),
    HttpCase("wav 96 kHz", upload(lambda: m.jfk_wav(96_000)), 200, expect_words=JFK_FIRST_WORDS),
    HttpCase("wav 6 channels", upload(lambda: m.jfk_wav(16_000, channels=6)), 200, expect_words=JFK_FIRST_WORDS),
    # 8-bit samples hiss (48 dB below full scale): tiny.en heard "America asked not" in it at times
    HttpCase("wav u8", upload(lambda: m.jfk_wav(16_000, "PCM_U8")), 200, expect_words="not what your country can do"),
    HttpCase("wav s32", upload(lambda: m.jfk_wav(16_000, "PCM_32")), 200, expect_words=JFK_FIRST_WORDS),
    HttpCase("wav float", upload(lambda: m.jfk_wav(16_000, "FLOAT")), 200, expect_words=JFK_FIRST_WORDS),
    HttpCase("wav double", upload(lambda: m.jfk_wav(16_000, "DOUBLE")), 200, expect_words=JFK_FIRST_WORDS),
    HttpCase("webm opus 48 kHz", upload(lambda: m.encoded("webm", "libopus", 48_000)), 200, expect_words=JFK_FIRST_WORDS),
    HttpCase("mp3 44.1 kHz", upload(lambda: m.encoded("mp3", "libmp3lame", 44_100)), 200, expect_words=JFK_FIRST_WORDS),
    # -- ids and paths
    HttpCase("session id traversal", upload(m.jfk_flac, session_id="../../etc/passwd"), 400, "bad_session_id"),
    HttpCase("session id too long", upload(m.jfk_flac, session_id="a" * 65), 400, "bad_session_id"),
    HttpCase("session id with spaces", upload(m.jfk_flac, session_id="a b"), 400, "bad_session_id"),
    HttpCase("unknown segment", get("/api/v1/segments/doesnotexist"), 404, "segment_not_found"),
    HttpCase("segment traversal", get(f"/api/v1/segments/{TRAVERSAL}"), 404, "not_found"),
    HttpCase("segment id dots", get("/api/v1/segments/.."), 404, "not_found"),
    HttpCase("unknown session", get("/api/v1/sessions/doesnotexist"), 404, "session_not_found"),
    HttpCase("session traversal", get(f"/api/v1/sessions/{TRAVERSAL}"), 404, "not_found"),
    HttpCase("unknown avatar", get("/api/v1/avatars/nobody/image"), 404, "avatar_not_found"),
    HttpCase("avatar traversal", get(f"/api/v1/avatars/{TRAVERSAL}/image"), 404, "not_found"),
    HttpCase("avatar id encoded dots", get("/api/v1/avatars/%2e%2e/image"), 404, "avatar_not_found"),
    HttpCase("static file traversal", get("/ui/%2e%2e/pyproject.toml"), 404, "not_found"),
    HttpCase("unknown route", get("/api/v1/nothing-here"), 404, "not_found"),
    HttpCase("GET on the turn route", get(TURN), 405, "method_not_allowed"),
    # -- the turn's choices
    HttpCase("unsupported language", upload(m.jfk_flac, language="fr"), 422, "unsupported_language"),
    HttpCase("language not a code", upload(m.jfk_flac, language="x" * 300), 422, "unsupported_language"),
    HttpCase("unknown avatar id", upload(m.jfk_flac, avatar_id="nobody"), 404, "unknown_avatar"),
    HttpCase("avatar id traversal", upload(m.jfk_flac, avatar_id="../../etc/passwd"), 404, "unknown_avatar"),
    HttpCase("unknown voice id", upload(m.jfk_flac, voice_id="nobody"), 404, "unknown_voice"),
    HttpCase("voice id absolute path", upload(m.jfk_flac, voice_id="/etc/passwd"), 404, "unknown_voice"),
    # -- avatar uploads
    HttpCase("avatar: no image field", lambda: {"method": "POST", "url": AVATARS, "data": {"x": "1"}}, 400, "missing_image"),
    HttpCase("avatar: empty file", post_file(AVATARS, "image", lambda: b""), 400, "empty_image"),
    HttpCase("avatar: text, not an image", post_file(AVATARS, "image", lambda: b"hello, not a picture"), 400, "undecodable_image"),
    HttpCase("avatar: audio, not an image", post_file(AVATARS, "image", m.jfk_flac), 400, "undecodable_image"),
    HttpCase("avatar: decompression bomb", post_file(AVATARS, "image", lambda: m.png_claiming(50_000, 50_000)), 413, "image_too_large"),
    HttpCase("avatar: huge dimensions", post_file(AVATARS, "image", lambda: m.png_claiming(6_000, 6_000)), 413, "image_too_large"),
    HttpCase("avatar: no face in the image", post_file(AVATARS, "image", m.grey_png), 422, "no_face"),
    HttpCase("avatar image traversal", get(f"{AVATARS}/{TRAVERSAL}/image"), 404, "not_found"),
    # -- voice uploads
    HttpCase("voice: no audio field", lambda: {"method": "POST", "url": VOICES, "data": {"x": "1"}}, 400, "missing_audio"),
    HttpCase("voice: not audio", post_file(VOICES, "audio", m.png), 400, "no_audio_stream"),
    HttpCase("voice: garbage", post_file(VOICES, "audio", lambda: b"garbage" * 100), 400, "undecodable_audio"),
    HttpCase("voice: too short", post_file(VOICES, "audio", lambda: m.silence_wav(1)), 400, "voice_too_short"),
    HttpCase("voice: too long", post_file(VOICES, "audio", lambda: m.silence_wav(31)), 413, "voice_too_long"),
    HttpCase("unknown voice clip", get(f"{VOICES}/nobody/audio"), 404, "voice_not_found"),
]


async def _turn_answer(client: httpx.AsyncClient, case: HttpCase) -> tuple[int, list[dict] | dict]:
    """Status and either the JSON error body or the NDJSON events (up to the transcript if that is
    what the case waits for: leaving then also exercises the disconnect path)."""
    async with client.stream(**case.request()) as r:
        if r.status_code != 200 or not r.headers.get("content-type", "").startswith("application/x-ndjson"):
            return r.status_code, json.loads(await r.aread())
        events = []
        async for line in r.aiter_lines():
            if line:
                events.append(json.loads(line))
                if events[-1]["type"] in ("error", "done") or (case.expect_words and events[-1]["type"] == "transcript"):
                    break
        return r.status_code, events


def assert_healthy(base_url: str) -> None:
    r = httpx.get(f"{base_url}/healthz", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text


@pytest.mark.parametrize("case", HTTP_CASES, ids=lambda c: c.name)
def test_http_bad_input(serve_app, case: HttpCase):
    async def go():
        async with httpx.AsyncClient(base_url=serve_app, timeout=120) as client:
            return await _turn_answer(client, case)

    status, answer = asyncio.run(go())
    assert status == case.status, answer
    if status != 200:
        assert answer["error"]["code"] == case.code, answer
        assert answer["error"]["message"]
    elif case.code:
        assert [e["type"] for e in answer][:2] == ["turn", "transcript"]
        assert answer[-1] == {"type": "error", "code": case.code, "message": answer[-1]["message"]}
    else:
        transcript = next(e["text"] for e in answer if e["type"] == "transcript")
        assert case.expect_words in words(transcript), transcript
    assert_healthy(serve_app)


@dataclass(frozen=True)
class WsCase:
    name: str
    message: Callable[[], bytes | str]
    code: str


WS_CASES = [
    WsCase("empty binary", lambda: b"", "empty_audio"),
    WsCase("garbage binary", lambda: b"garbage that is not audio", "undecodable_audio"),
    WsCase("json sent as binary", lambda: b'{"type": "ping"}', "undecodable_audio"),
    WsCase("flac header only", lambda: m.jfk_flac()[:200], "undecodable_audio"),
    WsCase("wav header only", lambda: m.jfk_wav()[:44], "empty_audio"),
    WsCase("png image", m.png, "no_audio_stream"),
    WsCase("video without audio", m.video_only_mp4, "no_audio_stream"),
    WsCase("NaN samples", lambda: m.poisoned_wav(float("nan")), "non_finite_audio"),
    WsCase("inf samples", lambda: m.poisoned_wav(float("inf")), "non_finite_audio"),
    WsCase("longer than max_audio_s", lambda: m.silence_wav(61), "audio_too_long"),
    WsCase("binary too large", lambda: bytes(TEST_MAX_UPLOAD + 1), "upload_too_large"),
    WsCase("silence only", lambda: m.silence_wav(2), "no_speech"),
    WsCase("text not json", lambda: "{not json", "bad_message"),
    WsCase("empty text", lambda: "", "bad_message"),
    WsCase("json array", lambda: "[1, 2, 3]", "bad_message"),
    WsCase("json null", lambda: "null", "bad_message"),
    WsCase("json without type", lambda: '{"kind": "ping"}', "bad_message"),
    WsCase("unknown type", lambda: '{"type": "launch"}', "bad_message"),
    WsCase("type not a string", lambda: '{"type": 5}', "bad_message"),
    WsCase("deeply nested json", lambda: "[" * 2000 + "]" * 2000, "bad_message"),
    WsCase("audio as base64 text", lambda: "UklGRiQAAABXQVZFZm10IBAAAAABAAEA", "bad_message"),
    WsCase("text too long", lambda: json.dumps({"type": "ping", "pad": "x" * 10_000}), "message_too_large"),
    WsCase("settings: unknown avatar", lambda: '{"type": "settings", "avatar_id": "nobody"}', "unknown_avatar"),
    WsCase("settings: avatar traversal", lambda: '{"type": "settings", "avatar_id": "../../x"}', "unknown_avatar"),
    WsCase("settings: voice not a string", lambda: '{"type": "settings", "voice_id": 123}', "bad_message"),
    WsCase("mic: on not a boolean", lambda: '{"type": "mic", "on": "yes"}', "bad_message"),
    WsCase("interrupted: heard negative", lambda: '{"type": "interrupted", "turn_id": "t", "heard": -1}', "bad_message"),
    WsCase("ping with a stray field", lambda: '{"type": "ping", "x": 1}', "bad_message"),
    WsCase("settings: unsupported language", lambda: '{"type": "settings", "language": "de"}', "unsupported_language"),
    WsCase("push-to-talk with the mic off", lambda: '{"type": "ptt", "down": true}', "mic_off"),
]


async def recv_event(ws, timeout: float = 120) -> dict:
    """The next JSON event, skipping segment bytes."""
    while True:
        msg = await asyncio.wait_for(ws.recv(), timeout)
        if isinstance(msg, str):
            return json.loads(msg)


@pytest.mark.parametrize("case", WS_CASES, ids=lambda c: c.name)
def test_ws_bad_input(serve_app, case: WsCase):
    async def go():
        async with websockets.connect(serve_app.replace("http", "ws") + "/ws", max_size=None) as ws:
            assert (await recv_event(ws))["type"] == "session"
            await ws.send(case.message())
            while (event := await recv_event(ws))["type"] in ("turn", "transcript"):
                pass
            await ws.send(json.dumps({"type": "ping"}))  # the session goes on
            pong = await recv_event(ws)
            return event, pong

    event, pong = asyncio.run(go())
    assert event["type"] == "error" and event["code"] == case.code, event
    assert event["message"]
    assert pong == {"type": "pong"}
    assert_healthy(serve_app)


def test_a_good_turn_after_the_corpus(serve_app, jfk_bytes):
    """Runs after both tables (file order): the server still does real work, over both transports."""
    events, _ = post_turn(serve_app, jfk_bytes)
    assert events[-1]["type"] == "done" and JFK_WORDS in words(events[1]["text"])

    async def ws_turn():
        async with websockets.connect(serve_app.replace("http", "ws") + "/ws", max_size=None) as ws:
            await recv_event(ws)
            await ws.send(jfk_bytes)
            while (event := await recv_event(ws))["type"] not in ("done", "error"):
                pass
            return event

    assert asyncio.run(ws_turn())["type"] == "done"
