"""Voice to face: a hands-free client on `/ws`, timed from the end of the user's speech to the first
frame of the answer. `benchmarks.run` uses it; it also runs alone against a running app:

    .venv/bin/python -m benchmarks.voice_to_face --url ws://127.0.0.1:8000/ws [--audio F.flac] [--runs 3]

The client does what the page does: `{"type": "mic", "on": true}`, then 16 kHz s16le PCM in 100 ms
messages at real time (each sent once it would have been recorded), then silence, and the server's
VAD decides when the utterance ended. The reference is the moment the message holding the last
voiced sample (where Silero VAD, run here on the clip, says speech ends) was sent. From it:
endpointing (until `utterance_end`), ASR (until `transcript`) and the rest (LLM to the first
sentence, its TTS and its first fragment, until the first `segment` arrives).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avatar_core.playback import play, underruns
from capacity.stats import quantile
from serve_app.sentences import SentenceSplitter

ROOT = Path(__file__).resolve().parent.parent

RATE = 16_000
CHUNK_S = 0.1  # as the page sends (ui/pcm-worklet.js): each message costs the proxy and the ingress CPU
JFK = ROOT / "assets" / "media" / "jfk.flac"


def speech_end_s(pcm: np.ndarray) -> float:
    """Where the clip's last voiced sample is (Silero VAD, no padding), judged with silence after
    it as the server hears it (a clip that stops mid-word would otherwise end "at its end")."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    padded = np.concatenate([pcm, np.zeros(RATE, np.float32)])
    # a short min_silence: the default (2 s) would run the last segment on to the padding's end
    stamps = get_speech_timestamps(padded, VadOptions(speech_pad_ms=0, min_silence_duration_ms=100))
    if not stamps:
        raise ValueError("no speech in the clip")
    return stamps[-1]["end"] / RATE


@dataclass
class Turn:
    """One hands-free turn as the client saw it; times in seconds after the last voiced sample
    was sent."""

    endpointing_s: float
    asr_s: float
    rest_s: float
    segments: list[dict] = field(default_factory=list)  # {"t", "duration_s", "sentence"} per fragment
    transcript: str = ""
    reply: str = ""
    utterances: int = 1  # utterance_end events during the clip (more: the speaker's pauses)
    timings: dict = field(default_factory=dict)  # the server's own, from `done`
    # the client's cycle, for the capacity planner: perf_counter when it began to connect, and
    # seconds after that until the `session` event, streaming began, the last voiced sample was
    # sent, and `done`; (utterance_end, cancelled) of each turn started early and then cancelled
    # because the speaker went on, in seconds after streaming began
    began: float = 0.0
    opened_s: float = 0.0
    streamed_s: float = 0.0
    voiced_s: float = 0.0
    done_s: float = 0.0
    cancelled_starts: list[tuple[float, float]] = field(default_factory=list)
    # the waterfall, in seconds after the last voiced sample was sent: when the turn began (its
    # `turn` event), the first reply delta, and the first clause (the turn's sentence splitter over
    # the deltas as they arrived)
    marks: dict = field(default_factory=dict)

    @property
    def v2f_s(self) -> float:
        return self.endpointing_s + self.asr_s + self.rest_s

    def underruns(self, hold_s: float = 0.0) -> int:
        return underruns([s["t"] for s in self.segments], [s["duration_s"] for s in self.segments], hold_s)

    def still_playing_s(self, hold_s: float = 0.0) -> float:
        """How long after `done` a page holding `hold_s` still plays the reply (0 when it has ended)."""
        if not self.segments:
            return 0.0
        end = play([s["t"] for s in self.segments], [s["duration_s"] for s in self.segments], hold_s)[2]
        return max(0.0, end - (self.done_s - self.voiced_s))


async def hands_free(ws_url: str, pcm: np.ndarray, tail_s: float = 4.0, deadline_s: float = 180.0,
                     end_s: float | None = None) -> Turn:
    """Stream `pcm` (16 kHz mono float32) and then silence over a new session at `ws_url`, wait for
    the turn's `done`, and time it. `end_s`: where speech ends in the clip (found with the VAD when
    not given)."""
    import websockets

    end_s = speech_end_s(pcm) if end_s is None else end_s
    samples = np.concatenate([pcm, np.zeros(int(tail_s * RATE), np.float32)])
    pcm16 = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    step = int(CHUNK_S * RATE)
    last_voiced = int(end_s * RATE) // step  # the message that holds the last voiced sample
    events: list[dict] = []
    sent_at = None
    began = time.perf_counter()
    async with websockets.connect(ws_url, max_size=None) as ws:
        first = json.loads(await ws.recv())
        if first.get("type") != "session":
            raise RuntimeError(f"expected a session event, got {first}")
        opened = time.perf_counter()
        await ws.send(json.dumps({"type": "mic", "on": True}))

        async def receive() -> None:
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    continue  # a segment's media
                event = json.loads(message)
                event["t"] = time.perf_counter()
                events.append(event)
                if event["type"] in ("done", "error") and sent_at is not None and any(
                    e["type"] == "utterance_end" and e["t"] >= sent_at for e in events
                ):
                    return  # the turn of the whole utterance has ended

        receiver = asyncio.create_task(receive())
        try:
            t0 = time.perf_counter()
            for k, a in enumerate(range(0, pcm16.size, step)):
                await asyncio.sleep(max(0.0, t0 + (k + 1) * CHUNK_S - time.perf_counter()))
                await ws.send(pcm16[a : a + step].tobytes())
                if k == last_voiced:
                    sent_at = time.perf_counter()
                if receiver.done():
                    break
            if sent_at is None:
                raise ValueError("the clip ended before its speech did")
            # keep the microphone "on" with silence until the turn ends, as a page would
            while not receiver.done():
                await ws.send(np.zeros(step, "<i2").tobytes())
                await asyncio.wait({receiver}, timeout=CHUNK_S)
                if events and events[-1]["type"] in ("done", "error") and time.perf_counter() - events[-1]["t"] > 3:
                    break  # a turn ended and nothing followed: the server took the speech as ended earlier
                if time.perf_counter() - t0 > deadline_s:
                    raise TimeoutError(f"no done within {deadline_s} s: {[e['type'] for e in events]}")
            if receiver.done():
                await receiver  # its error, if any
        finally:
            receiver.cancel()
    turn = _timed(events, sent_at)
    turn.began, turn.opened_s, turn.streamed_s, turn.voiced_s = began, opened - began, t0 - began, sent_at - began
    turn.done_s = events[-1]["t"] - began
    start = None
    for e in events:  # each utterance_end, paired with the merge that cancelled its turn
        if e["type"] == "utterance_end":
            start = e["t"]
        elif e["type"] == "cancelled" and e.get("merged") and start is not None:
            turn.cancelled_starts.append((start - t0, e["t"] - t0))
            start = None
    return turn


