"""XTTS-v2 (`backends/xtts.py`) on its real code, in the whole graph, on CPU.

The released weights cannot be had here, so the test makes a tiny XTTS checkpoint with random
weights (small GPT, the tokenizer file the coqui-tts wheel ships as vocab.json, config.json and
model.pth saved the way the released files are), and the backend loads it through XTTS's own
`load_checkpoint`. Its speech is noise: the tests check shapes, rates, order, caching, cancellation
and errors, not sound. Needs the `gpu` extra: `scripts/install.sh xtts`, then
`.venv-xtts/bin/python -m pytest -m xtts`.
"""

import asyncio
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import websockets

pytest.importorskip("TTS", reason="XTTS needs the 'gpu' extra: scripts/install.sh xtts, then "
                    ".venv-xtts/bin/python -m pytest -m xtts")
pytestmark = pytest.mark.xtts

from avatar_core.config import ASSETS, AppConfig  # noqa: E402
from scripts.gpu_check import make_xtts_checkpoint  # noqa: E402 (the GPU check's own)
from tests.conftest import running_graph, stage_stats, wait_healthy  # noqa: E402
from tests.segments import decode_segment  # noqa: E402
from tests.test_turn import check_segments_match_reply, post_turn  # noqa: E402

AUDIO_TOKENS = 30  # GPT tokens in every sentence: the stop token is made impossible
CHUNK_TOKENS = 4  # stream_chunk_size
CHUNKS = -(-AUDIO_TOKENS // CHUNK_TOKENS)  # 8 a sentence
# HiFi-GAN: 4 latent frames a token, resampled 22.05 -> 24 kHz, 256 samples each; the stream holds
# back the last 1024-sample cross-fade overlap
SENTENCE_SAMPLES = (AUDIO_TOKENS * 4 * 24_000 // 22_050) * 256 - 1024
APP = "xtts"


@pytest.fixture(scope="module")
def checkpoint():
    root = Path(tempfile.mkdtemp(prefix="xtts-tiny-"))
    try:
        # the released layout and config with a 2-layer GPT (about 33 M parameters), random weights
        yield make_xtts_checkpoint(root / "xtts-v2", "small", AUDIO_TOKENS)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def xtts_app(checkpoint):
    """The whole graph (embedded ASR, LLM and animator) with XTTS as its TTS, on its own cluster."""
    storage = Path(tempfile.mkdtemp(prefix="xtts-storage-"))
    cfg = AppConfig.model_validate({
        # tiny.en decodes English whatever it is told; this lets a session choose XTTS's other languages
        "asr": {"multilingual": True},
        "llm": {"temperature": 0.0, "max_tokens": 12},
        "tts": {"backend": "xtts", "checkpoint_dir": str(checkpoint), "device": "cpu",
                "stream_chunk_size": CHUNK_TOKENS,
                "health_probe_s": 0},  # no probe sentence between a test's before and after
        "storage": {"dir": str(storage)},
    })
    # One replica a stage: the test reads the TTS replica's own voice cache (slow XTTS on CPU would
    # otherwise make the production autoscaling add a second TTS replica with a cache of its own).
    try:
        with running_graph(cfg, APP, storage, production=False) as base_url:
            yield base_url
    finally:
        shutil.rmtree(storage, ignore_errors=True)


@pytest.fixture(scope="module")
def tts(xtts_app):
    from ray import serve

    return serve.get_deployment_handle("TTS", app_name=APP)


def tts_stats(handle) -> dict:
    """The TTS replica's counters and its backend's (voices, latents, streams): asked of the replica
    itself, which answers between requests."""
    return handle.stats.remote().result()


def upload_voice(base: str, pcm: np.ndarray, rate: int, name: str) -> dict:
    clip = io.BytesIO()
    sf.write(clip, pcm, rate, format="WAV")
    r = httpx.post(f"{base}/api/v1/voices", files={"audio": (name, clip.getvalue())}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()


async def ws_turns(base: str, settings: dict, audio: bytes, turns: int) -> list[list[dict]]:
    """One WebSocket session: choose the settings, then speak `turns` whole-file utterances."""
    async with websockets.connect(base.replace("http", "ws") + "/ws", max_size=None) as ws:
        json.loads(await ws.recv())  # session
        await ws.send(json.dumps({"type": "settings", **settings}))
        assert json.loads(await ws.recv())["type"] == "settings"
        results = []
        for _ in range(turns):
            await ws.send(audio)
            events = []
            while not events or events[-1]["type"] not in ("done", "error"):
                msg = await asyncio.wait_for(ws.recv(), 300)
                if isinstance(msg, str):
                    events.append(json.loads(msg))
            results.append(events)
        return results


def sentences(events: list[dict]) -> int:
    return len({e["sentence"] for e in events if e["type"] == "segment"})


def test_the_session_offers_xtts_languages_and_cloning(xtts_app):
    async def hello():
        async with websockets.connect(xtts_app.replace("http", "ws") + "/ws") as ws:
            return json.loads(await ws.recv())

    session = asyncio.run(hello())
    assert session["voice_cloning"] is True
    assert session["languages"][0] == "en" and {"es", "fr", "de", "ja", "zh", "hi"} <= set(session["languages"])
    default = httpx.get(f"{xtts_app}/api/v1/voices", timeout=30).json()["voices"][0]
    assert default["id"] == "default" and "JFK" in default["name"]


def test_an_uploaded_voice_is_conditioned_once_and_used_by_the_sessions_next_turns(xtts_app, tts, jfk_bytes):
    """The session chooses the uploaded clip; its latents are computed from that stored clip by the
    first sentence that needs them, and every later sentence, in this turn and the next, reuses them."""
    pcm, rate = sf.read(io.BytesIO(jfk_bytes), dtype="float32")
    voice = upload_voice(xtts_app, pcm[: rate * 4], rate, "me.wav")  # "And so my fellow Americans"
    assert voice["note"] == "stored; turns that choose this voice speak with it"
    before = tts_stats(tts)
    assert voice["id"] not in before["backend"]["voices"]

    first, second = asyncio.run(ws_turns(xtts_app, {"voice_id": voice["id"]}, jfk_bytes, 2))
    assert first[-1]["type"] == "done" and second[-1]["type"] == "done", (first[-1], second[-1])
    after = tts_stats(tts)
    row = after["backend"]["voices"][voice["id"]]
    stored = Path(row["clip"])
    assert stored.name == f"{voice['id']}.wav"
    assert stored.read_bytes() == httpx.get(f"{xtts_app}{voice['preview_url']}", timeout=30).content
    assert row["computed"] == 1, row  # once, for the first sentence
    assert row["used"] == sentences(first) + sentences(second) >= 2, row
    assert voice["id"] in after["backend"]["cached"]
    assert after["last"]["voice_id"] == voice["id"]
    # the default voice was conditioned once, at warm-up, and none of these sentences touched it
    assert after["backend"]["voices"]["default"] == before["backend"]["voices"]["default"]
    assert after["backend"]["voices"]["default"]["computed"] == 1
    assert after["backend"]["voices"]["default"]["clip"] == str(ASSETS / "voices" / "jfk.wav")


def test_chunks_stream_at_24_khz_and_are_passed_on_as_they_come(xtts_app, tts, jfk_bytes):
    """The TTS stage yields inference_stream's chunks one by one; the turn turns the first ones into
    the first fragment while the sentence is still being spoken."""

    async def direct():
        stream = tts.options(stream=True).stream.remote("Hello there, how are you today?", "default", "en")
        return [chunk async for chunk in stream]

    before = tts_stats(tts)["backend"]
    chunks = asyncio.run(direct())
    assert len(chunks) == CHUNKS
    assert {c.sample_rate for c in chunks} == {24_000}
    assert all(c.pcm.dtype == np.float32 and c.pcm.ndim == 1 and c.pcm.size > 0 for c in chunks)
    assert sum(c.pcm.size for c in chunks) == SENTENCE_SAMPLES
    after = tts_stats(tts)["backend"]
    assert after["chunks"] - before["chunks"] == CHUNKS
    assert after["streams_completed"] == before["streams_completed"] + 1

    async def turn():
        async with websockets.connect(xtts_app.replace("http", "ws") + "/ws", max_size=None) as ws:
            await ws.recv()  # session
            await ws.send(jfk_bytes)
            events, media, tts_at_first = [], [], None
            while not events or events[-1]["type"] not in ("done", "error"):
                msg = await asyncio.wait_for(ws.recv(), 300)
                if isinstance(msg, bytes):
                    media.append(msg)
                    continue
                events.append(json.loads(msg))
                if events[-1]["type"] == "segment" and tts_at_first is None:
                    tts_at_first = stage_stats("TTS", app=APP)
            return events, media, tts_at_first

    events, media, tts_at_first = asyncio.run(turn())
    assert events[-1]["type"] == "done", events[-1]
    assert tts_at_first["in_flight"] == 1, "the first fragment left while TTS was still speaking"
    segments = check_segments_match_reply(events)
    first_sentence = [s for s in segments if s["sentence"] == 0]
    assert len(first_sentence) >= 2, "a sentence's chunks become several fragments"
    decoded = [decode_segment(m) for m in media]
    seconds = sum(d.audio_s for d, s in zip(decoded, segments) if s["sentence"] == 0)
    assert abs(seconds - SENTENCE_SAMPLES / 24_000) < 0.1, seconds  # all of the sentence's tokens


def test_the_sessions_language_reaches_xtts(xtts_app, tts, jfk_bytes):
    before = tts_stats(tts)["backend"]
    events, _ = post_turn(xtts_app, jfk_bytes, extra={"language": "es"})
    assert events[-1]["type"] == "done", events[-1]
    after = tts_stats(tts)
    assert after["last"]["language"] == "es"
    spoken = after["backend"].get("language:es", 0) - before.get("language:es", 0)
    assert spoken == sentences(events) >= 1


def test_a_cancelled_stream_stops_the_generator_between_chunks(xtts_app, tts):
    """The caller stops reading after two chunks and cancels, as the turn does on a barge-in: the
    TTS request is cancelled, XTTS's generator stops at its next chunk (the stream is counted as
    stopped, short of its 8 chunks) and the replica is idle again."""
    before = tts_stats(tts)

    async def two_chunks_then_cancel():
        stream = tts.options(stream=True).stream.remote("Hello there, how are you today?", "default", "en")
        got = [await anext(stream), await anext(stream)]
        stream.cancel()
        return got

    assert len(asyncio.run(two_chunks_then_cancel())) == 2
    wait_until_idle()
    after = tts_stats(tts)
    assert after["in_flight"] == 0
    assert after["cancelled"] == before["cancelled"] + 1, (before, after)
    assert after["backend"]["streams_stopped"] == before["backend"].get("streams_stopped", 0) + 1
    assert after["backend"]["streams_completed"] == before["backend"]["streams_completed"]
    made = after["backend"]["chunks"] - before["backend"]["chunks"]
    assert 2 <= made < CHUNKS, made  # the two read, and at most the ones under way: not all 8


def wait_until_idle(deadline_s: float = 60) -> None:
    end = time.monotonic() + deadline_s
    while (board := stage_stats("TTS", app=APP))["in_flight"]:
        assert time.monotonic() < end, board
        time.sleep(0.05)


def test_a_silent_voice_clip_is_refused_with_a_clear_error(xtts_app, tts, jfk_bytes):
    """A clip XTTS cannot condition on fails the turn with an error that says so; it is not cached,
    and the session's next turn with the default voice works."""
    voice = upload_voice(xtts_app, np.zeros(24_000 * 3, np.float32), 24_000, "silence.wav")
    events, headers = post_turn(xtts_app, jfk_bytes, extra={"voice_id": voice["id"]})
    error = events[-1]
    assert error["type"] == "error" and error["code"] == "unusable_voice", error
    assert "voice clip cannot be used" in error["message"] and "silent" in error["message"]
    stats = tts_stats(tts)
    assert voice["id"] not in stats["backend"]["cached"] and voice["id"] not in stats["backend"]["voices"]
    session = headers["x-session-id"]
    again, _ = post_turn(xtts_app, jfk_bytes, session_id=session, extra={"voice_id": "default"})
    assert again[-1]["type"] == "done", again[-1]
    wait_healthy(xtts_app, 30)


def test_an_incomplete_checkpoint_dir_fails_with_the_missing_files(tmp_path, checkpoint):
    from backends.xtts import Xtts

    (tmp_path / "config.json").write_text((checkpoint / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="lacks model.pth, vocab.json"):
        Xtts(Xtts.Config(checkpoint_dir=tmp_path, device="cpu"))
    assert "zh" in Xtts.languages(Xtts.Config(checkpoint_dir=tmp_path))  # zh-cn in config.json
    with pytest.raises(ValueError, match="checkpoint_dir"):
        AppConfig.model_validate({"tts": {"backend": "xtts"}})


def test_barge_in_stops_the_generator_between_chunks(xtts_app, tts, jfk_bytes):
    """Push-to-talk the moment the first fragment arrives: the TTS request is cancelled, XTTS's
    generator stops at its next chunk (the stream is counted as stopped, short of its 8 chunks) and
    the replica is idle again."""
    before = tts_stats(tts)

    async def talk():
        async with websockets.connect(xtts_app.replace("http", "ws") + "/ws", max_size=None) as ws:
            await ws.recv()  # session
            await ws.send(jfk_bytes)
            while (event := json.loads(await ws.recv()))["type"] != "segment":
                pass
            during = stage_stats("TTS", app=APP)
            await ws.send(json.dumps({"type": "mic", "on": True}))
            await ws.send(json.dumps({"type": "ptt", "down": True}))  # the user talks over it
            while True:  # bounded: a turn that never ends fails here rather than hang
                msg = await asyncio.wait_for(ws.recv(), 120)
                if isinstance(msg, str) and json.loads(msg)["type"] == "cancelled":
                    break
            return during

    during = asyncio.run(talk())
    assert during["in_flight"] == 1, "the first sentence was still being spoken"
    wait_until_idle()
    after = tts_stats(tts)
    assert after["in_flight"] == 0
    assert after["cancelled"] == before["cancelled"] + 1, (before, after)
    assert after["backend"]["streams_stopped"] == before["backend"].get("streams_stopped", 0) + 1
    made = after["backend"]["chunks"] - before["backend"]["chunks"]
    finished = after["backend"]["streams_completed"] - before["backend"]["streams_completed"]
    assert finished * CHUNKS < made < (finished + 1) * CHUNKS, (made, finished)  # stopped part-way
