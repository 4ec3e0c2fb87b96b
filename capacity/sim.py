"""A whole simulation: a `Scenario` (costs, Serve options per stage, node types, how people talk)
run as a `Sim` (closed sessions, or Poisson arrivals of sessions), summed up in a `Report`."""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field

from capacity.autoscaling import Autoscaling
from capacity.avatar import Session, TurnConfig, Workload
from capacity.cluster import Cluster, NodeType
from capacity.engine import EPS, Deployment, Loop, Replica, StageCost
from capacity.stats import quantile


@dataclass
class StageSpec:
    """A stage deployment's Serve options."""

    max_ongoing: int
    scaling: Autoscaling
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    role: str | None = None
    start_s: float | None = None  # a new replica's load time (None: the scenario's replica_start_s)


@dataclass
class Scenario:
    """What is simulated: the stages' costs and Serve options, the node types, how people talk."""

    costs: dict[str, StageCost]  # asr, llm, tts, animator
    stages: dict[str, StageSpec]
    node_types: list[NodeType]
    workload: Workload = field(default_factory=Workload)
    turn: TurnConfig = field(default_factory=TurnConfig)
    replica_start_s: float = 30.0
    control_period_s: float = 0.5  # Serve's loop runs every 0.1 s; the delays are wall-clock, so coarser is fine
    metrics_push_s: float = 10.0  # RAY_SERVE_{REPLICA,HANDLE}_AUTOSCALING_METRIC_PUSH_INTERVAL_S
    start_demand: float = 0.0  # node capacity a loading replica keeps busy (0: loading is free)
    autoscale: bool = True
    # CPU per turn outside the stages' costs, one request per turn from the user's first word
    # (fixed_s seconds at `demand` units when alone), on the first node type's node; None: left out
    overhead: StageCost | None = None
    # how much calls of the same size vary: each stage request's work is drawn lognormal with mean 1
    # and this coefficient of variation (0: every call costs its fitted line exactly)
    jitter: float = 0.0


STAGES = ("asr", "llm", "tts", "animator")


class Sim:
    """One simulation of a scenario, the same for the same seed: the deployments as they start
    (min replicas each, all up at t=0), then sessions (`closed` or `arrivals`) until `run` ends it."""

    def __init__(self, sc: Scenario, seed: int = 0):
        self.sc, self.loop, self.rng = sc, Loop(), random.Random(seed)
        self.jitter_rng = random.Random(seed * 7919 + 1)  # its own stream: the draws above stay as they were
        self.workload, self.turn_cfg = sc.workload, sc.turn
        self.cluster = Cluster(self, sc.node_types)
        self.results: list[dict] = []
        self.retired: list[Replica] = []
        self.unplaced: dict[str, int] = {}
        self.active_turns = self.rejected = self.sessions_done = 0
        self.deps: dict[str, Deployment] = {}
        for name in STAGES:
            spec = sc.stages[name]
            dep = Deployment(self, name, sc.costs[name], spec.max_ongoing, spec.scaling,
                             spec.num_gpus, spec.num_cpus, spec.role)
            dep.start_s = spec.start_s if spec.start_s is not None else sc.replica_start_s
            dep.jitter = sc.jitter
            self.deps[name] = dep
        # The deployment as it starts: min_replicas each, all up at t=0, the largest placed first.
        for dep in sorted(self.deps.values(), key=lambda d: -d.num_gpus):
            dep.target = dep.scaling.min_replicas
            for _ in range(dep.target):
                if not (self.cluster.start_replica(dep, initial=True)
                        or self.cluster.start_replica(dep, initial=True, compact=True)):
                    raise ValueError(f"{dep.name}: {dep.target} replicas do not fit the node types' maximum")
            dep.peak_replicas = len(dep.replicas)
        if sc.overhead is not None:
            dep = Deployment(self, "overhead", sc.overhead, max_ongoing=1_000_000, scaling=Autoscaling.of(None),
                             num_cpus=0.0, role=sc.node_types[0].role)
            dep.start_s, dep.kind = 0.0, "python"  # plain Python work to its neighbours
            self.deps["overhead"] = dep
            dep.target = 1
            if not self.cluster.start_replica(dep, initial=True):
                raise ValueError("no node for the overhead")
        if sc.autoscale:
            self.loop.at(sc.control_period_s, self._control)

    def _control(self) -> None:
        for dep in self.deps.values():
            dep.tick(self.sc.control_period_s, self.sc.metrics_push_s)
        self.loop.after(self.sc.control_period_s, self._control)

    def closed(self, sessions: int, stagger_s: float | None = None, turns: int | None = None,
               spacing_s: float | None = None) -> "Sim":
        """`sessions` people talking from the start, their first words spread at random over
        `stagger_s` (or the i-th starting at i x `spacing_s`), each for `turns` turns (None: until
        the run ends)."""
        spread = stagger_s if stagger_s is not None else 10.0
        for i in range(sessions):
            if spacing_s is not None:
                start = i * spacing_s
            else:
                start = self.rng.uniform(0, spread) if sessions > 1 else 0.0
            Session(self, start, turns=turns, index=i)
        return self

    def arrivals(self, profile: list[tuple[float, float]]) -> "Sim":
        """Poisson session arrivals: `profile` is [(from_time_s, sessions_per_s), ...]."""
        bounds = [t for t, _ in profile[1:]] + [math.inf]

        def next_arrival(i: int) -> None:
            t0, rate = profile[i]
            t = max(self.loop.now, t0)
            t += self.rng.expovariate(rate) if rate > 0 else math.inf
            if t >= bounds[i]:
                if i + 1 < len(profile):
                    self.loop.at(bounds[i], next_arrival, i + 1)
                return
            self.loop.at(t, lambda: (Session(self, self.loop.now, self.workload.turns), next_arrival(i)))

        self.loop.at(profile[0][0], next_arrival, 0)
        return self

    def run(self, until_s: float, warmup_s: float = 0.0) -> "Report":
        self.loop.run(until_s)
        return Report.of(self, warmup_s, until_s)


