"""Hands-free talk over the WebSocket with real PCM: server-side endpointing, barge-in, settings."""

import asyncio
import json
import time

import httpx
import numpy as np
import websockets

from avatar_core.media import decode_audio
from tests.conftest import JFK, JFK_WORDS, ROOT, stage_stats, stages_when_idle
from tests.segments import decode_segment, image_rgb, shows
from tests.test_stages import words

CHUNK = 640  # 40 ms of 16 kHz PCM, what the page's AudioWorklet sends
JFK_TAIL = "what your country can do for you ask what you can do for your country"
NAMES = ("LLM", "TTS", "Animator")


def jfk_pcm16(silence_s: float) -> np.ndarray:
    pcm = decode_audio(JFK.read_bytes(), 60)
    pcm = np.concatenate([pcm, np.zeros(int(silence_s * 16_000), np.float32)])
    return (pcm * 32767).astype("<i2")


def voiced(pcm: np.ndarray) -> np.ndarray:
    """Talking over the avatar starts with speech: the clip from its first loud sample."""
    return pcm[np.argmax(np.abs(pcm) > 3000) :]


def turn_counts(serve_app) -> dict:
    """The app's turn counters (one Ingress replica: serve_config.yaml), shared by the whole session."""
    return httpx.get(f"{serve_app}/api/v1/stats", timeout=30).json()["turns"]


def barge_ins(events: list[dict]) -> int:
    """The barge-ins a session announced: each cancelled a running turn and said so. Besides the one
    a test makes, an early (speculative) start at JFK's "Americans," is cancelled and merged when he
    goes on, and that is a barge-in too."""
    return sum(e["type"] == "cancelled" and e["reason"] == "barge_in" for e in events)


def llm_when(condition, deadline_s: float = 10) -> dict:
    """The LLM stage's counters once `condition` holds for them (a replica posts its counters to the
    board as each request starts and ends, a moment after the client hears of it)."""
    end = time.monotonic() + deadline_s
    while not condition(now := stage_stats("LLM")):
        assert time.monotonic() < end, f"the LLM's counters did not get there in {deadline_s} s: {now}"
        time.sleep(0.02)
    return now


class Client:
    """A WebSocket client that records every JSON event and counts media messages."""

    def __init__(self, ws):
        self.ws, self.events, self.media = ws, [], 0
        self.blobs: list[bytes] = []  # every media message, in order

    async def until(self, kind: str, deadline_s: float = 120, where=lambda event: True, **match) -> dict:
        """The next event of `kind` with the fields `match` for which `where` holds; the rest are
        recorded on the way."""
        end = asyncio.get_running_loop().time() + deadline_s
        while True:
            msg = await asyncio.wait_for(self.ws.recv(), end - asyncio.get_running_loop().time())
            if isinstance(msg, bytes):
                self.media += 1
                self.blobs.append(msg)
                continue
            event = json.loads(msg)
            self.events.append(event)
            if event["type"] == kind and all(event.get(k) == v for k, v in match.items()) and where(event):
                return event

    async def media_of(self, event: dict) -> bytes:
        """The binary message that follows a segment or idle event."""
        msg = await asyncio.wait_for(self.ws.recv(), 60)
        assert isinstance(msg, bytes) and len(msg) == event["bytes"], event
        self.media += 1
        self.blobs.append(msg)
        return msg

    async def stream(self, pcm: np.ndarray) -> None:
        for k in range(0, len(pcm), CHUNK):
            await self.ws.send(pcm[k : k + CHUNK].tobytes())


