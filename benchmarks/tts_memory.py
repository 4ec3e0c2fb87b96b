"""Memory of the Piper TTS backend over many sentences: a plateau or a leak?

    .venv/bin/python -m benchmarks.tts_memory [--iterations 600] [--every 50]

Each variant runs in its own fresh process: the real `Piper` backend class built from its config,
driven through its async `stream` as the TTS replica drives it (a worker thread per call), over
`--iterations` sentences, either the same sentence every time or a new sentence each time (seeded
random lengths of 3 to 60 words, as an LLM's replies vary). Every `--every` sentences it samples
the process's RSS (/proc) and the Python heap that `tracemalloc` sees; at the end it calls glibc's
`malloc_trim(0)` and samples RSS once more, which tells memory that is still in use from memory
that was freed but kept by the allocator. Prints one table: sentences vs RSS in MB per variant.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import random
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {  # name -> Piper.Config overrides
    "arena+pattern": {"cpu_mem_arena": True, "mem_pattern": True},  # ONNX Runtime's defaults
    "no-arena": {"cpu_mem_arena": False, "mem_pattern": True},
    "no-arena-no-pattern": {"cpu_mem_arena": False, "mem_pattern": False},
}
SAME = "And so, my fellow Americans, ask not what your country can do for you; ask what you can do for your country."
WORDS = (
    "the moon is bright tonight and every star above the quiet harbour seems to listen while a small "
    "boat drifts home through water that remembers summer rain children laugh somewhere far away as "
    "lanterns glow along the old stone wall where travellers rest before the long road north"
).split()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def sentences(mode: str, n: int):
    rng = random.Random(7)
    for _ in range(n):
        if mode == "same":
            yield SAME
        else:
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 60))]
            yield " ".join(words).capitalize() + "."


async def child(variant: str, mode: str, iterations: int, every: int) -> None:
    """One variant in this process: print one JSON line per sample."""
    from backends.piper import Piper

    tracemalloc.start()
    tts = Piper(Piper.Config(**VARIANTS[variant]))

    def sample(i: int, **extra) -> None:
        print(json.dumps({"i": i, "rss": rss_mb(), "py": tracemalloc.get_traced_memory()[0] / 2**20, **extra}), flush=True)

    sample(0)
    t0 = time.perf_counter()
    audio_s = 0.0
    for i, text in enumerate(sentences(mode, iterations), 1):
        async for speech in tts.stream(text, None, "default", "en"):
            audio_s += speech.duration_s
        if i % every == 0:
            sample(i)
    elapsed = time.perf_counter() - t0
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    sample(iterations, trimmed=True, seconds=elapsed, audio_s=audio_s)


def run_variant(variant: str, mode: str, iterations: int, every: int) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.tts_memory", "--child", variant, "--mode", mode, "--iterations", str(iterations),
         "--every", str(every)],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--modes", default="same,varied")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names from VARIANTS")
    ap.add_argument("--child")
    ap.add_argument("--mode", default="varied")
    args = ap.parse_args()
    if args.child:
        asyncio.run(child(args.child, args.mode, args.iterations, args.every))
        return

    rows = []
    for mode in args.modes.split(","):
        for variant in args.variants.split(","):
            samples = run_variant(variant, mode, args.iterations, args.every)
            rows.append((mode, variant, samples))
            print(f"done: {mode} / {variant}", file=sys.stderr, flush=True)

    steps = [s["i"] for s in rows[0][2] if not s.get("trimmed")]
    print(f"RSS in MB after N sentences (Python heap seen by tracemalloc at the end, MB); {args.iterations} sentences each\n")
    print("| sentences | variant | " + " | ".join(str(i) for i in steps) + " | after malloc_trim | Python heap | growth over the last half | s per sentence |")
    print("|---|---|" + "---:|" * (len(steps) + 4))
    for mode, variant, samples in rows:
        by_i = {s["i"]: s for s in samples if not s.get("trimmed")}
        last = samples[-1]
        half = by_i[steps[len(steps) // 2]]["rss"]
        growth = by_i[steps[-1]]["rss"] - half
        per = (steps[-1] - steps[len(steps) // 2]) or 1
        cells = " | ".join(f"{by_i[i]['rss']:.0f}" for i in steps)
        print(f"| {mode} | {variant} | {cells} | {last['rss']:.0f} | {last['py']:.1f} | "
              f"{growth:+.1f} MB ({1024 * growth / per:+.0f} kB/sentence) | {last['seconds'] / args.iterations:.3f} |")


if __name__ == "__main__":
    main()