@dataclass
class Report:
    turns: int
    v2f_p50_s: float
    v2f_p95_s: float
    v2f_mean_s: float
    endpointing_s: float
    asr_p50_s: float
    underruns: int
    fragments: int
    turns_per_min: float
    rejected: int
    utilisation: dict[str, float]  # busy share of replica time, per stage
    replicas_peak: dict[str, int]
    replicas_mean: dict[str, float]
    queue_wait_p95_s: dict[str, float]
    nodes_peak: dict[str, int]
    node_hours: dict[str, float]
    unplaced: dict[str, int]

    @classmethod
    def of(cls, sim: Sim, warmup_s: float, until_s: float) -> "Report":
        now = sim.loop.now
        rs = [r for r in sim.results if r["speech_end"] >= warmup_s]
        v2f = [r["v2f_s"] for r in rs]
        util, rep_mean = {}, {}
        for name, dep in sim.deps.items():
            dep._account_replicas()
            replicas = dep.replicas + [r for r in sim.retired if r.dep is dep]
            for r in replicas:
                if r.state != "stopped":
                    r.account(now)
            busy = sum(r.busy_s for r in replicas)
            util[name] = busy / dep.replica_s if dep.replica_s > 0 else 0.0
            rep_mean[name] = dep.replica_s / now if now > 0 else 0.0
        sim.cluster._account()
        span = max(until_s - warmup_s, EPS)
        return cls(
            turns=len(rs),
            v2f_p50_s=quantile(v2f, 0.5),
            v2f_p95_s=quantile(v2f, 0.95),
            v2f_mean_s=statistics.fmean(v2f) if v2f else math.nan,
            endpointing_s=statistics.fmean(r["endpointing_s"] for r in rs) if rs else math.nan,
            asr_p50_s=quantile([r["asr_s"] for r in rs], 0.5),
            underruns=sum(r["underruns"] for r in rs),
            fragments=sum(r["fragments"] for r in rs),
            turns_per_min=len(rs) / span * 60,
            rejected=sim.rejected,
            utilisation=util,
            replicas_peak={n: d.peak_replicas for n, d in sim.deps.items()},
            replicas_mean=rep_mean,
            queue_wait_p95_s={n: quantile(d.waits, 0.95) for n, d in sim.deps.items()},
            nodes_peak=dict(sim.cluster.peak),
            node_hours={k: v / 3600 for k, v in sim.cluster.node_s.items()},
            unplaced=dict(sim.unplaced),
        )
