"""Plans for the L4 cluster, as rows of numbers (`capacity.report` formats them): the fewest L4s per
number of sessions with replicas fixed (`size_rows`), and autoscaling settings compared over a busy
period (`autoscale_rows`, `choose`)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, replace

from capacity import front_door
from capacity.avatar import Workload
from capacity.inputs import GPU_SERVE, NAMES_INV, L4Inputs, load_yaml, stage_specs
from capacity.scenarios import l4_scenario
from capacity.sim import STAGES, Report, Sim, StageSpec

MEDIA_STAGES = ("asr", "tts", "animator")  # those on the media L4s, beside each other


@dataclass
class Sizing:
    """How a run is simulated: seed, simulated minutes, GPU sharing, the animator's later fragments;
    what a sizing must hold besides p95 (underruns at most this share of fragments; None: p95
    alone); the client's playback buffer; and the front door's measured costs (None: left out)."""

    seed: int = 1
    minutes: float = 60.0
    gpu_sharing: str = "time-sliced"
    fragment_s: float | None = None  # None: the config's
    underruns: float | None = 0.0
    hold_s: float | None = 0.0  # the client's jitter buffer (None: adaptive, avatar_core/playback.py)
    front: front_door.FrontDoorCost | None = None


def underrun_share(r: Report) -> float:
    return r.underruns / r.fragments if r.fragments else 0.0


def excess(r: Report, p95: float, bound: float | None) -> float:
    """How far a run is from the target: p95 over it (relative) plus the underrun share over its
    bound; 0 when it meets both."""
    over = max(0.0, r.v2f_p95_s - p95) / p95
    return over + (max(0.0, underrun_share(r) - bound) if bound is not None else 0.0)


def nodes_for(reps: dict[str, int], specs: dict[str, StageSpec]) -> dict[str, int]:
    """Nodes per role for these replicas, first fit by GPU and CPU fraction, largest first."""
    bins: dict[str, list[list[float]]] = {}
    items = sorted(((specs[s].num_gpus, specs[s].num_cpus, specs[s].role) for s in STAGES for _ in range(reps[s])),
                   reverse=True)
    for g, c, role in items:
        nodes = bins.setdefault(role, [])
        for node in nodes:
            if node[0] + g <= 1 + 1e-9 and node[1] + c <= 8 + 1e-9:
                node[0] += g
                node[1] += c
                break
        else:
            nodes.append([g, c])
    return {role: len(n) for role, n in bins.items()}


def fit_cluster(inputs: L4Inputs, sessions: int, p95: float, how: Sizing, start: tuple | None = None):
    """The fewest L4s (replicas fixed, no autoscaling) that keep voice-to-face p95 under `p95` for
    `sessions` people talking at once, and underruns within `how.underruns`. From one replica of each
    stage (or `start`), step by step take whichever of these brings the run closest to the target
    (`excess`) with the fewest nodes: one more replica of a stage (packed onto the nodes as the GPU
    fractions allow), one more media node (the replicas spread out, so fewer share a GPU), or both.
    Returns ((replicas, extra media nodes), nodes per role, report)."""
    serve = load_yaml(GPU_SERVE)
    specs = stage_specs(serve)
    reps, extra = start or ({s: 1 for s in STAGES}, 0)

    def run(reps, extra):
        nodes = nodes_for(reps, specs)
        nodes["avatar_media"] = nodes.get("avatar_media", 0) + extra
        sc = l4_scenario(inputs, serve, fixed=reps, nodes=nodes, gpu_sharing=how.gpu_sharing)
        sc.turn = replace(sc.turn, max_turns=None, fragment_s=how.fragment_s or sc.turn.fragment_s,
                          hold_s=how.hold_s)
        return nodes, Sim(sc, seed=how.seed).closed(sessions).run(how.minutes * 60, warmup_s=60)

    nodes, r = run(reps, extra)
    for _ in range(64):
        now = excess(r, p95, how.underruns)
        if now <= 0:
            break
        options = [({**reps, s: reps[s] + 1}, extra) for s in STAGES] + [(reps, extra + 1)]
        options += [({**reps, s: reps[s] + 1}, extra + 1) for s in MEDIA_STAGES]  # on a node of its own
        trials = []
        for more, e in options:
            n2, r2 = run(more, e)
            trials.append((excess(r2, p95, how.underruns), sum(n2.values()), more, e, n2, r2))
        # 0.01 s of p95 (relative) or 0.1 % of fragments is noise, not progress
        better = sorted((t for t in trials if t[0] < now - 0.002), key=lambda t: (t[1], t[0]))
        if not better:  # nothing helps any more
            break
        _, _, reps, extra, nodes, r = better[0]  # the fewest nodes, then the closest to the target
    return (reps, extra), nodes, r


@dataclass
class SizeRow:
    sessions: int
    replicas: dict[str, int]
    nodes: dict[str, int]  # L4s per role
    report: Report
    met: bool  # p95 within the target, and underruns within their bound
    front: front_door.FrontDoorSize | None = None  # the CPU nodes of the front door for this load

    @property
    def l4s(self) -> int:
        return sum(n for role, n in self.nodes.items() if role != front_door.ROLE)

    @property
    def sessions_per_l4(self) -> float:
        return self.sessions / self.l4s if self.met else float("nan")


def turns_per_s(r: Report, sessions: int) -> float:
    """Turns a second per session in a run (what the front door's per-turn cost is paid at)."""
    return r.turns_per_min / 60 / max(1, sessions)


def size_rows(inputs: L4Inputs, sessions: list[int], p95: float, how: Sizing) -> Iterator[SizeRow]:
    """`fit_cluster` for each number of sessions, each search starting where the last one ended;
    with the front door's costs, the CPU nodes it needs at that load."""
    state = None
    spec = front_door.front_spec() if how.front else None
    for n in sessions:
        state, nodes, r = fit_cluster(inputs, n, p95 - (how.front.latency_s if how.front else 0.0), how, start=state)
        front = front_door.size(n, turns_per_s(r, n), how.front, spec) if how.front else None
        met = excess(r, p95 - (how.front.latency_s if how.front else 0.0), how.underruns) <= 0
        yield SizeRow(n, state[0], nodes, r, met, front)


def best_size(rows: list[SizeRow]) -> SizeRow | None:
    """The most sessions per L4 among those that met the target (the later on a tie)."""
    best = None
    for row in rows:
        if row.met and (best is None or row.sessions_per_l4 >= best.sessions_per_l4):
            best = row
    return best


def turn_cycle_s(w: Workload) -> float:
    """A turn's length, from one utterance to the next: speaking, about 3 s to the reply, the reply,
    thinking."""
    return (sum(w.utterance_s) / 2 if isinstance(w.utterance_s, tuple) else w.utterance_s) + w.think_s + 3.0 \
        + (sum(w.reply_s) / 2 if isinstance(w.reply_s, tuple) else w.reply_s)


def profile(peak: int, minutes: float, w: Workload) -> list[tuple[float, float]]:
    """Arrivals for a busy hour: quiet (a tenth of the peak), a ramp to `peak` sessions at once,
    an hour at the peak, back to quiet. Little's law: arrivals = sessions / a session's length."""
    turn_s = turn_cycle_s(w)
    length = (w.turns or 10) * turn_s
    rate = lambda s: s / length  # noqa: E731
    q = max(1.0, peak / 10)
    t = minutes * 60 / 6
    return [(0, rate(q)), (t, rate(peak / 2)), (1.5 * t, rate(peak)), (4.5 * t, rate(q))]


def with_autoscaling(serve: dict, up: float, down: float, targets: dict[str, float], max_replicas: dict) -> dict:
    """A copy of the GPU Serve config with these delays and targets on every stage."""
    cfg = copy.deepcopy(serve)
    app = cfg["applications"][0]
    found = {NAMES_INV[d["name"]]: d["autoscaling_config"] for d in app["deployments"] if d["name"] in NAMES_INV}
    found["llm"] = app["args"]["llm"]["deployment_config"]["autoscaling_config"]
    for stage, a in found.items():
        a.update(upscale_delay_s=up, downscale_delay_s=down, target_ongoing_requests=targets[stage])
        a["max_replicas"] = max_replicas.get(stage, a["max_replicas"])
    return cfg


@dataclass
class Busy:
    """The busy period and the cluster's limits the settings are compared over."""

    p95: float
    peak: int
    minutes: float
    seeds: range
    gpu_sharing: str = "time-sliced"
    max_replicas: dict[str, int] | None = None  # per stage, instead of the config's
    max_nodes: dict[str, int] | None = None  # per role
    max_turns: int | None = None  # admission.max_turns (None: the config's)
    underruns: float | None = 0.0  # the most underruns a setting may have, a share of fragments (None: any)
    hold_s: float | None = 0.0  # the client's jitter buffer (None: adaptive)
    front: front_door.FrontDoorCost | None = None


@dataclass
class AutoscaleRow:
    """One setting, means over the seeds (peaks: the largest)."""

    upscale_delay_s: float
    downscale_delay_s: float
    targets: tuple[float, float, float]  # target_ongoing_requests: ASR and TTS / animator / LLM
    v2f_p50_s: float
    v2f_p95_s: float
    refused: float  # turns admission refused
    node_hours: float
    peak_replicas: dict[str, int]
    peak_nodes: list[int]  # per node type
    meets: bool  # p95 within the target, no turn refused, underruns within their bound
    underrun_share: float = 0.0  # of fragments
    front: front_door.FrontDoorSize | None = None  # the front door at the peak


def autoscale_rows(inputs: L4Inputs, busy: Busy, upscale: list[float], downscale: list[float],
                   targets: list[tuple[float, float, float]]) -> Iterator[AutoscaleRow]:
    """Each combination of delays and targets over the busy period, once per seed."""
    serve = load_yaml(GPU_SERVE)
    for up in upscale:
        for down in downscale:
            for single, anim, llm in targets:
                scaled = {"asr": single, "tts": single, "animator": anim, "llm": llm}
                cfg = with_autoscaling(serve, up, down, scaled, busy.max_replicas or {})
                runs = []
                for seed in busy.seeds:
                    sc = l4_scenario(inputs, cfg, gpu_sharing=busy.gpu_sharing)
                    sc.node_types = [replace(t, max_nodes=(busy.max_nodes or {}).get(t.role, t.max_nodes))
                                     for t in sc.node_types]
                    if busy.max_turns:
                        sc.turn = replace(sc.turn, max_turns=busy.max_turns)
                    sc.turn = replace(sc.turn, hold_s=busy.hold_s)
                    sim = Sim(sc, seed=seed).arrivals(profile(busy.peak, busy.minutes, inputs.workload))
                    runs.append(sim.run(busy.minutes * 60))
                mean = lambda f: sum(f(r) for r in runs) / len(runs)  # noqa: E731
                p95, refused = mean(lambda r: r.v2f_p95_s), mean(lambda r: r.rejected)
                share = mean(underrun_share)
                target = busy.p95 - (busy.front.latency_s if busy.front else 0.0)
                meets = p95 <= target and refused == 0 and (busy.underruns is None or share <= busy.underruns)
                # the front door at the peak, each session taking a turn per turn cycle
                rate = 1 / turn_cycle_s(inputs.workload)
                front = front_door.size(busy.peak, rate, busy.front) if busy.front else None
                l4 = {t.name for t in sc.node_types if t.role != front_door.ROLE}
                yield AutoscaleRow(
                    up, down, (single, anim, llm), mean(lambda r: r.v2f_p50_s), p95, refused,
                    mean(lambda r: sum(h for k, h in r.node_hours.items() if k in l4)),
                    {s: max(r.replicas_peak[s] for r in runs) for s in STAGES},
                    [max(r.nodes_peak[k] for r in runs) for k in runs[0].nodes_peak], meets, share, front)


def choose(rows: list[AutoscaleRow]) -> AutoscaleRow | None:
    """The fewest node-hours among the settings that meet the target, counting those within 2 % of
    it as equal, then the lowest p95; None when none meets it."""
    meets = [r for r in rows if r.meets]
    if not meets:
        return None
    cheapest = min(r.node_hours for r in meets)
    return min((r for r in meets if r.node_hours <= cheapest * 1.02), key=lambda r: r.v2f_p95_s)
