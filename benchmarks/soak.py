"""Soak: many real turns over WebSocket sessions, then disconnects; prints errors, latency and memory.

    .venv/bin/python -m benchmarks.soak --turns 200 --sessions 2 [--cancel-trials 10]

Starts Ray and Serve in this process (one node; JSON logs), deploys the graph with greedy decoding,
and runs `--turns` turns of real speech spread over `--sessions` concurrent WebSocket sessions, each
session sending its next utterance as soon as the previous turn is done. Then `--cancel-trials`
times: start an HTTP turn, leave at the first reply delta, and time until every stage's `in_flight`
counter is back to 0 (the cancellation latency). Replica memory is the RSS of each Serve replica
process (found by its `ray::ServeReplica:<app>:<deployment>` process title) at start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

from serve_app.local import use_local_ray

use_local_ray()  # before Ray is imported

import httpx  # noqa: E402
import ray  # noqa: E402
import websockets  # noqa: E402
from ray import serve  # noqa: E402
from ray.serve.schema import LoggingConfig  # noqa: E402

from avatar_core.config import AppConfig  # noqa: E402
from capacity.stats import quantile  # noqa: E402
from deployments.counters import read_board  # noqa: E402
from serve_app.builder import build_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

JFK = ROOT / "assets" / "media" / "jfk.flac"
STAGES = ("ASR", "LLM", "TTS", "Animator")
CHECKPOINT = 50  # turns between replica memory samples
rss_samples: dict[str, dict[str, float]] = {}  # label -> replica -> MB, in order


def _descends_from_us(pid: str) -> bool:
    """`ray.init` starts the raylet as our child and workers as its children: skip other clusters."""
    while pid not in ("0", "1"):
        if int(pid) == os.getpid():
            return True
        pid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    return False


def replica_rss_mb() -> dict[str, float]:
    """RSS of each Serve replica of this cluster, by deployment (`ray::ServeReplica:avatar:LLM`)."""
    out: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if not _descends_from_us(pid):
                continue
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            if not title.startswith("ray::ServeReplica:avatar:"):
                continue
            name = title.split(":")[-1].split(".")[0].split()[0]
            rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if line.startswith("VmRSS:"))
            out[f"{name} (pid {pid})"] = rss_kb / 1024
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return dict(sorted(out.items()))


async def session(url: str, audio: bytes, turns: int, results: list[dict]) -> None:
    async with websockets.connect(url, max_size=None) as ws:
        json.loads(await ws.recv())  # session
        for _ in range(turns):
            started = time.perf_counter()
            await ws.send(audio)
            first_segment = None
            while True:
                msg = await asyncio.wait_for(ws.recv(), 300)
                if isinstance(msg, bytes):
                    continue
                event = json.loads(msg)
                if event["type"] == "segment" and first_segment is None:
                    first_segment = time.perf_counter() - started
                if event["type"] in ("done", "error"):
                    break
            results.append({"ok": event["type"] == "done", "code": event.get("code"),
                            "first_segment_s": first_segment, "total_s": time.perf_counter() - started})
            if len(results) % CHECKPOINT == 0:
                rss_samples[f"{len(results)} turns"] = replica_rss_mb()


def stage_stats(handles) -> dict[str, dict]:
    """From the StageBoard: a busy stage with max_ongoing_requests 1 cannot answer stats()."""
    return {n: read_board("avatar", n) for n in STAGES}


def cancel_trial(base: str, audio: bytes, handles) -> float | None:
    """Seconds from leaving mid-reply until no stage has work in flight (None: the LLM had finished)."""
    with httpx.stream("POST", f"{base}/api/v1/turn", files={"audio": ("a.flac", audio)}, timeout=120) as r:
        lines = r.iter_lines()
        while json.loads(next(lines))["type"] != "reply":
            pass
        llm_busy = read_board("avatar", "LLM")["in_flight"] == 1
        left = time.perf_counter()
    while any(s["in_flight"] for s in stage_stats(handles).values()):
        time.sleep(0.005)
    return time.perf_counter() - left if llm_busy else None


def print_metrics(port: int, wait_s: float = 30) -> None:
    """The app's own series as Prometheus scrapes them from this node (exported every few seconds)."""
    time.sleep(12)  # the metrics agent exports on an interval: let the last turns' samples arrive
    deadline = time.monotonic() + wait_s
    while True:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        except httpx.HTTPError:
            text = ""
        lines = [l for l in text.splitlines() if l.startswith("ray_avatar_") and
                 ("_count" in l or "_total" in l or l.split("{")[0].endswith(("errors", "turns", "rejections")))]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(2)
    print(f"\nPrometheus (http://127.0.0.1:{port}/metrics), ray_avatar_* counts:")
    for line in lines:
        name, labels = line.split("{")[0], dict(kv.split("=", 1) for kv in line.split("{")[1].split("}")[0].split(",") if "=" in kv)
        keep = {k: v.strip('"') for k, v in labels.items() if k in ("stage", "code", "outcome", "reason")}
        print(f"  {name} {keep} {line.rsplit(' ', 1)[1]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=200)
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--cancel-trials", type=int, default=10)
    ap.add_argument("--port", type=int, default=8322)
    ap.add_argument("--metrics-port", type=int, default=8323, help="Ray's Prometheus endpoint")
    ap.add_argument("--rss-every", type=int, default=50, help="turns between memory samples")
    args = ap.parse_args()
    global CHECKPOINT
    CHECKPOINT = args.rss_every

    # The Python equivalent of `ray start --head --metrics-export-port=8323`.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _metrics_export_port=args.metrics_port)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    cfg = AppConfig.model_validate({"llm": {"temperature": 0.0}})
    serve.run(build_app(cfg), name="avatar", route_prefix="/",
              logging_config=LoggingConfig(encoding="JSON"))
    base, audio = f"http://127.0.0.1:{args.port}", JFK.read_bytes()
    deadline = time.monotonic() + 300
    while httpx.get(f"{base}/healthz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "not healthy"
        time.sleep(1)
    ingress = serve.get_deployment_handle("Ingress", app_name="avatar")
    ingress.admission.remote({"max_turns_per_client": args.sessions,
                              "max_sessions_per_client": args.sessions}).result(timeout_s=30)
    handles = {n: serve.get_deployment_handle(n, app_name="avatar") for n in STAGES}

    rss_samples["start"] = replica_rss_mb()
    results: list[dict] = []
    per = [args.turns // args.sessions + (i < args.turns % args.sessions) for i in range(args.sessions)]
    started = time.perf_counter()

    async def run_all():
        url = base.replace("http", "ws") + "/ws"
        await asyncio.gather(*(session(url, audio, n, results) for n in per))

    asyncio.run(run_all())
    wall = time.perf_counter() - started
    cancels = [c for c in (cancel_trial(base, audio, handles) for _ in range(args.cancel_trials)) if c is not None]
    stats_end = stage_stats(handles)
    rss_end = replica_rss_mb()

    ttfs = [r["first_segment_s"] for r in results if r["first_segment_s"] is not None]
    errors = [r["code"] for r in results if not r["ok"]]
    print(f"\nsoak: {len(results)} turns over {args.sessions} concurrent WebSocket sessions "
          f"in {wall:.0f} s ({len(results) / wall * 60:.1f} turns/min), 2-core CPU, embedded models")
    print("| metric | value |\n| --- | --- |")
    print(f"| turns | {len(results)} |")
    print(f"| errors | {len(errors)} {sorted(set(errors)) if errors else ''} |")
    print(f"| time to first segment p50 / p95 | {quantile(ttfs, .5):.2f} s / {quantile(ttfs, .95):.2f} s |")
    totals = [r["total_s"] for r in results]
    print(f"| turn total p50 / p95 | {quantile(totals, .5):.2f} s / {quantile(totals, .95):.2f} s |")
    if cancels:
        print(f"| cancellation: client gone → all stages idle, p50 / max ({len(cancels)} trials) | "
              f"{statistics.median(cancels) * 1000:.0f} ms / {max(cancels) * 1000:.0f} ms |")
    rss_samples["end (after the cancel trials)"] = rss_end
    cols = list(rss_samples)
    print(f"\nreplica RSS (MB): at start, every {CHECKPOINT} turns, at the end\n")
    print("| replica | " + " | ".join(cols) + " |\n| --- |" + " --- |" * len(cols))
    for name in sorted(set().union(*rss_samples.values())):
        row = [rss_samples[c].get(name) for c in cols]
        print(f"| {name} | " + " | ".join("-" if v is None else f"{v:.0f}" for v in row) + " |")
    print_metrics(args.metrics_port)
    print("\nstage counters at the end:")
    for name, s in stats_end.items():
        print(f"  {name}: {s}")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
