"""What a stage's call costs in CPU when something else runs beside it on the same cores.

`run.py` fits each stage's cost one call at a time, alone. With several turns at once the stages run
side by side on 2 cores, and a call then costs more CPU than alone (measured: two llama.cpp
decoders share the memory bandwidth and caches, and each spends about 40 % more CPU per token). The
capacity planner (`avatar-capacity validate --interference F`) scales a call's work by these ratios for
whatever runs beside it.

    .venv/bin/python -m benchmarks.interference [--seconds 6] [--repeats 1] [--json interference.json]

For each stage (the subject) and each neighbour (each stage, and `python`: a pure-Python loop, the
stand-in for the ingress, Serve's proxy and Ray, which are Python event loops), the subject calls
its stage in its own process for at least `--seconds` while the neighbour calls its own stage in a
loop in another process; the ratio is the subject's CPU seconds per call (every thread of its
process) beside the neighbour over alone, measured just before (the median of `--repeats` pairs). The stages are built as `run.py` builds them in-process
(serve_config.yaml's args). Also each stage's load: the CPU a fresh process spends to start, import
and load the stage and warm it up, as a new replica does (without Ray's own worker start).

JSON: {"alone": {stage: {"cpu_per_call_s", "wall_per_call_s", "calls", "load_cpu_s", "load_wall_s"}},
       "ratio": {stage: {neighbour: cpu per call beside it / alone}}, "machine": {...}}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

STAGES = ("asr", "llm", "tts", "animator")
NEIGHBOURS = (*STAGES, "python")
QUESTION = "Could you name three animals that live in the ocean?"
SENTENCE = "The tallest mountain in the world is Mount Everest, which rises almost nine kilometres above the sea."


def process_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def one_call(stage: str):
    """The stage built as run.py builds it, and a coroutine function making one typical call."""
    import numpy as np

    from avatar_core.media import decode_audio
    from avatar_core.types import Speech
    from benchmarks import run
    from benchmarks import voice_to_face as v2f
    from serve_app.conversation import Conversation

    cfg = run.bench_config()
    obj = (await run.local_stages(cfg, only=(stage,)))[stage]
    utterance = decode_audio(v2f.JFK.read_bytes(), 60)[: 3 * 16_000]  # about a question's length

    async def asr():
        await obj.transcribe(utterance, "en")

    async def llm():
        async for _ in obj.chat(Conversation(id="interference").messages(cfg.llm, QUESTION)):
            pass

    async def tts():
        async for _ in obj.stream(SENTENCE):
            pass

    speech = Speech(np.asarray(utterance, np.float32), 16_000)

    async def animator():
        async for _ in obj.animate(speech, None, "default", cfg.animator.first_fragment_s, cfg.animator.fragment_s,
                                   growth=cfg.animator.fragment_growth):
            pass

    return {"asr": asr, "llm": llm, "tts": tts, "animator": animator}[stage]


async def worker(stage: str, seconds: float) -> None:
    """Load, say so, then call in a loop: for `seconds` and report (subject), or forever (neighbour)."""
    started = time.time()
    if stage == "python":
        print(json.dumps({"ready": True}), flush=True)
        while True:
            pass
    call = await one_call(stage)
    await call()
    loaded = {"load_cpu_s": process_cpu(), "load_wall_s": time.time() - started}
    print(json.dumps({"ready": True, **loaded}), flush=True)
    if seconds <= 0:
        while True:
            await call()
    calls, wall, cpu = 0, time.perf_counter(), process_cpu()
    while calls < 3 or time.perf_counter() - wall < seconds:
        await call()
        calls += 1
    wall, cpu = time.perf_counter() - wall, process_cpu() - cpu
    print(json.dumps({"calls": calls, "cpu_per_call_s": cpu / calls, "wall_per_call_s": wall / calls, **loaded}),
          flush=True)


def spawn(stage: str, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchmarks.interference", "--worker", stage, "--seconds", str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)


def ready(proc: subprocess.Popen) -> None:
    """Wait until the worker has loaded its stage (and, a neighbour, is calling it)."""
    for line in proc.stdout:
        if line.startswith("{") and json.loads(line).get("ready"):
            return
    raise RuntimeError(f"a worker exited with {proc.wait()} before it was ready")


def measure(stage: str, neighbour: str | None, seconds: float) -> dict:
    """The subject's report, with the neighbour (if any) loaded and calling beside it."""
    other = spawn(neighbour, 0) if neighbour else None
    try:
        if other:
            ready(other)
        out, _ = spawn(stage, seconds).communicate()
        reports = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        report = next((x for x in reports if "calls" in x), None)
        if report is None:
            raise RuntimeError(f"{stage} beside {neighbour}: the worker did not report")
        return report
    finally:
        if other:
            other.kill()
            other.wait()


def run_all(seconds: float, stages=STAGES, neighbours=NEIGHBOURS, repeats: int = 1) -> dict:
    """Each ratio against the subject alone measured just before it (the machine's own noise moves
    both), the median over `repeats` such pairs."""
    alone, ratio = {}, {}
    for stage in stages:
        ratio[stage] = {}
        for neighbour in neighbours:
            pairs = []
            for _ in range(repeats):
                a = measure(stage, None, seconds)
                pairs.append(measure(stage, neighbour, seconds)["cpu_per_call_s"] / a["cpu_per_call_s"])
                alone.setdefault(stage, []).append(a)
            ratio[stage][neighbour] = statistics.median(pairs)
            print(f"{stage} beside {neighbour}: {' '.join(f'{x:.2f}' for x in pairs)}", file=sys.stderr, flush=True)
    return {"alone": {s: {k: statistics.median(a[k] for a in runs) for k in runs[0]} for s, runs in alone.items()},
            "ratio": ratio}


def tables(r: dict) -> str:
    neighbours = list(next(iter(r["ratio"].values())))
    out = ["| stage | CPU per call alone (s) | wall per call alone (s) | load: CPU (s) | "
           + " | ".join(f"beside {n}" for n in neighbours) + " |",
           "|---|---|---|---|" + "---|" * len(neighbours)]
    for stage, a in r["alone"].items():
        out.append(f"| {stage} | {a['cpu_per_call_s']:.3f} | {a['wall_per_call_s']:.3f} | {a['load_cpu_s']:.1f} | "
                   + " | ".join(f"{r['ratio'][stage][n]:.2f}" for n in neighbours) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="each measurement's calls last at least this")
    parser.add_argument("--repeats", type=int, default=1, help="pairs (alone, beside) per ratio; the median")
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    parser.add_argument("--stages", default=",".join(STAGES), help="subjects, comma-separated (default: all four)")
    parser.add_argument("--neighbours", default=",".join(NEIGHBOURS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--worker", choices=NEIGHBOURS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args.worker, args.seconds))
        return
    from benchmarks import run

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    stages, neighbours = args.stages.split(","), args.neighbours.split(",")
    unknown = set(stages) - set(STAGES) | set(neighbours) - set(NEIGHBOURS)
    if unknown:
        parser.error(f"unknown stage or neighbour: {', '.join(sorted(unknown))}")
    result = run_all(args.seconds, stages, neighbours, args.repeats)
    result["machine"] = {"date": started, "commit": run.commit(), "cpus": os.cpu_count(),
                         "load_before": [round(x, 2) for x in load_before], "seconds": args.seconds,
                         "repeats": args.repeats}
    print(tables(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
