"""Where a turn's time goes, on real speech: one entry point for the latency benchmarks.

    .venv/bin/python -m benchmarks.run [--quick] [--json results.json]

Starts Ray and Serve in this process, deploys the graph as `serve run serve_config.yaml` does (its
`args` and its `deployments` options), measures, and stops them. The inputs are `jfk.flac` (11 s,
with two mid-sentence pauses) and questions spoken by the embedded Piper voice at run time. Replies
are greedy (temperature 0), so the graph and the in-process stages write the same words; and each
client may run more turns at once than the shipped admission allows (all clients here are one IP).
Printed as markdown tables; `--json PATH` writes the same numbers, as `capacity.schema.BenchResult`
(the fields below; the capacity planner reads the file through the same models):

- `v2f_p50_s`, `v2f_p95_s`, `v2f_parts_p50_s` {endpointing, asr, rest}: voice to face, the headline.
  A client streams each clip over `/ws` as the page does (`benchmarks/voice_to_face.py`), one
  session, turn after turn; from the last voiced sample sent to the first `segment`.
- `floor_s`: each stage alone, in-process, on the same utterance: ASR, LLM to the end of the first
  sentence, TTS to its first chunk, the animator to its first fragment; `floor_parts_s` per stage.
- `ttfs_s`: time to first segment through the graph (the ingress handle's `run_turn` on the decoded
  utterance, timed by the caller); `ttfs_over_floor`: median of ttfs / floor over paired runs.
- `serve_overhead`: ttfs through the graph / ttfs of the same turn code (`serve_app/turn.py`) and the
  same stage classes composed in this process without Serve, minus 1.
- `streaming_over_sequential`: first segment of the streamed turn / first segment in the seed
  system's order (ASR, the whole reply, then TTS and one whole-sentence animation per sentence),
  through the same stage handles, on a question whose reply has at least four sentences
  (`sequential_sentences` says how many it had).
- `underruns`: over one long reply (`long_reply_speech_s`, 30 s of speech or more in a full run),
  received over `/ws`: fragments that arrive after the previous one has finished playing.
- `concurrency`: [{sessions, turns, v2f_p50_s, v2f_p95_s, turns_per_min, reply_speech_s,
  reply_sentences (medians), cpu_per_turn_s, cpu_busy_share, turns_detail}] for 1, 2 and 4 sessions
  talking at once over `/ws` (each session: turn after turn, no think time, hearing each reply out
  before the next unless `--clients back-to-back`; session i's turn k speaks input (i + k) mod the
  inputs). `cpu_per_turn_s`: CPU seconds per turn by process group (each deployment,
  `proxy`, `ray`, `client` (this process: the clients), `other`, `machine` (every process), from
  `benchmarks/cpu_usage.py`); `cpu_busy_share`: the machine's busy share of its cores meanwhile;
  `turns_detail`: each turn's session, input, client cycle, voice to face, reply shape and early
  starts cancelled (`run.turn_record`), which the capacity planner replays.
- `rtf` {asr, llm, tts, animator}: compute seconds per second of audio (ASR: heard; TTS and
  animator: spoken; LLM: of the speech its reply makes).
- `costs` (`capacity.schema.Costs`): the cost model the capacity planner reads, fitted as a line
  over calls of several sizes, in-process, one call at a time on this machine: per stage its fixed
  part and its slope (per second of input audio for ASR, per token for the LLM, per second of output
  audio for TTS and the animator), its first output, the calls fitted and r²; TTS's median chunk;
  the endpointing setting; and the replies' medians over this run's inputs (`workload`). Every
  number is in seconds (or tokens) and finite. `machine` says where and when.
- `first_sentence_first` (not with --quick or --no-ab): the shipped settings against the alternative
  thread settings in `ALTERNATIVE`, the latter as a second ingress with its own deployments of the
  stages those settings touch, turns alternating: {"shipped": {"ttfs_s", "ttfs_over_floor"}, "alternative": {...}, "settings": ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks import cpu_usage
from benchmarks import voice_to_face as v2f
from capacity.schema import (
    AnimatorCost,
    AsrCost,
    BenchResult,
    Concurrency,
    Costs,
    Endpointing,
    FirstSentenceFirst,
    Input,
    InputSummary,
    LlmCost,
    Machine,
    PerInput,
    RepliesSeen,
    StageSeconds,
    TtsCost,
    TurnRecord,
    V2fParts,
)
from capacity.stats import quantile
from capacity.waterfall import MILESTONES
from serve_app.local import free_port, use_local_ray, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
use_local_ray()  # the Graph starts Ray in this process
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before the stages import huggingface_hub (lazily, below)

QUESTIONS = [
    "What is the tallest mountain in the world?",
    "Could you name three animals that live in the ocean?",
    "Why is the sky blue?",
]
LONG_QUESTION = "Tell me a long story about a brave little dragon who learns to fly."
# The thread settings compared with the shipped ones (docs/benchmarks.md, "First sentence first"):
# the seed's, where llama.cpp writes on both cores and Piper's ONNX Runtime takes one thread per
# core, against the shipped one thread each while writing and speaking.
ALTERNATIVE = {"llm": {"n_threads": 2, "n_threads_batch": 2}, "tts": {"intra_op_threads": 0}}
STAGE_NAMES = {"asr": "ASR", "llm": "LLM", "tts": "TTS", "animator": "Animator"}


# ---- configuration and the graph ---------------------------------------------------------------

def shipped_args() -> dict:
    return yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][0]["args"]


def merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`, section by section; a section that names another backend replaces the
    old one's fields (`--set asr.backend=moonshine` drops faster-whisper's `compute_type`)."""
    if "backend" in over and over["backend"] != base.get("backend"):
        base = {}
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def parse_set(values: list[str]) -> dict:
    """`--set section.field=value` options (each value read as YAML) as one nested dict for `merge`."""
    out: dict = {}
    for value in values:
        path, _, raw = value.partition("=")
        node = out
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node[leaf] = value if isinstance(value, (bool, int, float, str, type(None))) else raw  # text stays text
    return out