def _timed(events: list[dict], sent_at: float) -> Turn:
    def after(kind: str, t: float) -> dict:
        for e in events:
            if e["type"] == kind and e["t"] >= t:
                return e
        raise RuntimeError(f"no {kind} after the speech ended: {[e['type'] for e in events]}")

    errors = [e for e in events if e["type"] == "error"]
    if errors:
        raise RuntimeError(f"the turn failed: {errors[0]}")
    # The speaker's pauses may end utterances early; those turns are cancelled and redone
    # ("merged"), so the turn that counts starts at the first utterance_end after the speech.
    end = after("utterance_end", sent_at)
    transcript = after("transcript", end["t"])
    first = after("segment", transcript["t"])
    segments = [{"t": e["t"] - sent_at, "duration_s": e["duration_s"], "sentence": e["sentence"],
                 "rung": e.get("rung", 0), "hold_s": e.get("hold_s") or 0.0}
                for e in events if e["type"] == "segment" and e["t"] >= first["t"]]
    done = events[-1]
    marks = {"turn": max((e["t"] for e in events if e["type"] == "turn" and e["t"] <= transcript["t"]),
                         default=transcript["t"]) - sent_at}
    splitter = SentenceSplitter()
    for e in events:
        if e["type"] == "reply" and e["t"] >= transcript["t"]:
            marks.setdefault("first_token", e["t"] - sent_at)
            if splitter.push(e["text"]):
                marks["first_clause"] = e["t"] - sent_at
                break
    return Turn(
        endpointing_s=end["t"] - sent_at,
        asr_s=transcript["t"] - end["t"],
        rest_s=first["t"] - transcript["t"],
        segments=segments,
        transcript=transcript["text"],
        reply="".join(e["text"] for e in events if e["type"] == "reply" and e["t"] >= transcript["t"]).strip(),
        utterances=sum(e["type"] == "utterance_end" for e in events),
        timings=done.get("timings", {}),
        marks=marks,
    )


def summary(turns: list[Turn]) -> dict:
    """p50/p95 of voice to face and the medians of its parts."""
    v2f = [t.v2f_s for t in turns]
    return {
        "turns": len(turns),
        "v2f_p50_s": quantile(v2f, 0.5),
        "v2f_p95_s": quantile(v2f, 0.95),
        "endpointing_p50_s": quantile([t.endpointing_s for t in turns], 0.5),
        "asr_p50_s": quantile([t.asr_s for t in turns], 0.5),
        "rest_p50_s": quantile([t.rest_s for t in turns], 0.5),
    }


def clip(path: Path) -> np.ndarray:
    from avatar_core.media import decode_audio

    return decode_audio(path.read_bytes(), 60)


async def _main(url: str, audio: Path, runs: int) -> None:
    pcm = clip(audio)
    turns = [await hands_free(url, pcm) for _ in range(runs)]
    print(f"\nVoice to face, {audio.name}, {runs} turns (s)\n")
    print("| turn | endpointing | ASR | rest | voice to face | utterance_end events |")
    print("|---|---|---|---|---|---|")
    for i, t in enumerate(turns, 1):
        print(f"| {i} | {t.endpointing_s:.2f} | {t.asr_s:.2f} | {t.rest_s:.2f} | {t.v2f_s:.2f} | {t.utterances} |")
    s = summary(turns)
    print(f"\np50 {s['v2f_p50_s']:.2f} s, p95 {s['v2f_p95_s']:.2f} s; medians: endpointing "
          f"{s['endpointing_p50_s']:.2f}, ASR {s['asr_p50_s']:.2f}, rest {s['rest_p50_s']:.2f} "
          f"({statistics.median(t.v2f_s for t in turns):.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="ws://127.0.0.1:8000/ws")
    parser.add_argument("--audio", type=Path, default=JFK)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(_main(args.url, args.audio, args.runs))