def test_hands_free_turn_and_barge_in(serve_app, handles):
    """Speech over the avatar once it has spoken cancels its turn, counted as exactly the barge-ins
    the session announced; the new question is answered, and the history keeps of the first reply
    only the sentences the client got. (That the cancellation reaches the stage the turn is in:
    test_barge_in_while_the_llm_writes_cancels_its_request.)"""
    pcm = jfk_pcm16(2.5)

    async def talk():
        async with websockets.connect(serve_app.replace("http", "ws") + "/ws", max_size=None) as ws:
            c = Client(ws)
            session = await c.until("session")
            await ws.send(json.dumps({"type": "mic", "on": True}))
            await c.stream(pcm)
            first = await c.until("speech_start")
            await c.until("utterance_end")
            before = {n: stage_stats(n) for n in NAMES}  # before the turn's work
            # the whole sentence's turn: an early start at "Americans," or at "can do for you," may
            # have heard only that much before JFK went on and it was merged (tests/test_turn_taking.py)
            transcript = await c.until("transcript", where=lambda e: JFK_TAIL in words(e["text"]))
            await c.until("segment")  # the avatar speaks: now the user talks over it at once
            await c.stream(voiced(pcm))
            barge = await c.until("speech_start")
            cancelled = await c.until("cancelled")
            got = [e for e in c.events if e["type"] == "segment"]  # the first turn's, all before "cancelled"
            second = await c.until("transcript", where=lambda e: JFK_TAIL in words(e["text"]))  # merged, as above
            await c.until("done")
            after = await asyncio.to_thread(stages_when_idle, NAMES)  # every stage request ended
            return session["session_id"], c.events, first, transcript, barge, cancelled, got, second, before, after

    counted = turn_counts(serve_app)
    session, events, first, transcript, barge, cancelled, got, second, before, after = asyncio.run(talk())
    counted = {k: v - counted[k] for k, v in turn_counts(serve_app).items()}  # what this test caused
    assert first["barge_in"] is False
    # tiny.en has dropped "ask not" from the second, talked-over copy (speech from its first sample,
    # ended 0.2 s after it); the whole sentence, merged at JFK's pauses: tests/test_turn_taking.py
    assert JFK_WORDS in words(transcript["text"]) and JFK_TAIL in words(second["text"])
    assert barge["barge_in"] is True and cancelled["reason"] == "barge_in" and cancelled["merged"] is False
    types = [e["type"] for e in events]
    # the first turn never finished: its only end is the cancellation, then the second turn's done
    assert types.count("done") == 1 and types.index("cancelled") < types.index("done")
    # every stage request ended, completed or cancelled; none failed
    for n in NAMES:
        delta = {k: after[n][k] - before[n][k] for k in ("started", "completed", "cancelled", "failed")}
        assert delta["started"] == delta["completed"] + delta["cancelled"] and delta["failed"] == 0, (n, delta)
    # the app counted the barge-ins this session announced, no more and no fewer
    assert counted["barge_in"] == barge_ins(events) >= 1, (counted, types)
    # the history: the first reply as far as the client got it (whole sentences), then the second
    messages = httpx.get(f"{serve_app}/api/v1/sessions/{session}", timeout=30).json()["messages"]
    sentences = {e["sentence"]: e["text"] for e in got}
    # after the last cancellation: an early (speculative) start of the second turn may have written
    # a reply before it was cancelled and merged, which the client saw but the history drops
    last_cancel = len(types) - 1 - types[::-1].index("cancelled")
    second_reply = "".join(e["text"] for e in events[last_cancel:] if e["type"] == "reply").strip()
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2, messages
    assert JFK_WORDS in words(messages[0]["content"]) and JFK_TAIL in words(messages[2]["content"])
    assert messages[1]["content"] == " ".join(sentences[i] for i in sorted(sentences)), (messages[1], got)
    assert messages[3]["content"] == second_reply