def bench_config(over: dict | None = None):
    """serve_config.yaml's args, greedy, with room for several sessions from one client."""
    from avatar_core.config import AppConfig

    args = merge(shipped_args(), {"llm": {"temperature": 0.0},
                                  "admission": {"max_turns_per_client": 16, "max_sessions_per_client": 16}})
    return AppConfig.model_validate(merge(args, over or {}))


class Graph:
    """Ray, Serve and the graph, started here and stopped on exit."""

    def __init__(self, cfg):
        import ray
        from ray import serve

        from serve_app.builder import build_app, with_deployment_options, yaml_deployment_options

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        self.port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": self.port})
        self.options = yaml_deployment_options()
        serve.run(with_deployment_options(build_app(cfg), self.options), name="avatar", route_prefix="/")
        wait_healthy(self.base_url)
        self.ingress = serve.get_deployment_handle("Ingress", app_name="avatar")
        self.stages = {k: serve.get_deployment_handle(n, app_name="avatar") for k, n in STAGE_NAMES.items()}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, app: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}{'/' + app if app else ''}/ws"

    def second_ingress(self, name: str, cfg, own: tuple[str, ...], autoscaled: bool = False):
        """An ingress with `cfg` at /`name`, with its own deployments of the stages in `own` (built
        from `cfg`, scaled as serve_config.yaml scales the main app's when `autoscaled`) and the main
        app's others; its handle."""
        from ray import serve

        from deployments.animator import Animator
        from deployments.asr import ASR
        from deployments.llm import LLM
        from deployments.tts import TTS
        from serve_app.builder import stage_app, with_options
        from serve_app.ingress import Ingress

        classes = {"asr": ASR, "llm": LLM, "tts": TTS, "animator": Animator}
        storage = (str(cfg.storage.dir),)
        stages = []
        for stage in STAGE_NAMES:
            if stage in own:
                extra = storage if stage in ("tts", "animator") else ()
                app = stage_app(classes[stage], stage, getattr(cfg, stage), *extra)
                scaling = {k: v for k, v in self.options.get(STAGE_NAMES[stage], {}).items()
                           if k in ("autoscaling_config", "max_ongoing_requests")} if autoscaled else {}
                stages.append(with_options(app, ray_actor_options={"num_cpus": 0, "num_gpus": 0}, **scaling))
            else:
                stages.append(self.stages[stage])
        ingress = Ingress.options(ray_actor_options={"num_cpus": 0, "num_gpus": 0}).bind(*stages, cfg)
        serve.run(ingress, name=name, route_prefix=f"/{name}", blocking=False)
        wait_healthy(f"{self.base_url}/{name}")
        return serve.get_deployment_handle("Ingress", app_name=name)

    def close(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


# ---- the stages in this process, without Serve --------------------------------------------------

class _Call:
    def __init__(self, coro):
        self.task = asyncio.ensure_future(coro)

    def __await__(self):
        return self.task.__await__()

    def cancel(self) -> None:
        self.task.cancel()


class _Stream:
    def __init__(self, agen):
        self.agen = agen

    def __aiter__(self):
        return self

    async def __anext__(self):
        return await self.agen.__anext__()

    def cancel(self) -> None:
        async def close():
            try:
                await self.agen.aclose()
            except RuntimeError:  # still running: its consumer's cancellation ends it
                pass

        asyncio.ensure_future(close())


class LocalHandle:
    """What the turn asks of a DeploymentHandle (`.options(stream=...)`, `.method.remote(...)`,
    `.cancel()`), answered by a stage object in this process."""

    def __init__(self, obj, stream: bool = False):
        self._obj, self._stream = obj, stream

    def options(self, stream: bool | None = None, **_) -> "LocalHandle":
        return LocalHandle(self._obj, self._stream if stream is None else stream)

    def __getattr__(self, name):
        method, stream = getattr(self._obj, name), self._stream

        class Remote:
            @staticmethod
            def remote(*args, **kwargs):
                return _Stream(method(*args, **kwargs)) if stream else _Call(method(*args, **kwargs))

        return Remote


async def local_stages(cfg, only: tuple[str, ...] = ("asr", "llm", "tts", "animator")) -> dict:
    """The stage deployments' classes (all four, or `only` these), built here: the same backends and
    code, without Serve."""
    from deployments.animator import Animator
    from deployments.asr import ASR
    from deployments.llm import LLM
    from deployments.tts import TTS

    out = {}
    for stage, deployment in (("asr", ASR), ("llm", LLM), ("tts", TTS), ("animator", Animator)):
        if stage not in only:
            continue
        cls = deployment.func_or_class
        obj = cls.__new__(cls)
        extra = (str(cfg.storage.dir),) if stage in ("tts", "animator") else ()
        await cls.__init__(obj, getattr(cfg, stage), *extra)
        out[stage] = obj
    return out


def local_turn_stages(stages: dict, cfg):
    from serve_app.turn import Stages

    h = {k: LocalHandle(v) for k, v in stages.items()}
    return Stages.of(h["asr"], h["llm"], h["tts"], h["animator"], cfg)


# ---- measurements -------------------------------------------------------------------------------

async def first_segment(events) -> float:
    """Seconds from now until the first segment event of a turn's event stream (then drained)."""
    started, first = time.perf_counter(), None
    async for event in events:
        if event["type"] == "segment" and first is None:
            first = time.perf_counter() - started
        elif event["type"] == "error":
            raise RuntimeError(event)
    if first is None:
        raise RuntimeError("the turn sent no segment")
    return first


async def graph_ttfs(ingress, pcm) -> float:
    return await first_segment(ingress.options(stream=True).run_turn.remote(pcm))


async def local_ttfs(stages, cfg, pcm) -> float:
    from serve_app.conversation import Conversation
    from serve_app.metrics import TurnCounts
    from serve_app.turn import Turn

    turn = Turn(local_turn_stages(stages, cfg), cfg, Conversation(id="local"), pcm, "local", TurnCounts())
    return await first_segment(event.to_json() async for event, _ in turn.run())


async def floor(stages, cfg, pcm) -> dict:
    """Each stage alone on this utterance: the parts of the first segment's critical path."""
    from serve_app.conversation import Conversation
    from serve_app.sentences import SentenceSplitter

    parts = {}
    t = time.perf_counter()
    text = await stages["asr"].transcribe(pcm, "en")
    parts["asr"] = time.perf_counter() - t
    messages = Conversation(id="floor").messages(cfg.llm, text)
    splitter, sentence, t = SentenceSplitter(), None, time.perf_counter()
    deltas = stages["llm"].chat(messages)
    async for delta in deltas:
        if pieces := splitter.push(delta):
            sentence = pieces[0]
            break
    parts["llm"] = time.perf_counter() - t
    await deltas.aclose()
    sentence = sentence or " ".join(splitter.flush())
    t = time.perf_counter()
    chunks = stages["tts"].stream(sentence)
    chunk = await anext(chunks)
    parts["tts"] = time.perf_counter() - t
    await chunks.aclose()
    t = time.perf_counter()
    fragments = stages["animator"].animate(chunk, None, "default", cfg.animator.first_fragment_s,
                                           cfg.animator.fragment_s, growth=cfg.animator.fragment_growth)
    await anext(fragments)
    parts["animator"] = time.perf_counter() - t
    await fragments.aclose()
    return parts


async def sequential_first_segment(handles: dict, cfg, pcm) -> tuple[float, int]:
    """The seed system's order through the stage handles: ASR, the whole reply, then per sentence
    TTS and one whole-sentence animation. Seconds to the first segment, and the sentence count."""
    from serve_app.conversation import Conversation
    from serve_app.sentences import SentenceSplitter

    started = time.perf_counter()
    text = await handles["asr"].transcribe.remote(pcm, "en")
    messages = Conversation(id="sequential").messages(cfg.llm, text)
    reply = "".join([d async for d in handles["llm"].options(stream=True).chat.remote(messages)])
    splitter = SentenceSplitter()
    sentences = splitter.push(reply) + splitter.flush()
    speech = await handles["tts"].synthesize.remote(sentences[0])
    async for _ in handles["animator"].options(stream=True).animate.remote(speech, None, "default", 30.0, 30.0):
        pass  # one fragment: the whole sentence
    return time.perf_counter() - started, len(sentences)


def fit(xs: list[float], ys: list[float]) -> dict:
    """ys ≈ fixed + slope * xs, least squares, with r²."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    if len(set(xs)) < 2:
        return {"fixed_s": float(np.median(y)), "slope": 0.0, "r2": 0.0, "samples": len(xs)}
    slope, fixed = np.polyfit(x, y, 1)
    pred = fixed + slope * x
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else 0.0
    return {"fixed_s": float(fixed), "slope": float(slope), "r2": r2, "samples": len(xs)}


async def costs(stages, cfg, clips: list[np.ndarray], texts: list[str], repeats: int) -> tuple[Costs, StageSeconds]:
    """Per-call cost of each stage, fitted over calls of several sizes, in this process, one at a
    time, with what the replies were like (the workload); and each stage's real-time factor."""
    from serve_app.conversation import Conversation
    from serve_app.sentences import SentenceSplitter

    asr_x, asr_y = [], []
    for pcm in clips:
        for _ in range(repeats):
            t = time.perf_counter()
            await stages["asr"].transcribe(pcm, "en")
            asr_x.append(len(pcm) / 16_000)
            asr_y.append(time.perf_counter() - t)
    llm_x, llm_y, first_tok, replies = [], [], [], []
    for text in texts:
        messages = Conversation(id="costs").messages(cfg.llm, text)
        t, n, first = time.perf_counter(), 0, None
        parts = []
        async for delta in stages["llm"].chat(messages):
            first = first or time.perf_counter() - t
            n += 1
            parts.append(delta)
        llm_x.append(n)
        llm_y.append(time.perf_counter() - t)
        first_tok.append(first)
        replies.append("".join(parts).strip())
    tts_x, tts_y, tts_first, anim_x, anim_y, anim_first = [], [], [], [], [], []
    speech_of_reply, sentences_of_reply, first_sentence_s, chunk_s = [], [], [], []
    for reply in replies:
        splitter = SentenceSplitter()
        sentences = splitter.push(reply) + splitter.flush()
        sentences_of_reply.append(len(sentences))
        total = 0.0
        for k, sentence in enumerate(sentences):
            t, first, pcm, rate = time.perf_counter(), None, [], 22_050
            async for chunk in stages["tts"].stream(sentence):
                first = first or time.perf_counter() - t
                pcm.append(chunk.pcm)
                rate = chunk.sample_rate
                chunk_s.append(len(chunk.pcm) / rate)
            tts_y.append(time.perf_counter() - t)
            tts_first.append(first)
            seconds = sum(map(len, pcm)) / rate
            tts_x.append(seconds)
            total += seconds
            if k == 0:
                first_sentence_s.append(seconds)
            if k < 2:  # the animator: a few sentences are enough for its line
                from avatar_core.types import Speech

                speech = Speech(np.concatenate(pcm), rate)
                t, first = time.perf_counter(), None
                async for _ in stages["animator"].animate(speech, None, "default", 30.0, 30.0):
                    first = first or time.perf_counter() - t
                anim_y.append(time.perf_counter() - t)
                anim_x.append(seconds)
                t = time.perf_counter()
                fragments = stages["animator"].animate(speech, None, "default", cfg.animator.first_fragment_s,
                                                       cfg.animator.fragment_s)
                await anext(fragments)
                anim_first.append(time.perf_counter() - t)
                await fragments.aclose()
        speech_of_reply.append(total)
    asr, llm, tts, anim = fit(asr_x, asr_y), fit(llm_x, llm_y), fit(tts_x, tts_y), fit(anim_x, anim_y)
    med = statistics.median
    tokens_per_speech_s = sum(llm_x) / sum(speech_of_reply)
    line = lambda f: {"fixed_s": f["fixed_s"], "per_audio_s": f["slope"], "r2": f["r2"], "samples": f["samples"]}  # noqa: E731
    cost = Costs(
        asr=AsrCost(**line(asr)),
        llm=LlmCost(fixed_s=llm["fixed_s"], per_token_s=llm["slope"], first_token_s=med(first_tok),
                    tokens_per_speech_s=tokens_per_speech_s, r2=llm["r2"], samples=llm["samples"]),
        tts=TtsCost(**line(tts), first_chunk_s=med(tts_first), chunk_s=med(chunk_s)),
        animator=AnimatorCost(**line(anim), first_fragment_s=med(anim_first)),
        endpointing=Endpointing(end_silence_s=cfg.endpointing.end_silence_s),
        workload=RepliesSeen(utterance_s=med([len(p) / 16_000 for p in clips]), reply_tokens=med(llm_x),
                             reply_speech_s=med(speech_of_reply), reply_sentences=med(sentences_of_reply),
                             first_sentence_speech_s=med(first_sentence_s)),
    )
    rtf = StageSeconds(asr=sum(asr_y) / sum(asr_x), llm=sum(llm_y) / sum(speech_of_reply),
                       tts=sum(tts_y) / sum(tts_x), animator=sum(anim_y) / sum(anim_x))
    return cost, rtf


async def sessions_at_once(ws_url: str, clips: list[np.ndarray], ends: list[float], sessions: int,
                           turns: int, listen: bool = True) -> tuple[Concurrency, list[v2f.Turn]]:
    """`sessions` clients talking at once over /ws, each turn after turn, starts staggered; and the
    turns as the client saw them. `listen`: each client hears the reply out (as its page would play
    it, with the page's jitter buffer) before it speaks again, as a person does and as the capacity
    planner's sessions do (`wait_for_playback`); otherwise it speaks again the moment `done` comes,
    while the reply would still be playing, so that each client loads the graph like several people."""
    results: list[v2f.Turn] = []
    detail: list[TurnRecord] = []

    async def client(i: int) -> None:
        await asyncio.sleep(i * 0.5)
        mine: list[v2f.Turn] = []
        for k in range(turns):
            j = (i + k) % len(clips)
            t = await v2f.hands_free(ws_url, clips[j], end_s=ends[j])
            results.append(t)
            detail.append(turn_record(t, i, j, started))
            mine.append(t)
            if listen:
                await asyncio.sleep(t.still_playing_s(page_holds(mine)[-1]))

    started, cpu_before = time.perf_counter(), cpu_usage.snapshot()
    await asyncio.gather(*(client(i) for i in range(sessions)))
    cpu = cpu_usage.spent(cpu_before, cpu_usage.snapshot())
    minutes = (time.perf_counter() - started) / 60
    s = v2f.summary(results)
    return Concurrency(
        sessions=sessions, turns=len(results), v2f_p50_s=s["v2f_p50_s"], v2f_p95_s=s["v2f_p95_s"],
        turns_per_min=len(results) / minutes, reply_speech_s=median([d.reply_speech_s for d in detail]),
        reply_sentences=median([d.reply_sentences for d in detail]),
        cpu_per_turn_s={k: v / len(results) for k, v in cpu.items()},
        cpu_busy_share=cpu["machine"] / (minutes * 60 * (os.cpu_count() or 1)), turns_detail=detail), results


def turn_record(t: v2f.Turn, session: int, clip: int, started: float) -> TurnRecord:
    """One turn of a concurrency run as the capacity planner replays it: when its session began it
    (seconds into the run), the client's cycle, voice to face and its parts, the reply's shape, and
    the turns started early and cancelled because the speaker went on (seconds into the clip)."""
    first = min((g["sentence"] for g in t.segments), default=0)
    return TurnRecord(
        session=session, input=clip, began_s=t.began - started, opened_s=t.opened_s, streamed_s=t.streamed_s,
        voiced_s=t.voiced_s, done_s=t.done_s, v2f_s=t.v2f_s, endpointing_s=t.endpointing_s, asr_s=t.asr_s,
        rest_s=t.rest_s, reply_speech_s=sum(g["duration_s"] for g in t.segments),
        reply_sentences=len({g["sentence"] for g in t.segments}),
        first_sentence_speech_s=sum(g["duration_s"] for g in t.segments if g["sentence"] == first),
        cancelled_starts=[tuple(c) for c in t.cancelled_starts])


# ---- the run ------------------------------------------------------------------------------------

def median(xs):
    return statistics.median(xs) if xs else float("nan")


async def spoken(tts, text: str) -> np.ndarray:
    """A question in the Piper voice, at 16 kHz, with a little silence before it."""
    from avatar_core.media import resample

    pcm = [c async for c in tts.stream(text)]
    audio = resample(np.concatenate([c.pcm for c in pcm]), pcm[0].sample_rate, 16_000)
    return np.concatenate([np.zeros(8_000, np.float32), audio]).astype(np.float32)


async def run(args) -> BenchResult:
    from avatar_core.media import decode_audio

    cfg = bench_config(args.overrides)
    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    local = await local_stages(cfg)  # before Ray: loading models here does not slow the replicas' start
    questions = QUESTIONS[: args.questions]
    clips = [decode_audio(v2f.JFK.read_bytes(), 60)] + [await spoken(local["tts"], q) for q in questions]
    names = ["jfk.flac"] + [f"Piper: {q}" for q in questions]
    ends = [v2f.speech_end_s(p) for p in clips]
    out: dict = {"inputs": [Input(name=n, seconds=round(len(p) / 16_000, 2), speech_end_s=round(e, 2))
                            for n, p, e in zip(names, clips, ends)]}
    graph = Graph(cfg)
    try:
        ingress = graph.ingress
        log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
        for pcm in clips:  # warm: one unmeasured turn per input through each path
            await graph_ttfs(ingress, pcm)
            await local_ttfs(local, cfg, pcm)
        log("warm")

        # floor, through the graph, composed in-process: alternating, paired per input and run
        rows = []
        for r in range(args.runs):
            for i, pcm in enumerate(clips):
                parts = await floor(local, cfg, pcm)
                g = await graph_ttfs(ingress, pcm)
                loc = await local_ttfs(local, cfg, pcm)
                rows.append({"input": i, "floor": sum(parts.values()), "parts": parts, "graph": g, "local": loc})
        out["floor_s"] = median([r["floor"] for r in rows])
        out["floor_parts_s"] = StageSeconds(**{k: median([r["parts"][k] for r in rows]) for k in STAGE_NAMES})
        out["ttfs_s"] = median([r["graph"] for r in rows])
        out["ttfs_local_s"] = median([r["local"] for r in rows])
        out["ttfs_over_floor"] = median([r["graph"] / r["floor"] for r in rows])
        out["serve_overhead"] = median([r["graph"] / r["local"] - 1 for r in rows])
        out["per_input"] = [PerInput(input=names[i], floor_s=median([r["floor"] for r in rows if r["input"] == i]),
                                     ttfs_s=median([r["graph"] for r in rows if r["input"] == i]),
                                     ttfs_local_s=median([r["local"] for r in rows if r["input"] == i]))
                            for i in range(len(clips))]
        log("floor", out["floor_s"], out["ttfs_s"])

        # first sentence first: shipped settings against the alternative, alternating
        if args.ab:
            alt_cfg = bench_config(ALTERNATIVE)
            alt = graph.second_ingress("alternative", alt_cfg, own=tuple(ALTERNATIVE))
            for pcm in clips:
                await graph_ttfs(alt, pcm)
            ab = {"shipped": [], "alternative": []}
            for r in range(args.runs):
                for i, pcm in enumerate(clips):
                    f = await floor(local, cfg, pcm)
                    fl = sum(f.values())
                    order = (("shipped", ingress), ("alternative", alt))
                    for name, handle in (order if (r + i) % 2 == 0 else order[::-1]):
                        ab[name].append((await graph_ttfs(handle, pcm), fl))
            out["first_sentence_first"] = FirstSentenceFirst(
                **{name: {"ttfs_s": median([t for t, _ in xs]), "ttfs_over_floor": median([t / f for t, f in xs])}
                   for name, xs in ab.items()},
                alternative_over_shipped=median([a[0] / s[0] for a, s in zip(ab["alternative"], ab["shipped"])]),
                settings=ALTERNATIVE)
            from ray import serve

            serve.delete("alternative")
            log("ab", out["first_sentence_first"])

        # streaming against the seed system's order, on a reply of several sentences
        long_pcm = await spoken(local["tts"], LONG_QUESTION)
        seq, streamed, counts = [], [], []
        for _ in range(max(1, args.runs // 2 + 1)):
            streamed.append(await graph_ttfs(ingress, long_pcm))
            s, n = await sequential_first_segment(graph.stages, cfg, long_pcm)
            seq.append(s)
            counts.append(n)
        out["streaming_over_sequential"] = median([a / b for a, b in zip(streamed, seq)])
        out["sequential_first_segment_s"], out["streamed_first_segment_s"] = median(seq), median(streamed)
        out["sequential_sentences"] = min(counts)
        log("sequential", out["streaming_over_sequential"], counts)

        # underruns over a long reply, received over /ws
        long_cfg = bench_config({"llm": {"max_tokens": args.long_tokens}})
        graph.second_ingress("long", long_cfg, own=("llm",))
        turn = await v2f.hands_free(graph.ws_url("long"), long_pcm)
        out["underruns"] = turn.underruns()
        out["long_reply_speech_s"] = sum(s["duration_s"] for s in turn.segments)
        out["long_reply_fragments"] = len(turn.segments)
        from ray import serve

        serve.delete("long")
        log("underruns", out["underruns"], out["long_reply_speech_s"])

        # voice to face, one session, then several at once
        conc = []
        for n in args.sessions:
            turns = args.runs * len(clips) if n == 1 else max(1, args.session_turns or args.runs)
            conc.append(await sessions_at_once(graph.ws_url(), clips, ends, n, turns, listen=args.listen))
            log("sessions", n, conc[-1][0].v2f_p50_s)
        _, one = next((c for c in conc if c[0].sessions == 1), conc[0])  # its turns as the client saw them
        s = v2f.summary(one)
        out["v2f_p50_s"], out["v2f_p95_s"] = s["v2f_p50_s"], s["v2f_p95_s"]
        out["v2f_parts_p50_s"] = V2fParts(endpointing=s["endpointing_p50_s"], asr=s["asr_p50_s"], rest=s["rest_p50_s"])
        out["v2f_per_input"] = [
            InputSummary(input=names[i], **v2f.summary([t for t, c in zip(one, _cycle(len(clips))) if c == i]))
            for i in range(len(clips))]
        out["concurrency"] = [c for c, _ in conc]
    finally:
        graph.close()

    # costs and real-time factors: in-process, one call at a time, with the cluster stopped
    sizes = [clips[0][: int(s * 16_000)] for s in (2.5, 5.5)] + clips if not args.quick else clips
    out["costs"], out["rtf"] = await costs(local, cfg, sizes, [*questions, LONG_QUESTION][: 1 + args.questions],
                                                  repeats=1 if args.quick else 2)
    out["machine"] = Machine(date=started_at, commit=commit(), cpus=os.cpu_count(),
                             load_before=[round(x, 2) for x in load_before],
                             load_after=[round(x, 2) for x in os.getloadavg()], quick=args.quick, runs=args.runs)
    return BenchResult(**out)


# ---- playback: the quality ladder and the page's jitter buffer, before and after ----------------

# before: one rung (the animator as it was), later pieces of the reply whole sentences, 1 s fragments
# from the second on; pieces: the quality ladder, the page's buffer and growing pieces, still 1 s
# fragments (as shipped at 0ac165c); after: as shipped (fragments growing too)
BEFORE = {"animator": {"ladder": [{"name": "25 fps"}], "fragment_growth": None}, "tts": {"piece_growth": None}}
PIECES = {"animator": {"fragment_growth": None}}
ARMS = ("before", "pieces", "after")
WATERFALL = MILESTONES  # the planner's milestones (capacity/waterfall.py), measured


def page_holds(turns: list[v2f.Turn]) -> list[float]:
    """The jitter buffer the page (ui/player.js) would have held each of one client's turns, in
    order: from the needs of the turns before it (serve_app/playback.py, the same arithmetic), or
    the server's figure on the turn's first segment when that is longer."""
    from avatar_core.playback import MAX_HOLD_S, hold_s, need

    holds, needs = [], []
    for t in turns:
        hint = min(MAX_HOLD_S, t.segments[0]["hold_s"]) if t.segments else 0.0
        holds.append(max(hold_s(needs), hint))
        if len(t.segments) > 1:
            needs.append(need([g["t"] for g in t.segments], [g["duration_s"] for g in t.segments]))
    return holds


def stalls(segments: list[dict], hold_s: float) -> list[dict]:
    """Each fragment that came after the one before had finished (a page holding `hold_s`): its
    index, whether it starts a sentence, how late it came, its rung and length."""
    out, end = [], segments[0]["t"] + hold_s if segments else 0.0
    for k, g in enumerate(segments):
        if g["t"] > end:
            out.append({"index": k, "new_sentence": k > 0 and g["sentence"] != segments[k - 1]["sentence"],
                        "late_s": round(g["t"] - end, 3), "rung": g["rung"], "duration_s": g["duration_s"]})
            end = g["t"]
        end += g["duration_s"]
    return out


def waterfall(t: v2f.Turn) -> dict[str, float]:
    """A turn's milestones in seconds after the last voiced sample: the client's own (the events it
    received) and the server's, placed after the `turn` event by the offsets `done` reports."""
    m, server = t.marks, t.timings
    out = {"utterance_end": t.endpointing_s, "transcript": t.endpointing_s + t.asr_s,
           "first_token": m.get("first_token"), "first_clause": m.get("first_clause"),
           "first_audio": m["turn"] + server["first_audio"] if "first_audio" in server else None,
           "first_fragment": m["turn"] + server["first_segment"] if "first_segment" in server else None,
           "sent": t.v2f_s}
    return {k: v for k, v in out.items() if v is not None}


def playback_row(arm: str, sessions: int, turns: list[v2f.Turn], detail: list[TurnRecord]) -> dict:
    """One arm at one number of sessions: underruns (on a page without a buffer, and with the
    page's buffer for `after`), the rungs used, and voice to face with and without the hold."""
    by_client: dict[int, list[int]] = {}
    for k, d in enumerate(detail):
        by_client.setdefault(d.session, []).append(k)
    from avatar_core.playback import need

    holds = [0.0] * len(turns)
    if arm != "before":  # the page's jitter buffer
        for ks in by_client.values():
            for k, h in zip(ks, page_holds([turns[k] for k in ks])):
                holds[k] = h
    rungs: dict[int, int] = {}
    for t in turns:
        for g in t.segments:
            rungs[g["rung"]] = rungs.get(g["rung"], 0) + 1
    v2f_s = [t.v2f_s for t in turns]
    played = [t.v2f_s + h for t, h in zip(turns, holds)]
    detail = [{"session": d.session, "input": d.input, "hold_s": h, "v2f_s": t.v2f_s,
               "need_s": need([g["t"] for g in t.segments], [g["duration_s"] for g in t.segments]),
               "late": stalls(t.segments, h)} for t, d, h in zip(turns, detail, holds)]
    return {"arm": arm, "sessions": sessions, "turns": len(turns), "detail": detail,
            "fragments": sum(len(t.segments) for t in turns),
            "underruns_no_buffer": sum(t.underruns() for t in turns),
            "underruns": sum(t.underruns(h) for t, h in zip(turns, holds)),
            "turns_with_underruns": sum(t.underruns(h) > 0 for t, h in zip(turns, holds)),
            "rungs": dict(sorted(rungs.items())), "hold_p50_s": quantile(holds, 0.5), "hold_max_s": max(holds),
            "v2f_p50_s": quantile(v2f_s, 0.5), "v2f_p95_s": quantile(v2f_s, 0.95),
            "played_p50_s": quantile(played, 0.5), "played_p95_s": quantile(played, 0.95),
            "waterfall_p50_s": {k: quantile([w[k] for w in map(waterfall, turns) if k in w], 0.5)
                                for _, k in WATERFALL}}


async def playback_ab(args) -> dict:
    """The concurrency runs once per arm per number of sessions, the arms' order rotating: `before`,
    an ingress whose animator has one rung (as it was) and whose reply reaches TTS in whole sentences,
    on a page that plays each fragment on arrival; `pieces`, the ladder, the page's jitter buffer and
    growing pieces, 1 s fragments after the first; `after`, the shipped graph (fragments growing too) on the page
    with its jitter buffer. The same ASR, LLM and TTS replicas serve all three, and the same
    Animator `pieces` and `after` (the ingress passes the fragments' growth with each call)."""
    from avatar_core.media import decode_audio
    from ray import serve

    cfg = bench_config(args.overrides)
    started_at, load_before = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
    local = await local_stages(cfg, only=("tts",))
    questions = QUESTIONS[: args.questions]
    clips = [decode_audio(v2f.JFK.read_bytes(), 60)] + [await spoken(local["tts"], q) for q in questions]
    ends = [v2f.speech_end_s(p) for p in clips]
    del local
    graph = Graph(cfg)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    try:
        if "before" in args.arms:
            graph.second_ingress("before", bench_config(BEFORE), own=("animator",), autoscaled=True)
        if "pieces" in args.arms:
            graph.second_ingress("pieces", bench_config(PIECES), own=())
        urls = {arm: graph.ws_url("" if arm == "after" else arm) for arm in args.arms}
        for pcm, end in zip(clips, ends):  # warm: one unmeasured turn per input on each arm
            for url in urls.values():
                await v2f.hands_free(url, pcm, end_s=end)
        log("warm")
        rows = []
        runs = [(arm, clients) for arm in args.arms for clients in args.clients]
        for i, n in enumerate(args.sessions):
            turns = args.runs * len(clips) if n == 1 else max(1, args.session_turns or args.runs)
            for arm, clients in runs[i % len(runs):] + runs[:i % len(runs)]:
                conc, got = await sessions_at_once(urls[arm], clips, ends, n, turns, listen=clients == "listening")
                rows.append(playback_row(arm, n, got, conc.turns_detail) | {"clients": clients})
                log(arm, clients, n, {k: rows[-1][k] for k in ("underruns_no_buffer", "underruns", "rungs", "v2f_p50_s")})
                log(json.dumps([d for d in rows[-1]["detail"] if d["late"]]))  # where the stalls were
        ladder = await serve.get_deployment_handle("Animator", app_name="avatar").ladder_stats.remote()
    finally:
        graph.close()
    return {"rows": rows, "ladder": ladder, "date": started_at, "commit": commit(), "cpus": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()]}


def playback_tables(r: dict) -> str:
    rows = r["rows"]
    lines = [f"Playback: {r['date']}, commit {r['commit']}, {r['cpus']} CPUs, load {r['load_before'][0]:.1f} before / "
             f"{r['load_after'][0]:.1f} after", "",
             "| sessions | clients | arm | turns | fragments | underruns, page without buffer | underruns, the arm's page | "
             "turns with one | rungs used (fragments) | page's hold p50 / max (s) | v2f p50 / p95 (s) | "
             "v2f + hold p50 / p95 (s) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in rows:
        rungs = ", ".join(f"{k}: {v}" for k, v in x["rungs"].items())
        lines.append(f"| {x['sessions']} | {x['clients']} | {x['arm']} | {x['turns']} | "
                     f"{x['fragments']} | {x['underruns_no_buffer']} | "
                     f"{x['underruns']} | {x['turns_with_underruns']} | {rungs} | {x['hold_p50_s']:.2f} / "
                     f"{x['hold_max_s']:.2f} | {x['v2f_p50_s']:.2f} / {x['v2f_p95_s']:.2f} | "
                     f"{x['played_p50_s']:.2f} / {x['played_p95_s']:.2f} |")
    lines += ["", "Waterfall, p50 seconds after the last voiced sample:", "",
              "| sessions | clients | arm | " + " | ".join(name for name, _ in WATERFALL) + " |",
              "|---|---|---|" + "---|" * len(WATERFALL)]
    for x in rows:
        w = x["waterfall_p50_s"]
        lines.append(f"| {x['sessions']} | {x['clients']} | {x['arm']} | "
                     + " | ".join(f"{w[k]:.2f}" for _, k in WATERFALL) + " |")
    lad = r["ladder"]
    lines += ["", f"Ladder (one Animator replica; load factor {lad['load']:.2f} at the end):", "",
              "| rung | name | fixed (s) | per second of speech (s) | a 1 s fragment (s) | fragments |",
              "|---|---|---|---|---|---|"]
    for k, (name, c) in enumerate(zip(lad["names"], lad["rungs"])):
        lines.append(f"| {k} | {name} | {c['fixed_s']:.4f} | {c['per_s']:.4f} | {c['fixed_s'] + c['per_s']:.3f} | "
                     f"{c['fragments']} |")
    return "\n".join(lines)


def _cycle(n: int):
    """The input index of each turn of the one-session run (client 0 takes inputs in order)."""
    k = 0
    while True:
        yield k % n
        k += 1


def commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


# ---- output -------------------------------------------------------------------------------------

def tables(r: BenchResult) -> str:
    m = r.machine
    lines = [f"Benchmarks: {m.date}, commit {m.commit}, {m.cpus} CPUs, load {m.load_before[0]:.1f} "
             f"before / {m.load_after[0]:.1f} after, {'quick, ' if m.quick else ''}{m.runs} runs", ""]
    p = r.v2f_parts_p50_s
    lines += ["| headline | value | aim |", "|---|---|---|",
              f"| voice to face p50 / p95 (s) | {r.v2f_p50_s:.2f} / {r.v2f_p95_s:.2f} | p50 ≤ 1.0 |",
              f"| … endpointing / ASR / rest, p50 (s) | {p.endpointing:.2f} / {p.asr:.2f} / {p.rest:.2f} | |",
              f"| time to first segment through the graph (s) | {r.ttfs_s:.2f} | |",
              f"| floor: stages alone, in-process (s) | {r.floor_s:.2f} | |",
              f"| ttfs_over_floor | {r.ttfs_over_floor:.2f} | ≤ 1.15 |",
              f"| serve_overhead (in-process turn {r.ttfs_local_s:.2f} s) | {r.serve_overhead:.3f} | ≤ 0.05 |",
              f"| streaming_over_sequential ({r.streamed_first_segment_s:.2f} vs {r.sequential_first_segment_s:.2f} s, "
              f"{r.sequential_sentences} sentences) | {r.streaming_over_sequential:.2f} | ≤ 0.25 |",
              f"| underruns ({r.long_reply_fragments} fragments, {r.long_reply_speech_s:.1f} s of speech) | "
              f"{r.underruns} | 0 |", ""]
    fp = r.floor_parts_s
    lines += ["| floor part | ASR | LLM to first sentence | TTS first chunk | animator first fragment |",
              "|---|---|---|---|---|",
              f"| seconds | {fp.asr:.2f} | {fp.llm:.2f} | {fp.tts:.2f} | {fp.animator:.2f} |", ""]
    lines += ["| input | voice to face p50 (s) | endpointing | ASR | rest | ttfs graph (s) | in-process turn (s) | floor (s) |",
              "|---|---|---|---|---|---|---|---|"]
    for a, b in zip(r.v2f_per_input, r.per_input):
        lines.append(f"| {a.input} | {a.v2f_p50_s:.2f} | {a.endpointing_p50_s:.2f} | {a.asr_p50_s:.2f} | "
                     f"{a.rest_p50_s:.2f} | {b.ttfs_s:.2f} | {b.ttfs_local_s:.2f} | {b.floor_s:.2f} |")
    groups = ["ASR", "LLM", "TTS", "Animator", "Ingress", "proxy", "ray", "client", "other", "machine"]
    lines += ["", "| sessions at once | turns | voice to face p50 (s) | p95 (s) | turns/min | cores busy | "
              + " | ".join(f"CPU s/turn: {g}" for g in groups) + " |", "|---|---|---|---|---|---|" + "---|" * len(groups)]
    for c in r.concurrency:
        cpu = c.cpu_per_turn_s or {}
        lines.append(f"| {c.sessions} | {c.turns} | {c.v2f_p50_s:.2f} | {c.v2f_p95_s:.2f} | "
                     f"{c.turns_per_min:.1f} | {c.cpu_busy_share or 0.0:.0%} | "
                     + " | ".join(f"{cpu.get(g, 0.0):.2f}" for g in groups) + " |")
    c, rtf = r.costs, r.rtf
    lines += ["", "| stage | RTF | fixed (s) | per unit (s) | first output (s) | r² (calls) |", "|---|---|---|---|---|---|",
              f"| ASR | {rtf.asr:.3f} | {c.asr.fixed_s:.3f} | {c.asr.per_audio_s:.4f} / audio s | | "
              f"{c.asr.r2:.2f} ({c.asr.samples}) |",
              f"| LLM | {rtf.llm:.3f} | {c.llm.fixed_s:.3f} | {c.llm.per_token_s:.4f} / token | "
              f"{c.llm.first_token_s:.3f} | {c.llm.r2:.2f} ({c.llm.samples}) |",
              f"| TTS | {rtf.tts:.3f} | {c.tts.fixed_s:.3f} | {c.tts.per_audio_s:.4f} / audio s | "
              f"{c.tts.first_chunk_s:.3f} | {c.tts.r2:.2f} ({c.tts.samples}) |",
              f"| animator | {rtf.animator:.3f} | {c.animator.fixed_s:.3f} | "
              f"{c.animator.per_audio_s:.4f} / audio s | {c.animator.first_fragment_s:.3f} | "
              f"{c.animator.r2:.2f} ({c.animator.samples}) |"]
    if f := r.first_sentence_first:
        lines += ["", f"First sentence first: alternative = {json.dumps(f.settings)}", "",
                  "| settings | ttfs (s) | ttfs_over_floor |", "|---|---|---|",
                  f"| shipped | {f.shipped.ttfs_s:.2f} | {f.shipped.ttfs_over_floor:.2f} |",
                  f"| alternative | {f.alternative.ttfs_s:.2f} | {f.alternative.ttfs_over_floor:.2f} |",
                  f"| alternative / shipped (paired) | {f.alternative_over_shipped:.2f} | |"]
    return "\n".join(lines)


def finite(value) -> bool:
    """Every number in a nested result is finite."""
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(finite(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs and inputs: under 5 minutes on 2 cores")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    parser.add_argument("--runs", type=int, help="paired runs per input (default 3; quick 1)")
    parser.add_argument("--questions", type=int, help="spoken questions besides jfk.flac (default 3; quick 1)")
    parser.add_argument("--sessions", help="sessions at once, comma-separated (default 1,2,4; quick 1,2)")
    parser.add_argument("--session-turns", type=int,
                        help="turns per session when several talk at once (default: --runs; one session: --runs per input)")
    parser.add_argument("--long-tokens", type=int, help="max_tokens of the underrun reply (default 400; quick 200)")
    parser.add_argument("--ab", dest="ab", action="store_true", default=None,
                        help="compare the shipped thread settings with ALTERNATIVE (default: not with --quick)")
    parser.add_argument("--no-ab", dest="ab", action="store_false")
    parser.add_argument("--playback-ab", action="store_true",
                        help="only the concurrency runs, before (one animator rung, whole sentences, no page "
                        "buffer, 1 s fragments), pieces (the quality ladder, the page's jitter buffer, growing pieces, "
                        "1 s fragments) and after (as shipped: growing fragments too), with underruns, rungs and the "
                        "waterfall")
    parser.add_argument("--arms", default=",".join(ARMS), help="with --playback-ab: which arms (default all three)")
    parser.add_argument("--clients", default="listening",
                        help="the concurrency runs' clients, comma-separated: listening (each hears the reply out "
                        "before speaking again, as people do; the default) and/or back-to-back (each speaks again "
                        "at `done`, loading the graph like several people); more than one only with --playback-ab")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="override the shipped app config: section.field=value (YAML), e.g. llm.n_threads=2")
    args = parser.parse_args()
    args.overrides = parse_set(args.overrides)
    args.arms = [a for a in args.arms.split(",") if a]
    args.clients = [c for c in args.clients.split(",") if c]
    if not args.arms or not set(args.arms) <= set(ARMS) or not args.clients or not set(args.clients) <= {
            "listening", "back-to-back"}:
        parser.error("--arms takes one or more of before, pieces, after; --clients one or both of listening, back-to-back")
    if len(args.clients) != 1 and not args.playback_ab:
        parser.error("more than one kind of client only with --playback-ab")
    args.listen = args.clients[0] == "listening"
    args.runs = args.runs or (1 if args.quick else 3)
    args.questions = min(len(QUESTIONS), args.questions if args.questions is not None else (1 if args.quick else 3))
    args.sessions = [int(s) for s in (args.sessions or ("1,2" if args.quick else "1,2,4")).split(",")]
    args.long_tokens = args.long_tokens or (200 if args.quick else 400)
    args.ab = not args.quick if args.ab is None else args.ab
    if args.playback_ab:
        result = asyncio.run(playback_ab(args))
        print(playback_tables(result))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return
    result = asyncio.run(run(args))
    print(tables(result))
    if args.json:
        args.json.write_text(result.to_json())
    if not finite(result.model_dump()):
        raise SystemExit("a number came out infinite or NaN")


if __name__ == "__main__":
    main()
