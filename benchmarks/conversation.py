"""The conversation a new user meets: heard right, answered right, never cut off, and how fast.

    .venv/bin/python -m benchmarks.conversation [--quick] [--json out.json] [--set llm.model=qwen2.5-coder-0.5b]

The set is `benchmarks/conversation_set.yaml`: short questions and remarks (facts, arithmetic,
small talk, follow-ups that need the history) with a regular expression a reply on point matches.
Each is spoken at run time by the project's TTS (Piper's voice, in-process) and by espeak-ng at two
speeds (150 and 200 words a minute; Debian's `espeak-ng`: `apt-get install espeak-ng`; without it
those voices are left out and the output says so), plus `jfk.flac` (real speech, with pauses).
The app's own code does the work, on the config `serve_config.yaml` deploys (greedy replies),
with `--set section.field=value` overrides; the stages are the deployments' classes built in this
process (`benchmarks.run.local_stages`), without Serve:

- **Hearing**: the ASR stage on each clip: word error rate against what was said (lower-cased,
  punctuation dropped, small numbers spelled out), and seconds per clip.
- **Answering**: the LLM stage on the messages a turn builds (`Conversation.messages`: system
  prompt, the item's history, what ASR heard): replies on point (the item's expression matches),
  plain (no markdown, list, emoji or "as an AI"), words per reply, time to the first token and to
  the first piece the sentence splitter sends to TTS.
- **End of turn** (in audio time, the way eot-bench scores detectors: at real pauses, the final one
  being the true end of the turn, every earlier one a hesitation to listen through). Each item is
  also spoken with a pause inserted after its `pause_after` words (0.4-1.2 s, cycling); with
  `jfk.flac`'s own pauses these are the mid-turn pauses. The endpointer (`decide=False`) reports
  every pause with Smart Turn's verdict at 0.2 s and at 0.3 s of silence, and the ASR stage
  transcribes the speech up to it (timed). Three detectors are then scored: the silence timer,
  Smart Turn alone, and Smart Turn with the words (`serve_app.turn_taking.ends_turn`; the words
  count only once ASR has finished, so its decision comes ASR's time after the pause). A mid-turn
  pause is a false cut-off when the detector ends the turn before the speech resumes; the delay is
  from the start of the final silence (as the VAD hears it) to the end of the turn. Reported: each
  detector deciding at 300 ms of silence (false cut-off rate, delay), the least mean delay at which
  it makes at most 5 % false cut-offs (sweeping its knob: the silence, or Smart Turn's threshold),
  and the shipped settings. "Transcript" adds ASR's time where the detector ends the turn first
  and ASR runs after it.
- **Voice to face** per item: the real WebSocket session (`serve_app/ws_session.py`, the turn
  service, the turn) with the in-process stages behind it, fed 20 ms of PCM at a time at real time
  as the page does, timed from the message holding the last voiced sample to the first `segment`
  (split into endpointing, ASR and the rest), as `benchmarks/voice_to_face.py` times it over /ws.
  Then the turn is cancelled. By default for Piper's clips and `jfk.flac` (`--v2f-voices`).

`--quick`: three items, Piper's voice (and espeak-ng's fast one when installed), one V2F turn.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from benchmarks.asr_models import JFK_TEXT, edit_distance
from benchmarks.run import bench_config, commit, local_stages, local_turn_stages, merge, parse_set

ROOT = Path(__file__).resolve().parent.parent
SET = Path(__file__).resolve().parent / "conversation_set.yaml"
JFK = ROOT / "assets" / "media" / "jfk.flac"
RATE = 16_000
LEAD_S, TAIL_S = 0.5, 2.6  # silence before each clip, and after it (more than incomplete_silence_s)
PAUSES_S = (0.4, 0.6, 0.8, 1.0, 1.2)  # mid-turn pauses inserted, cycling over the items
ESPEAK_SPEEDS = (150, 200)  # words per minute
QUICK_ITEMS = ("capital-france", "two-plus-two", "my-name")
CHUNK_S = 0.02


@dataclass(frozen=True)
class Item:
    id: str
    kind: str
    say: str
    expect: str | None
    history: tuple[tuple[str, str], ...] = ()
    pause_after: str | None = None


def load_items(path: Path = SET) -> list[Item]:
    raw = yaml.safe_load(path.read_text())["items"]
    return [Item(id=r["id"], kind=r["kind"], say=r["say"], expect=r.get("expect"),
                 history=tuple(tuple(h) for h in r.get("history", [])), pause_after=r.get("pause_after"))
            for r in raw]


def last_reply(item: Item) -> str:
    """The reply before the item, the context ASR hears it in (`Conversation.last_reply`)."""
    return item.history[-1][1] if item.history else ""


JFK_ITEM = Item(id="jfk", kind="real speech", say=JFK_TEXT, expect=None)


@dataclass
class Clip:
    item: Item
    voice: str
    pcm: np.ndarray  # LEAD_S of silence, the speech, TAIL_S of silence
    paused: np.ndarray | None = None  # the same with a mid-turn pause inserted (None: none inserted)
    pause_s: float = 0.0


# ---- voices --------------------------------------------------------------------------------------


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak(text: str, speed: int, ssml: bool = False) -> np.ndarray:
    from avatar_core.media import decode_audio

    cmd = ["espeak-ng", "-v", "en-us", "-s", str(speed), "--stdout", *(["-m"] if ssml else []), text]
    return decode_audio(subprocess.run(cmd, capture_output=True, check=True).stdout, 60)


def padded(pcm: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros(int(LEAD_S * RATE), np.float32), pcm.astype(np.float32),
                           np.zeros(int(TAIL_S * RATE), np.float32)])


def _norm(word: str) -> str:
    return re.sub(r"[^a-z0-9']", "", word.lower())


def split_after(text: str, after: str) -> tuple[str, str]:
    """`text` cut after the words `after` (case and punctuation ignored)."""
    tokens, want = text.split(), [_norm(w) for w in after.split()]
    for i in range(len(tokens) - len(want) + 1):
        if [_norm(w) for w in tokens[i : i + len(want)]] == want:
            k = i + len(want)
            return " ".join(tokens[:k]), " ".join(tokens[k:])
    raise ValueError(f"{after!r} is not in {text!r}")


class Aligner:
    """Where a word ends in synthesised speech: Whisper base's word timestamps (the same model
    whatever ASR is measured, so every run cuts the same clips), refined to the quietest 10 ms
    between the two words, where the pause goes."""

    def __init__(self):
        from faster_whisper import WhisperModel

        from avatar_core import split_models

        self.model = WhisperModel(str(split_models.path("whisper-base").parent), device="cpu",
                                  compute_type="int8", cpu_threads=2, local_files_only=True)

    def cut(self, pcm: np.ndarray, n_words: int) -> int | None:
        segments, _ = self.model.transcribe(pcm, language="en", beam_size=1, word_timestamps=True,
                                            vad_filter=False, condition_on_previous_text=False)
        ws = [w for s in segments for w in (s.words or [])]
        if len(ws) <= n_words:
            return None
        a, b = ws[n_words - 1].end, ws[n_words].start
        lo, hi = int((min(a, b) - 0.08) * RATE), int((max(a, b) + 0.08) * RATE)
        hop = RATE // 100
        frames = [(np.sqrt(np.mean(pcm[s : s + hop] ** 2)), s) for s in range(max(lo, 0), min(hi, len(pcm) - hop), hop)]
        return min(frames)[1] + hop // 2 if frames else None


async def piper_pcm(tts, text: str) -> np.ndarray:
    from avatar_core.media import resample

    chunks = [c async for c in tts.stream(text)]
    return resample(np.concatenate([c.pcm for c in chunks]), chunks[0].sample_rate, RATE).astype(np.float32)


async def make_clips(items: list[Item], voices: list[str], tts, aligner: Aligner | None) -> list[Clip]:
    from avatar_core.media import decode_audio

    clips = []
    for i, item in enumerate(items):
        pause_s = PAUSES_S[i % len(PAUSES_S)]
        for voice in voices:
            if voice == "piper":
                speech = await piper_pcm(tts, item.say)
                paused = None
                if item.pause_after and aligner is not None:
                    head, _ = split_after(item.say, item.pause_after)
                    cut = aligner.cut(speech, len(head.split()))
                    if cut is not None:
                        paused = np.concatenate([speech[:cut], np.zeros(int(pause_s * RATE), np.float32), speech[cut:]])
            else:
                speed = int(voice.split("-")[1])
                speech, paused = espeak(item.say, speed), None
                if item.pause_after:
                    head, tail = split_after(item.say, item.pause_after)
                    paused = espeak(f'{head} <break time="{int(pause_s * 1000)}ms"/> {tail}', speed, ssml=True)
            clips.append(Clip(item, voice, padded(speech), padded(paused) if paused is not None else None, pause_s))
    jfk = decode_audio(JFK.read_bytes(), 60)
    clips.append(Clip(JFK_ITEM, "jfk.flac", padded(jfk), padded(jfk), 0.0))  # its own pauses
    return clips


async def cached_clips(path: Path | None, items: list[Item], voices: list[str], tts, aligner) -> list[Clip]:
    """The clips, made once and kept in `path` (npz) when given: Piper samples its voice afresh each
    time it speaks, so runs that compare settings should hear the same audio."""
    wanted = [(i.id, v) for i in items for v in voices] + [("jfk", "jfk.flac")]
    if path is not None and path.exists():
        with np.load(path, allow_pickle=False) as data:
            have = set(zip(data["ids"].tolist(), data["voices"].tolist()))
            if set(wanted) <= have:
                by_id = {i.id: i for i in [*items, JFK_ITEM]}
                index = {key: k for k, key in enumerate(zip(data["ids"].tolist(), data["voices"].tolist()))}
                out = []
                for key in wanted:
                    k = index[key]
                    paused = data[f"paused{k}"]
                    out.append(Clip(by_id[key[0]], key[1], data[f"pcm{k}"], paused if paused.size else None,
                                    float(data["pause_s"][k])))
                return out
    clips = await make_clips(items, voices, tts, aligner)
    if path is not None:
        arrays = {f"pcm{k}": c.pcm for k, c in enumerate(clips)}
        arrays |= {f"paused{k}": c.paused if c.paused is not None else np.zeros(0, np.float32) for k, c in enumerate(clips)}
        np.savez(path, ids=np.array([c.item.id for c in clips]), voices=np.array([c.voice for c in clips]),
                 pause_s=np.array([c.pause_s for c in clips]), **arrays)
    return clips


# ---- hearing and answering -----------------------------------------------------------------------


_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
    "seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _spelled(n: int) -> list[str]:
    if n < 20:
        return [_ONES[n]]
    return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])


def words(text: str) -> list[str]:
    """Lower case, no punctuation, numbers below 100 spelled out ("20-plus" = "twenty plus")."""
    text = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " "))
    return [w for t in text.split() for w in (_spelled(int(t)) if t.isdigit() and int(t) < 100 else [t])]


def wer_counts(ref: str, hyp: str) -> tuple[int, int]:
    return edit_distance(words(ref), words(hyp)), len(words(ref))


_MARKDOWN = re.compile(r"(\*\*|__|`|^#|^\s*[-*•]\s|^\s*\d+[.)]\s)", re.M)
_EMOJI = re.compile("[\U0001F300-\U0001FAFF\u2600-\u27BF]")
_AI = re.compile(r"\bas an? ([\w-]+ )?(ai|chatbot|assistant|language model)\b|\blanguage model\b|\bi'?m (just )?an? (ai|chatbot)\b", re.I)


def plain(reply: str) -> bool:
    """Spoken style: no markdown, lists, emoji or talk of being an AI."""
    return not (_MARKDOWN.search(reply) or _EMOJI.search(reply) or _AI.search(reply))


def on_point(item: Item, reply: str) -> bool | None:
    return None if item.expect is None else bool(re.search(item.expect, reply, re.I))


async def ask(llm, cfg, item: Item, heard: str) -> dict:
    from serve_app.conversation import Conversation
    from serve_app.sentences import SentenceSplitter

    conv = Conversation(id="bench")
    for user, assistant in item.history:
        conv.remember(user, assistant)
    messages = conv.messages(cfg.llm, heard)
    splitter, reply, first, first_piece = SentenceSplitter(), "", None, None
    start = time.perf_counter()
    async for delta in llm.chat(messages):
        now = time.perf_counter() - start
        first = now if first is None else first
        reply += delta
        if splitter.push(delta) and first_piece is None:
            first_piece = now
    total = time.perf_counter() - start
    return {"reply": " ".join(reply.split()), "first_token_s": first if first is not None else total,
            "first_sentence_s": first_piece if first_piece is not None else total, "reply_s": total}


# ---- end of turn ---------------------------------------------------------------------------------


@dataclass
class PauseRecord:
    clip: int  # index into the clips
    ask_s: float  # silence when Smart Turn was asked
    p: float
    heard: str
    asr_s: float
    final: bool  # the true end of the turn
    silence_s: float  # the pause's length as the VAD hears it (final: inf)


def run_endpointer(cfg, pcm: np.ndarray):
    """The endpointer (decide=False) over a clip in 40 ms chunks: [(Pause, silence length)], and how
    many hushes (ASR calls started at transcribe_silence_s) it reported."""
    from serve_app.endpointing import Endpointer, Hush, Pause, Resume, UtteranceEnd

    ep = Endpointer(cfg, decide=False)
    pcm16 = (np.clip(pcm, -1, 1) * 32767).astype("<i2")
    pauses, out, hushes = [], [], 0
    for k in range(0, len(pcm16), 640):
        for e in ep.push(pcm16[k : k + 640]):
            hushes += isinstance(e, Hush)
            if isinstance(e, Pause):
                pauses.append(e)
            elif isinstance(e, Resume) and pauses:
                out.append((pauses.pop(), e.at_s))
            elif isinstance(e, UtteranceEnd) and pauses:
                out.append((pauses.pop(), float("inf")))
                pauses.clear()
    out += [(p, float("inf")) for p in pauses]
    return [(p, end - (p.at_s - cfg.turn_silence_s)) for p, end in out], hushes


async def end_of_turn_records(clips: list[Clip], cfg, asr) -> tuple[list[PauseRecord], dict]:
    """The pauses of every clip, at 0.2 and 0.3 s; and, at the shipped settings, ASR calls made at
    hushes against pauses that reached the turn model (the rest are wasted: the speaker went on)."""
    records, calls = [], {"hushes": 0, "pauses": 0}
    for i, clip in enumerate(clips):
        if clip.paused is None:
            continue
        for ask_s in (0.2, 0.3):
            ecfg = cfg.endpointing.model_copy(update={"turn_silence_s": ask_s, "turn_model": "smart-turn"})
            found, hushes = await asyncio.to_thread(run_endpointer, ecfg, clip.paused)
            if ask_s == cfg.endpointing.turn_silence_s:
                calls["hushes"] += hushes
                calls["pauses"] += len(found)
            for pause, silence in found:
                t = time.perf_counter()
                heard = await asr.transcribe(pause.pcm, "en", last_reply(clip.item))
                records.append(PauseRecord(i, ask_s, pause.p_complete, heard, time.perf_counter() - t,
                                           final=silence == float("inf"), silence_s=silence))
    return records, calls


@dataclass(frozen=True)
class Detector:
    name: str
    setting: str
    end: callable  # PauseRecord -> seconds of silence when it ends the turn
    asr_after: bool  # ASR runs after the end (its time adds to the transcript's)


def detectors(cfg, ask_s: float, knob: float | None = None, kinds=("silence", "smart-turn", "words")) -> list[Detector]:
    from serve_app.turn_taking import ends_turn

    ecfg = cfg.endpointing
    long = ecfg.incomplete_silence_s
    out = []
    if "silence" in kinds:
        s = ecfg.end_silence_s if knob is None else knob
        if ask_s == 0.3 and knob is None:
            s = 0.3
        out.append(Detector("silence timer", f"{s:.2f} s", lambda r, s=s: s, True))
    theta = ecfg.turn_threshold if knob is None else knob
    if "smart-turn" in kinds:
        out.append(Detector("Smart Turn", f"P ≥ {theta:.2f} at {ask_s:.1f} s",
                            lambda r, t=theta: ask_s if r.p >= t else long, True))
    if "words" in kinds:  # the words come ASR's time after the hush (transcribe_silence_s), Smart Turn at ask_s
        wcfg = ecfg.model_copy(update={"turn_threshold": min(max(theta, 0.01), 0.99), "words": True})
        hush = min(ecfg.transcribe_silence_s, ask_s)
        out.append(Detector("Smart Turn + words", f"P ≥ {theta:.2f} at {ask_s:.1f} s, words from {hush:.2f} s",
                            lambda r, c=wcfg: max(ask_s, hush + r.asr_s) if ends_turn(r.p, r.heard, c) else long,
                            False))
    return out


def score(det: Detector, records: list[PauseRecord]) -> dict:
    """False cut-offs over the mid-turn pauses; delay at the true ends."""
    mid = [r for r in records if not r.final]
    final = [r for r in records if r.final]
    cut = sum(det.end(r) < r.silence_s for r in mid)
    delays = [det.end(r) for r in final]
    ready = [d + (r.asr_s if det.asr_after else 0.0) for d, r in zip(delays, final)]
    return {"detector": det.name, "setting": det.setting, "mid_pauses": len(mid), "cut_offs": cut,
            "cut_off_rate": cut / len(mid) if mid else float("nan"), "ends": len(final),
            "delay_mean_s": statistics.mean(delays) if delays else float("nan"),
            "delay_p50_s": statistics.median(delays) if delays else float("nan"),
            "transcript_mean_s": statistics.mean(ready) if ready else float("nan")}


def end_of_turn_table(cfg, records: list[PauseRecord]) -> dict:
    at = {a: [r for r in records if r.ask_s == a] for a in (0.2, 0.3)}
    out = {"at_300ms": [score(d, at[0.3]) for d in detectors(cfg, 0.3)]}
    shipped_ask = cfg.endpointing.turn_silence_s
    out["shipped"] = [score(d, at.get(shipped_ask, at[0.2])) for d in detectors(cfg, shipped_ask)]
    best = []
    grids = {"silence": [round(0.2 + 0.05 * k, 2) for k in range(37)],
             "smart-turn": [round(0.02 * k, 2) for k in range(1, 50)],
             "words": [round(0.02 * k, 2) for k in range(1, 50)]}
    for kind, grid in grids.items():
        rows = [score(detectors(cfg, 0.2, knob, (kind,))[0], at[0.2]) for knob in grid]
        ok = [r for r in rows if r["cut_off_rate"] <= 0.05]
        best.append(min(ok, key=lambda r: r["delay_mean_s"]) if ok else {**rows[-1], "setting": "none reaches 5 %"})
    out["at_5pct"] = best
    return out


# ---- voice to face over the real WebSocket session -------------------------------------------------


class FakeWebSocket:
    """What WsSession asks of Starlette's WebSocket, in memory: the client side is two queues."""

    def __init__(self):
        from starlette.websockets import WebSocketState

        self.scope = {"client": ("127.0.0.1", 0), "type": "websocket"}
        self.client_state = self.application_state = WebSocketState.CONNECTED
        self.incoming: asyncio.Queue = asyncio.Queue()
        self.events: list[dict] = []
        self.new_event = asyncio.Event()

    async def receive(self) -> dict:
        return await self.incoming.get()

    async def send_text(self, text: str) -> None:
        event = json.loads(text)
        event["t"] = time.perf_counter()
        self.events.append(event)
        self.new_event.set()

    async def send_bytes(self, data: bytes) -> None:
        pass


