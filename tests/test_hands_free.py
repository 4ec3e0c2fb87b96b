"""Hands-free talk over the WebSocket with real PCM: server-side endpointing, barge-in, settings."""

import asyncio
import json

import httpx
import numpy as np
import websockets

from avatar_core.media import decode_audio
from avatar_core.config import EndpointingConfig
from serve_app.endpointing import Endpointer, SpeechStart, UtteranceEnd
from tests.conftest import JFK, JFK_WORDS, stage_stats
from tests.test_stages import words

CHUNK = 640  # 40 ms of 16 kHz PCM, what the page's AudioWorklet sends


def jfk_pcm16(silence_s: float) -> np.ndarray:
    pcm = decode_audio(JFK.read_bytes(), 60)
    pcm = np.concatenate([pcm, np.zeros(int(silence_s * 16_000), np.float32)])
    return (pcm * 32767).astype("<i2")


def test_endpointer_finds_one_utterance_in_real_speech():
    pcm = jfk_pcm16(2.0)
    ep = Endpointer(EndpointingConfig(end_silence_s=1.3))
    events = [e for k in range(0, len(pcm), CHUNK) for e in ep.push(pcm[k : k + CHUNK])]
    assert [type(e) for e in events] == [SpeechStart, UtteranceEnd]
    assert 10.0 < len(events[1].pcm) / 16_000 < 12.5  # the whole 11 s speech, not its pauses
    # the default (0.7 s) takes JFK's 1.1 s pauses as ends of utterances
    ep = Endpointer(EndpointingConfig())
    ends = [e for k in range(0, len(pcm), CHUNK) for e in ep.push(pcm[k : k + CHUNK]) if isinstance(e, UtteranceEnd)]
    assert len(ends) == 3
    assert Endpointer(EndpointingConfig()).push(np.zeros(16_000, np.int16)) == []  # silence: nothing


class Client:
    """A WebSocket client that records every JSON event and counts media messages."""

    def __init__(self, ws):
        self.ws, self.events, self.media = ws, [], 0

    async def until(self, kind: str, deadline_s: float = 120, **match) -> dict:
        end = asyncio.get_running_loop().time() + deadline_s
        while True:
            msg = await asyncio.wait_for(self.ws.recv(), end - asyncio.get_running_loop().time())
            if isinstance(msg, bytes):
                self.media += 1
                continue
            event = json.loads(msg)
            self.events.append(event)
            if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                return event

    async def stream(self, pcm: np.ndarray) -> None:
        for k in range(0, len(pcm), CHUNK):
            await self.ws.send(pcm[k : k + CHUNK].tobytes())


def test_hands_free_turn_and_barge_in(serve_app, handles):
    pcm = jfk_pcm16(2.5)
    voiced = pcm[np.argmax(np.abs(pcm) > 3000) :]  # talking over the avatar starts with speech
    names = ("LLM", "TTS", "Animator")

    async def talk():
        async with websockets.connect(serve_app.replace("http", "ws") + "/ws", max_size=None) as ws:
            c = Client(ws)
            await c.until("session")
            await ws.send(json.dumps({"type": "mic", "on": True}))
            await c.stream(pcm)
            first = await c.until("speech_start")
            await c.until("utterance_end")
            before = {n: stage_stats(n) for n in names}  # before the turn's work
            transcript = await c.until("transcript")
            await c.until("segment")  # the avatar speaks: now the user talks over it at once
            await c.stream(voiced)
            barge = await c.until("speech_start")
            cancelled = await c.until("cancelled")
            second = await c.until("transcript")
            await c.until("done")
            after = {n: stage_stats(n) for n in names}
            return c.events, first, transcript, barge, cancelled, second, before, after

    events, first, transcript, barge, cancelled, second, before, after = asyncio.run(talk())
    assert first["barge_in"] is False
    assert JFK_WORDS in words(transcript["text"]) and JFK_WORDS in words(second["text"])
    assert barge["barge_in"] is True and cancelled["reason"] == "barge_in"
    types = [e["type"] for e in events]
    # the first turn never finished: its only end is the cancellation, then the second turn's done
    assert types.count("done") == 1 and types.index("cancelled") < types.index("done")
    # and the stages really stopped the rest of its work
    assert sum(after[n]["cancelled"] - before[n]["cancelled"] for n in names) >= 1, (before, after)
    assert all(after[n]["in_flight"] == 0 for n in names)
    turns = httpx.get(f"{serve_app}/api/v1/stats", timeout=30).json()["turns"]
    assert turns["barge_in"] >= 1 and turns["cancelled"] >= turns["barge_in"]


def test_push_to_talk_idle_video_and_settings(serve_app, handles):
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
            return hello, bad_language, bad_avatar, ok, idle, mic_off, bad_frame, transcript, done

    hello, bad_language, bad_avatar, ok, idle, mic_off, bad_frame, transcript, done = asyncio.run(talk())
    assert hello["languages"] == ["en"] and hello["avatar_id"] == "default"
    assert bad_language["code"] == "unsupported_language" and "en" in bad_language["message"]
    assert bad_avatar["code"] == "unknown_avatar"
    assert ok == {"type": "settings", "avatar_id": "default", "voice_id": "default", "language": "en"}
    assert idle["duration_s"] == 0.8 and idle["mime"].startswith("video/mp4")
    assert mic_off["code"] == "mic_off" and bad_frame["code"] == "bad_audio_frame"
    assert JFK_WORDS in words(transcript["text"]) and done["type"] == "done"
    assert handles["Animator"].idle_stats.remote().result()["completed"] >= 1
