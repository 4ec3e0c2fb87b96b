"""The stage seam: backends plug in through the registry; the session's choices reach the stages;
speech streams inside a sentence as fragments; a barge-in stops the TTS and animator streams."""

import asyncio
import io
import json
from typing import ClassVar, Literal

import httpx
import numpy as np
import soundfile as sf
import websockets

from avatar_core.config import LlmConfig
from avatar_core.media import fragment_bounds
from avatar_core.protocols import ChatBackend
from avatar_core.registry import register
from deployments.llm import LLM
from serve_app.builder import stage_app
from tests.conftest import app_config, second_app, stage_stats, stages_when_idle
from tests.segments import decode_segment
from tests.test_turn import check_segments_match_reply, post_turn


@register("llm", "echo")
class EchoChat(ChatBackend):
    """A toy LLM backend: it answers with what it heard. All it takes is this class."""

    class Config(LlmConfig):
        backend: Literal["echo"] = "echo"
        prefix: str = "You said:"

    max_concurrency: ClassVar[int] = 4

    def __init__(self, cfg: Config):
        self.cfg = cfg

    @classmethod
    def languages(cls, cfg: Config) -> None:
        return None

    async def chat(self, messages, max_tokens, temperature):
        for word in f"{self.cfg.prefix} {messages[-1]['content']}".split():
            yield word + " "

    async def probe(self) -> None:
        pass


def test_a_toy_backend_registered_in_a_few_lines_runs_a_turn(serve_app, jfk_bytes):
    """A second application on the same cluster, its LLM stage the echo backend above."""
    from ray import serve

    cfg = app_config().model_copy(update={"llm": EchoChat.Config(prefix="You said:")})
    base = second_app(serve_app, "toy", cfg, own={"llm": stage_app(LLM, "llm", cfg.llm)})
    try:
        events, _ = post_turn(base, jfk_bytes)
        assert events[-1]["type"] == "done", events[-1]
        transcript = next(e["text"] for e in events if e["type"] == "transcript")
        reply = "".join(e["text"] for e in events if e["type"] == "reply")
        assert reply.split() == ["You", "said:", *transcript.split()]
        segments = check_segments_match_reply(events)
        heard = b"".join(httpx.get(f"{base}{s['url']}", timeout=30).content for s in segments[:1])
        assert decode_segment(heard).audio.std() > 0.01  # the echo was spoken
        assert stage_stats("LLM", app="toy")["completed"] >= 1
    finally:
        serve.delete("toy")


@register("llm", "broken")
class BrokenChat(ChatBackend):
    """A toy LLM backend with a bug: every other reply yields bytes where text belongs, which breaks
    the turn's own code (the transports cannot encode it; the splitter cannot cut it)."""

    class Config(LlmConfig):
        backend: Literal["broken"] = "broken"

    max_concurrency: ClassVar[int] = 1

    def __init__(self, cfg: Config):
        self.calls = 0

    @classmethod
    def languages(cls, cfg: Config) -> None:
        return None

    async def chat(self, messages, max_tokens, temperature):
        self.calls += 1
        yield b"not text" if self.calls % 2 else "It works this time."

    async def probe(self) -> None:
        pass


def test_a_bug_inside_a_turn_ends_it_with_internal_error_and_the_session_goes_on(serve_app, jfk_bytes):
    """Before the fix the WebSocket session swallowed the failure (no `done`, no `error`), and the
    HTTP stream broke off mid-response."""
    from ray import serve

    cfg = app_config().model_copy(update={"llm": BrokenChat.Config()})
    base = second_app(serve_app, "broken", cfg, own={"llm": stage_app(LLM, "llm", cfg.llm)})

    async def talk():
        async with websockets.connect(base.replace("http", "ws") + "/ws", max_size=None) as ws:
            hello = json.loads(await ws.recv())
            turns = []
            for _ in range(2):  # the broken reply, then a good one in the same session
                await ws.send(jfk_bytes)
                events = []
                while not events or events[-1]["type"] not in ("done", "error"):
                    msg = await asyncio.wait_for(ws.recv(), 120)
                    if isinstance(msg, str):
                        events.append(json.loads(msg))
                turns.append(events)
            return hello["session_id"], turns

    try:
        before = httpx.get(f"{base}/api/v1/stats", timeout=30).json()["turns"]
        session, (broken, good) = asyncio.run(talk())
        assert broken[-1]["type"] == "error" and broken[-1]["code"] == "internal_error", broken[-1]
        assert [e for e in broken if e["type"] == "error"] == [broken[-1]]  # one outcome, said once
        assert good[-1]["type"] == "done", good[-1]
        assert "".join(e["text"] for e in good if e["type"] == "reply") == "It works this time."
        messages = httpx.get(f"{base}/api/v1/sessions/{session}", timeout=30).json()["messages"]
        assert [m["content"] for m in messages if m["role"] == "assistant"] == ["It works this time."]
        # over HTTP: the broken reply ends the stream with the same error line, the next one works
        http_broken, _ = post_turn(base, jfk_bytes)
        assert http_broken[-1]["type"] == "error" and http_broken[-1]["code"] == "internal_error"
        assert post_turn(base, jfk_bytes)[0][-1]["type"] == "done"
        after = httpx.get(f"{base}/api/v1/stats", timeout=30).json()["turns"]
        assert after["started"] - before["started"] == 4
        assert after["completed"] - before["completed"] == 2 and after["failed"] - before["failed"] == 2
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
    finally:
        serve.delete("broken")