def test_barge_in_while_the_llm_writes_cancels_its_request(serve_app):
    """Speech over the avatar while the LLM is writing its reply cancels that request on the LLM
    stage itself. The situation is made, not waited for: the user talks once the turn's first reply
    words are out, which the LLM's own counters confirm are still being written. The greedy reply to
    JFK is two sentences, about 0.9 s more of writing on 2 cores, and the barge-in lands about 0.1 s
    after the first words. At the barge-in the LLM counts one request cancelled and none completed;
    the user's words are then answered (merged with the first question when nothing was said yet)."""
    pcm = jfk_pcm16(2.5)

    async def talk():
        async with websockets.connect(serve_app.replace("http", "ws") + "/ws", max_size=None) as ws:
            c = Client(ws)
            await c.until("session")
            await ws.send(json.dumps({"type": "mic", "on": True}))
            await c.stream(pcm)
            # the whole sentence's turn: early starts at "Americans," and "for you," (which ASR may
            # punctuate as a finished sentence) are cancelled and merged when he goes on
            await c.until("transcript", where=lambda e: JFK_TAIL in words(e["text"]))
            await c.until("reply")  # the LLM has begun writing
            writing = await asyncio.to_thread(llm_when, lambda s: s["in_flight"] == 1)
            await c.stream(voiced(pcm))
            barge = await c.until("speech_start")
            cancelled = await c.until("cancelled")
            # the replica posts the cancellation as its stream closes, a moment after the ingress's
            stopped = await asyncio.to_thread(llm_when, lambda s: s["cancelled"] > writing["cancelled"])
            spoke = "segment" in [e["type"] for e in c.events]  # before the cancellation
            second = await c.until("transcript")
            await c.until("done")
            after = await asyncio.to_thread(stages_when_idle, NAMES)
            return c.events, writing, barge, cancelled, stopped, spoke, second, after

    before = stages_when_idle(NAMES)
    counted = turn_counts(serve_app)
    events, writing, barge, cancelled, stopped, spoke, second, after = asyncio.run(talk())
    counted = {k: v - counted[k] for k, v in turn_counts(serve_app).items()}
    assert writing["in_flight"] == 1 and barge["barge_in"] is True
    assert cancelled["reason"] == "barge_in" and cancelled["merged"] is (not spoke), (cancelled, spoke)
    # the LLM request that was writing is the one cancelled: one more cancelled, none completed
    assert stopped["cancelled"] == writing["cancelled"] + 1, (writing, stopped)
    assert stopped["completed"] == writing["completed"] and stopped["failed"] == writing["failed"], (writing, stopped)
    assert JFK_TAIL in words(second["text"])
    assert [e["type"] for e in events].count("done") == 1
    # over the whole test: the cancelled request and the answer's; every stage request ended, none failed
    for n in NAMES:
        delta = {k: after[n][k] - before[n][k] for k in ("started", "completed", "cancelled", "failed")}
        assert delta["started"] == delta["completed"] + delta["cancelled"] and delta["failed"] == 0, (n, delta)
    assert after["LLM"]["completed"] - before["LLM"]["completed"] == 1, (before["LLM"], after["LLM"])
    assert after["LLM"]["cancelled"] - before["LLM"]["cancelled"] >= 1
    assert counted["barge_in"] == barge_ins(events) >= 1, (counted, [e["type"] for e in events])


def test_interrupted_keeps_the_sentences_heard(serve_app):
    """The page reports how many sentences had started playing when the user talked over the avatar
    ("heard", and "cut" if the last was cut short): the history keeps those, marked "…", or drops
    the turn when none was heard."""
    audio = JFK.read_bytes()

    async def talk():
        async with websockets.connect(serve_app.replace("http", "ws") + "/ws", max_size=None) as ws:
            c = Client(ws)
            session = (await c.until("session"))["session_id"]
            await ws.send(audio)
            turn = await c.until("turn")
            fragment = await c.until("segment", sentence=0)  # the first sentence's first fragment
            await ws.send(json.dumps({"type": "interrupted", "turn_id": turn["turn_id"], "heard": 1, "cut": True}))
            await c.until("cancelled")
            kept = httpx.get(f"{serve_app}/api/v1/sessions/{session}", timeout=30).json()["messages"]
            await ws.send(audio)  # the next turn, interrupted before anything was heard
            turn = await c.until("turn")
            await c.until("segment")
            gone = json.dumps({"type": "interrupted", "turn_id": turn["turn_id"], "heard": 0, "cut": False})
            await ws.send(gone)
            await c.until("cancelled")
            await ws.send(gone)  # told again (the page and the server each saw the barge-in)...
            await ws.send(json.dumps({"type": "ping"}))
            await c.until("pong")  # ...and handled: it must not drop the exchange before
            dropped = httpx.get(f"{serve_app}/api/v1/sessions/{session}", timeout=30).json()["messages"]
            return fragment, kept, dropped

    fragment, kept, dropped = asyncio.run(talk())
    assert fragment["index"] == 0 and fragment["last"] is False  # heard counts sentences, not fragments
    assert [m["role"] for m in kept] == ["user", "assistant"] and JFK_WORDS in words(kept[0]["content"])
    assert kept[1]["content"] == fragment["text"] + "…"
    assert dropped == kept  # the second turn left nothing