async def v2f_turn(service, clip: Clip) -> dict:
    """One hands-free turn through WsSession: stream the clip at real time, stop at the first
    segment. Voice to face and its parts, what was heard and the reply's first words."""
    from benchmarks.voice_to_face import _timed, speech_end_s
    from serve_app.ws_session import WsSession

    ws = FakeWebSocket()
    session = WsSession(ws, service)
    await session.open()
    for user, assistant in clip.item.history:
        session.conv.remember(user, assistant)
    server = asyncio.create_task(session.serve())
    end_s = speech_end_s(clip.pcm)
    pcm16 = (np.clip(clip.pcm, -1, 1) * 32767).astype("<i2")
    step = int(CHUNK_S * RATE)
    last_voiced, sent_at = int(end_s * RATE) // step, None
    await ws.incoming.put({"type": "websocket.receive", "text": json.dumps({"type": "mic", "on": True})})

    def first_segment() -> bool:
        return sent_at is not None and any(e["type"] == "segment" and e["t"] >= sent_at for e in ws.events)

    try:
        t0, k = time.perf_counter(), 0
        while True:
            a = k * step
            chunk = pcm16[a : a + step] if a < pcm16.size else np.zeros(step, "<i2")
            await asyncio.sleep(max(0.0, t0 + (k + 1) * CHUNK_S - time.perf_counter()))
            await ws.incoming.put({"type": "websocket.receive", "bytes": chunk.tobytes()})
            if k == last_voiced:
                sent_at = time.perf_counter()
            k += 1
            if first_segment() or any(e["type"] == "error" for e in ws.events):
                break
            if time.perf_counter() - t0 > 60:
                raise TimeoutError([e["type"] for e in ws.events])
        turn = _timed(ws.events, sent_at)
        await ws.incoming.put({"type": "websocket.receive", "text": json.dumps({"type": "cancel"})})
        await ws.incoming.put({"type": "websocket.disconnect"})
        await server
    finally:
        server.cancel()
        await session.close()
    ends = [e for e in ws.events if e["type"] == "utterance_end"]
    return {"v2f_s": turn.v2f_s, "endpointing_s": turn.endpointing_s, "asr_s": turn.asr_s, "rest_s": turn.rest_s,
            "heard": turn.transcript, "utterances": len(ends), "merged": sum(e["type"] == "cancelled" and e.get("merged", False)
                                                                              for e in ws.events)}