def test_language_and_voice_reach_the_stages(serve_app, jfk_bytes):
    """The stages' own record of the latest request, not the ingress's echo of the form."""
    clip = io.BytesIO()
    sf.write(clip, np.asarray(sf.read(io.BytesIO(jfk_bytes))[0], np.float32)[:16000 * 6], 16_000, format="WAV")
    voice = httpx.post(f"{serve_app}/api/v1/voices", files={"audio": ("me.wav", clip.getvalue())}, timeout=30).json()
    events, _ = post_turn(serve_app, jfk_bytes, extra={"voice_id": voice["id"], "language": "en"})
    assert events[-1]["type"] == "done"
    assert stage_stats("ASR")["last"]["language"] == "en"
    assert "Always answer in English." in stage_stats("LLM")["last"]["system"]
    tts = stage_stats("TTS")["last"]
    assert tts["voice_id"] == voice["id"] and tts["language"] == "en"
    hello = asyncio.run(session_event(serve_app))
    assert hello["voice_cloning"] is False and hello["languages"] == ["en"]  # Piper: one voice


async def session_event(base: str) -> dict:
    async with websockets.connect(base.replace("http", "ws") + "/ws") as ws:
        return json.loads(await ws.recv())


async def ws_turn(base: str, audio: bytes, on_segment=None) -> tuple[list[dict], list[bytes]]:
    """One whole-file turn over the WebSocket; `on_segment(ws, event)` may act on the first one."""
    async with websockets.connect(base.replace("http", "ws") + "/ws", max_size=None) as ws:
        await ws.recv()  # session
        await ws.send(audio)
        events, media = [], []
        while True:
            msg = await asyncio.wait_for(ws.recv(), 120)
            if isinstance(msg, bytes):
                media.append(msg)
                continue
            events.append(json.loads(msg))
            if events[-1]["type"] == "segment" and on_segment and len(media) == 0:
                if await on_segment(ws, events[-1]):
                    return events, media
            if events[-1]["type"] in ("done", "error"):
                return events, media


def face_step(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_sentences_arrive_as_fragments_of_whole_frames_joined_without_a_jump(serve_app, jfk_bytes):
    events, media = asyncio.run(ws_turn(serve_app, jfk_bytes))
    assert events[-1]["type"] == "done", events[-1]
    segments = check_segments_match_reply(events)
    decoded = [decode_segment(m) for m in media]
    assert len(decoded) == len(segments)
    for event, seg in zip(segments, decoded):
        assert seg.same_length_within_a_frame(), event
        assert abs(seg.video_s - event["duration_s"]) < 1e-6
    # each sentence is cut as the animator was asked: the turn's first fragment 0.4 s, then each at
    # most twice the one before (fragment_growth), up to 1 s
    cfg = app_config().animator
    first_sentence = [d for e, d in zip(segments, decoded) if e["sentence"] == 0]
    frames = [len(d.frames) for d in first_sentence]
    assert len(frames) >= 2, "the first sentence is longer than the 0.4 s first fragment"
    bounds = fragment_bounds(sum(frames), cfg.fps, cfg.first_fragment_s, cfg.fragment_s, cfg.fragment_growth)
    assert frames == [b - a for a, b in bounds]
    # the face moves on from fragment to fragment no more than it moves inside one
    inside = [face_step(d.frames[i], d.frames[i + 1]) for d in decoded for i in range(len(d.frames) - 1)]
    # (between fragments of one quality rung: where the animator's ladder changed the frame rate or
    # size, the picture changes by design; tests/test_playback.py checks what each rung makes)
    pairs = list(zip(zip(segments, decoded), zip(segments[1:], decoded[1:])))
    joins = [face_step(a.frames[-1], b.frames[0]) for (ea, a), (eb, b) in pairs if ea["rung"] == eb["rung"]]
    assert joins, [e["rung"] for e in segments]
    assert max(joins) <= max(inside) * 1.5 + 1.0, (joins, max(inside))


def test_barge_in_during_the_first_fragment_stops_the_tts_and_animator_streams(serve_app, handles, jfk_bytes):
    """Push-to-talk pressed the moment the first fragment arrives: the turn is cancelled, the stage
    streams of its sentence stop, and nothing new starts for it."""

    async def talk():
        async with websockets.connect(serve_app.replace("http", "ws") + "/ws", max_size=None) as ws:
            await ws.recv()  # session
            before = {n: stage_stats(n) for n in ("TTS", "Animator")}
            await ws.send(jfk_bytes)
            while (event := json.loads(await ws.recv()))["type"] != "segment":
                pass
            during = {n: stage_stats(n) for n in ("TTS", "Animator")}
            await ws.send(json.dumps({"type": "mic", "on": True}))
            await ws.send(json.dumps({"type": "ptt", "down": True}))  # the user talks over it
            while isinstance(msg := await ws.recv(), bytes) or json.loads(msg)["type"] != "cancelled":
                pass
            return before, during, event

    before, during, first = asyncio.run(talk())
    assert first["index"] == 0 and first["sentence"] == 0
    after = stages_when_idle(("TTS", "Animator"))
    assert during["Animator"]["in_flight"] == 1, "the first sentence's fragments were still coming"
    assert after["Animator"]["cancelled"] == before["Animator"]["cancelled"] + 1, (before, after)
    # TTS: whatever was running was cancelled, and no sentence after the barge-in was started
    tts_new = after["TTS"]["started"] - during["TTS"]["started"]
    assert tts_new == 0 or after["TTS"]["cancelled"] > before["TTS"]["cancelled"], (during, after)