def test_push_to_talk_idle_video_and_settings(serve_app):
    pcm = jfk_pcm16(0.0)

    async def talk():
        async with websockets.connect(serve_app.replace("http", "ws") + "/ws", max_size=None) as ws:
            c = Client(ws)
            hello = await c.until("session")
            await ws.send(json.dumps({"type": "settings", "language": "de"}))
            bad_language = await c.until("error")
            await ws.send(json.dumps({"type": "settings", "avatar_id": "0123456789abcdef"}))
            bad_avatar = await c.until("error")
            await ws.send(json.dumps({"type": "settings", "avatar_id": "default", "language": "en"}))
            ok = await c.until("settings")
            await ws.send(json.dumps({"type": "idle", "seconds": 0.8}))
            idle = await c.until("idle")
            idle_media = await c.media_of(idle)
            await ws.send(json.dumps({"type": "ptt", "down": True}))
            mic_off = await c.until("error")
            await ws.send(json.dumps({"type": "mic", "on": True}))
            await ws.send(b"\x01")  # half a sample
            bad_frame = await c.until("error")
            await ws.send(json.dumps({"type": "ptt", "down": True}))
            await c.stream(pcm)  # no trailing silence: releasing the key ends the utterance
            await ws.send(json.dumps({"type": "ptt", "down": False}))
            transcript = await c.until("transcript")
            done = await c.until("done")
            return hello, bad_language, bad_avatar, ok, idle, idle_media, mic_off, bad_frame, transcript, done

    hello, bad_language, bad_avatar, ok, idle, idle_media, mic_off, bad_frame, transcript, done = asyncio.run(talk())
    assert hello["languages"] == ["en"] and hello["avatar_id"] == "default"
    assert bad_language["code"] == "unsupported_language" and "en" in bad_language["message"]
    assert bad_avatar["code"] == "unknown_avatar"
    assert ok == {"type": "settings", "avatar_id": "default", "voice_id": "default", "language": "en"}
    assert idle["duration_s"] == 0.8 and idle["mime"].startswith("video/mp4")
    listening = decode_segment(idle_media)  # what the player shows: 20 frames of the default face
    assert len(listening.frames) == 20 and listening.fps == 25 and listening.same_length_within_a_frame()
    assert abs(listening.audio_s - 0.8) < 0.04 and np.abs(listening.audio).max() < 0.01  # silence
    default = image_rgb(httpx.get(f"{serve_app}/api/v1/avatars/default/image", timeout=30).content)
    grace = image_rgb((ROOT / "assets" / "avatars" / "grace_hopper.jpg").read_bytes())
    assert {shows(f, {"default": default, "grace": grace}) for f in listening.frames[::5]} == {"default"}
    assert mic_off["code"] == "mic_off" and bad_frame["code"] == "bad_audio_frame"
    assert JFK_WORDS in words(transcript["text"]) and done["type"] == "done"
    # (the idle render's counter is per replica and Serve may have scaled the Animator down since:
    # the video's content above says the idle path ran; tests/test_stages.py checks the counter)