# ---- the run -------------------------------------------------------------------------------------


def median(xs) -> float:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


async def run(args) -> dict:
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    storage = tempfile.mkdtemp(prefix="conversation-bench-")
    cfg = bench_config(merge(args.overrides, {"storage": {"dir": storage}}))
    items = load_items()
    if args.items:
        items = [i for i in items if i.id in args.items]
    voices = ["piper"] + ([f"espeak-{s}" for s in ESPEAK_SPEEDS] if espeak_available() else [])
    if args.voices:
        voices = [v for v in voices if v in args.voices]
    missing = [] if espeak_available() else [f"espeak-{s}" for s in ESPEAK_SPEEDS]

    stages = await local_stages(cfg)
    log("stages ready")
    aligner = Aligner() if args.eot or not (args.clips and args.clips.exists()) else None
    clips = await cached_clips(args.clips, items, voices, stages["tts"], aligner)
    del aligner
    log(f"{len(clips)} clips")

    # hearing
    rows = []
    for clip in clips:
        t = time.perf_counter()
        heard = await stages["asr"].transcribe(clip.pcm, "en", last_reply(clip.item))
        errors, n = wer_counts(clip.item.say, heard)
        rows.append({"item": clip.item.id, "kind": clip.item.kind, "voice": clip.voice, "said": clip.item.say,
                     "heard": heard, "errors": errors, "words": n, "asr_s": time.perf_counter() - t})
    log("heard")

    # answering: one reply per distinct (history, transcript), greedy
    replies: dict[tuple, dict] = {}
    for row, clip in zip(rows, clips) if args.answers else ():
        key = (clip.item.history, row["heard"])
        if key not in replies:
            replies[key] = await ask(stages["llm"], cfg, clip.item, row["heard"])
        r = replies[key]
        row.update(reply=r["reply"], on_point=on_point(clip.item, r["reply"]), plain=plain(r["reply"]),
                   reply_words=len(r["reply"].split()), first_token_s=r["first_token_s"],
                   first_sentence_s=r["first_sentence_s"], reply_s=r["reply_s"])
    if not args.answers:
        for row in rows:
            row.update(reply="", on_point=None, plain=True, reply_words=0, first_token_s=None,
                       first_sentence_s=None, reply_s=None)
    log(f"answered ({len(replies)} distinct prompts)")

    out: dict = {"rows": rows}
    if args.eot:
        records, calls = await end_of_turn_records(clips, cfg, stages["asr"])
        out["end_of_turn"] = {**end_of_turn_table(cfg, records), "asr_calls": calls}
        out["pauses"] = [asdict(r) for r in records]
        log("end of turn")

    if args.v2f_voices:
        from serve_app.service import TurnService
        from serve_app.store import open_store

        service = TurnService(local_turn_stages(stages, cfg), cfg, open_store(cfg))
        picked = [(k, c) for k, c in enumerate(clips) if c.voice in args.v2f_voices][: args.v2f_limit]
        await v2f_turn(service, picked[0][1])  # warm: not counted
        for k, clip in picked:
            try:
                rows[k]["v2f"] = await v2f_turn(service, clip)
            except Exception as exc:  # one failed turn is a row of the table, not the end of the run
                rows[k]["v2f"] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            log("v2f", clip.item.id, clip.voice, rows[k]["v2f"].get("v2f_s"))

    out["summary"] = summary(rows)
    out["config"] = {"asr": cfg.asr.model_dump(mode="json"), "llm": cfg.llm.model_dump(mode="json"),
                     "endpointing": cfg.endpointing.model_dump(mode="json")}
    out["machine"] = {"date": started_at, "commit": commit(), "cpus": os.cpu_count(),
                      "load_before": [round(x, 2) for x in load_before],
                      "load_after": [round(x, 2) for x in os.getloadavg()], "quick": args.quick,
                      "voices_missing": missing, "overrides": args.overrides}
    shutil.rmtree(storage, ignore_errors=True)
    return out


