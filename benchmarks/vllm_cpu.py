"""What the whole graph on vLLM's CPU build costs here: start-up, memory, turn times, decode rate,
shutdown; beside the same turns on the embedded llama.cpp LLM, measured in the same run.

    .venv-vllm/bin/python -m benchmarks.vllm_cpu [--turns 3]

Each graph runs alone on a fresh cluster (vLLM takes both cores). Turns are jfk.flac over HTTP with
greedy decoding; memory is each process's proportional set size (PSS, shared pages split between the
processes that share them) once the turns are done.
"""

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

from serve_app.local import use_local_ray

use_local_ray()  # before Ray is imported

import httpx  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402

from avatar_core.config import AppConfig  # noqa: E402
from serve_app.builder import build_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PORT = 8322
JFK = ROOT.parent / "shared" / "media" / "jfk.flac"
PROCESSES = ("VLLM::Worker", "VLLM::EngineCore", "ServeReplica:avatar:LLM", "ServeReplica:avatar:Ingress")


def pss_mb(name_part: str) -> float:
    """PSS (MB) of the processes whose command line contains `name_part`."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if name_part in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
                total += next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def healthy() -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{PORT}/healthz", timeout=10).status_code == 200
    except httpx.HTTPError:  # the proxy is not up yet
        return False


def turn() -> dict:
    with httpx.stream("POST", f"http://127.0.0.1:{PORT}/api/v1/turn", files={"audio": ("jfk.flac", JFK.read_bytes())},
                      timeout=300) as r:
        events = [json.loads(line) for line in r.iter_lines() if line]
    assert events[-1]["type"] == "done", events[-1]
    deltas = sum(e["type"] == "reply" for e in events)
    timings = events[-1]["timings"]
    return {**timings, "tokens_per_s": (deltas - 1) / (timings["llm"] - timings["llm_first_token"])}


def measure(llm: dict, turns: int) -> dict:
    cfg = AppConfig.model_validate({"llm": {"temperature": 0.0, **llm}})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    started = time.perf_counter()
    threading.Thread(target=serve.run, args=(build_app(cfg),), kwargs={"name": "avatar", "route_prefix": "/"},
                     daemon=True).start()
    while not healthy():
        assert time.perf_counter() - started < 600, "not healthy in 600 s"
        time.sleep(0.5)
    ready = time.perf_counter() - started
    turn()  # unmeasured
    rows = [turn() for _ in range(turns)]
    memory = {name: pss_mb(name) for name in PROCESSES}
    started = time.perf_counter()
    serve.shutdown()
    ray.shutdown()
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {"ready_s": ready, "shutdown_s": time.perf_counter() - started, **med, **memory}


def main(turns: int) -> None:
    results = {"vllm (CPU)": measure({"backend": "vllm"}, turns), "llama-cpp": measure({"backend": "llama-cpp"}, turns)}
    print(f"\nThe graph on each LLM backend, {os.cpu_count()} CPUs, jfk.flac, medians of {turns} turns\n")
    keys = ["ready_s", "llm_first_token", "llm", "tokens_per_s", "first_segment", "total", "shutdown_s", *PROCESSES]
    print("| | " + " | ".join(results) + " |\n|---|" + "---|" * len(results))
    for key in keys:
        unit = " (MB PSS)" if key in PROCESSES else ""
        print(f"| {key}{unit} | " + " | ".join(f"{r[key]:.2f}" if r[key] < 100 else f"{r[key]:.0f}" for r in results.values()) + " |")
    venv = ROOT / ".venv-vllm"
    if venv.exists():
        os.system(f"du -sh {venv} ~/.cache/talking-avatar/* 2>/dev/null")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=3)
    main(parser.parse_args().turns)