def rescore(result: dict) -> dict:
    """Errors and on-point verdicts recomputed from the texts a run stored, with this module's
    normalisation and the set's current expressions (`--tables-from` an earlier run's JSON)."""
    items = {i.id: i for i in [*load_items(), JFK_ITEM]}
    for row in result["rows"]:
        row["errors"], row["words"] = wer_counts(row["said"], row["heard"])
        if row["item"] in items and row.get("reply"):
            row["on_point"], row["plain"] = on_point(items[row["item"]], row["reply"]), plain(row["reply"])
    result["summary"] = summary(result["rows"])
    if result.get("pauses"):
        from types import SimpleNamespace

        from avatar_core.config import EndpointingConfig

        stored = result["config"]["endpointing"]  # runs before transcribe_silence_s transcribed at the pause
        stored = {"transcribe_silence_s": stored["turn_silence_s"], **stored}
        cfg = SimpleNamespace(endpointing=EndpointingConfig.model_validate(stored))
        calls = result.get("end_of_turn", {}).get("asr_calls")
        result["end_of_turn"] = {**end_of_turn_table(cfg, [PauseRecord(**p) for p in result["pauses"]]), "asr_calls": calls}
    return result


def compare(before: dict, after: dict) -> str:
    """Per item: on point (✓/✗ per voice) and voice to face, before and after."""
    voices = [s["voice"] for s in after["summary"] if s["voice"] != "jfk.flac"]
    rows = {}
    for label, r in (("before", before), ("after", after)):
        for x in r["rows"]:
            rows.setdefault(x["item"], {})[(label, x["voice"])] = x
    mark = {True: "✓", False: "✗", None: "–"}
    lines = ["| item | on point before (" + ", ".join(voices) + ") | after | V2F before (s) | after (s) |",
             "|---|---|---|---|---|"]
    for item, got in rows.items():
        cells = []
        for label in ("before", "after"):
            cells.append(" ".join(mark[got[(label, v)]["on_point"]] if (label, v) in got else " " for v in voices)
                         if item != "jfk" else "–")
        v2f = []
        for label in ("before", "after"):
            times = [x["v2f"]["v2f_s"] for (lab, _), x in got.items() if lab == label and "v2f_s" in x.get("v2f", {})]
            v2f.append(f"{times[0]:.2f}" if times else "–")
        lines.append(f"| {item} | {cells[0]} | {cells[1]} | {v2f[0]} | {v2f[1]} |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for voice in dict.fromkeys(r["voice"] for r in rows):
        rs = [r for r in rows if r["voice"] == voice]
        judged = [r for r in rs if r["on_point"] is not None]
        v2f = [r["v2f"] for r in rs if "v2f_s" in r.get("v2f", {})]
        out.append({
            "voice": voice, "items": len(rs), "wer": sum(r["errors"] for r in rs) / max(1, sum(r["words"] for r in rs)),
            "on_point": sum(r["on_point"] for r in judged), "judged": len(judged),
            "plain": sum(r["plain"] for r in rs), "reply_words_p50": median([r["reply_words"] for r in rs]),
            "asr_s_p50": median([r["asr_s"] for r in rs]), "first_token_s_p50": median([r["first_token_s"] for r in rs]),
            "first_sentence_s_p50": median([r["first_sentence_s"] for r in rs]),
            "v2f_turns": len(v2f), "v2f_p50_s": median([v["v2f_s"] for v in v2f]),
            "v2f_parts_p50_s": [median([v[k] for v in v2f]) for k in ("endpointing_s", "asr_s", "rest_s")],
        })
    return out


# ---- output --------------------------------------------------------------------------------------


def _f(x, fmt="{:.2f}") -> str:
    return "–" if x is None or (isinstance(x, float) and x != x) else fmt.format(x)


def tables(r: dict) -> str:
    m = r["machine"]
    lines = [f"Conversation benchmark: {m['date']}, commit {m['commit']}, {m['cpus']} CPUs, load "
             f"{m['load_before'][0]:.1f} before / {m['load_after'][0]:.1f} after"
             + (", quick" if m["quick"] else "") + (f", overrides {json.dumps(m['overrides'])}" if m["overrides"] else ""),
             f"ASR {r['config']['asr'].get('model')} beam {r['config']['asr'].get('beam_size')}; LLM "
             f"{r['config']['llm'].get('model')} temperature 0; endpointing words={r['config']['endpointing'].get('words')}"]
    if m["voices_missing"]:
        lines.append(f"Left out (espeak-ng is not installed): {', '.join(m['voices_missing'])}")
    lines += ["", "| voice | items | WER | on point | plain | words/reply p50 | ASR s p50 | first token s p50 | "
              "first sentence s p50 | V2F p50 (turns) | … endpointing / ASR / rest |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in r["summary"]:
        op = f"{s['on_point']}/{s['judged']}" if s["judged"] else "–"
        parts = " / ".join(_f(x) for x in s["v2f_parts_p50_s"]) if s["v2f_turns"] else "–"
        lines.append(f"| {s['voice']} | {s['items']} | {100 * s['wer']:.1f} % | {op} | {s['plain']}/{s['items']} | "
                     f"{_f(s['reply_words_p50'], '{:.0f}')} | {_f(s['asr_s_p50'])} | {_f(s['first_token_s_p50'])} | "
                     f"{_f(s['first_sentence_s_p50'])} | {_f(s['v2f_p50_s'])} ({s['v2f_turns']}) | {parts} |")
    all_judged = [x for x in r["rows"] if x["on_point"] is not None]
    lines.append(f"\nAll voices: on point {sum(x['on_point'] for x in all_judged)}/{len(all_judged)}, WER "
                 f"{100 * sum(x['errors'] for x in r['rows']) / max(1, sum(x['words'] for x in r['rows'])):.1f} %")
    if eot := r.get("end_of_turn"):
        lines += ["", "| detector | decides | setting | mid-turn pauses cut off | delay mean / p50 (s) | transcript ready, mean (s) |",
                  "|---|---|---|---|---|---|"]
        for label, key in (("at 300 ms", "at_300ms"), ("least delay at ≤ 5 % cut-offs", "at_5pct"), ("shipped settings", "shipped")):
            for s in eot[key]:
                lines.append(f"| {s['detector']} | {label} | {s['setting']} | {s['cut_offs']}/{s['mid_pauses']} "
                             f"({100 * s['cut_off_rate']:.0f} %) | {_f(s['delay_mean_s'])} / {_f(s['delay_p50_s'])} | "
                             f"{_f(s['transcript_mean_s'])} |")
        if calls := eot.get("asr_calls"):
            lines.append(f"\nASR calls at the shipped settings: {calls['hushes']} started at hushes, "
                         f"{calls['pauses']} of them at pauses that reached the turn model")
    voices = list(dict.fromkeys(x["voice"] for x in r["rows"]))
    lines += ["", "| item | " + " | ".join(f"{v}: heard, on point" for v in voices) + " | V2F (s) | reply (Piper's question) |",
              "|---|" + "---|" * len(voices) + "---|---|"]
    by = {(x["item"], x["voice"]): x for x in r["rows"]}
    for item in dict.fromkeys(x["item"] for x in r["rows"]):
        cells, v2f, reply = [], "", ""
        for v in voices:
            x = by.get((item, v))
            if x is None:
                cells.append("")
                continue
            mark = {True: "✓", False: "✗", None: ""}[x["on_point"]]
            wrong = f" ({x['errors']} err: {x['heard']})" if x["errors"] else ""
            cells.append(f"{mark}{wrong}")
            if "v2f_s" in x.get("v2f", {}):
                v2f += f"{v}: {x['v2f']['v2f_s']:.2f} "
            if v in ("piper", "jfk.flac"):
                reply = x["reply"][:140].replace("|", "/")
        lines.append(f"| {item} | " + " | ".join(c.replace("|", "/") for c in cells) + f" | {v2f.strip()} | {reply} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"items {', '.join(QUICK_ITEMS)}; one V2F turn")
    parser.add_argument("--items", nargs="+", help="item ids (default: all)")
    parser.add_argument("--voices", nargs="+", help="piper, espeak-150, espeak-200 (jfk.flac always)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="override the app config: section.field=value (YAML), e.g. asr.model=base")
    parser.add_argument("--v2f-voices", nargs="*", help="voices timed over the WebSocket session (default: piper jfk.flac)")
    parser.add_argument("--v2f-limit", type=int, help="at most this many V2F turns")
    parser.add_argument("--no-eot", dest="eot", action="store_false", help="skip the end-of-turn measurement")
    parser.add_argument("--no-answers", dest="answers", action="store_false", help="hearing only: no LLM replies")
    parser.add_argument("--clips", type=Path, help="keep the synthesised clips here (npz) and reuse them")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--tables-from", type=Path, nargs="+",
                        help="print the tables of earlier runs' JSON, rescored (two: also item by item, before and after)")
    args = parser.parse_args()
    if args.tables_from:
        runs = [rescore(json.loads(p.read_text())) for p in args.tables_from]
        for r in runs:
            print(tables(r), end="\n\n")
        if len(runs) == 2:
            print(compare(*runs))
        return
    args.overrides = parse_set(args.overrides)
    if args.quick:
        args.items = args.items or list(QUICK_ITEMS)
        args.voices = args.voices or ["piper", "espeak-200"]
        args.v2f_limit = args.v2f_limit or 1
    if args.v2f_voices is None:
        args.v2f_voices = ["piper", "jfk.flac"]
    result = asyncio.run(run(args))
    print(tables(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
