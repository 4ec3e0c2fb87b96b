"""A discrete-event model of the talking-avatar graph, for sizing a cluster before renting it.

What it models, and nothing more:
- sessions that speak an utterance, wait for the end of speech to be detected (endpointing), get a
  reply streamed as the real turn does (`serve_app/turn.py`): ASR, then the LLM writing sentences,
  TTS speaking each sentence in turn as audio chunks, the animator rendering the audio it has in
  pieces (the turn's first 0.4 s, then about 1 s, coalescing what has piled up) and the client
  playing fragments back to back; then the user thinks and speaks again;
- each stage as a deployment of replicas with `max_ongoing_requests` slots behind one FIFO queue
  (Serve's router sends a request to the least busy replica with a free slot, or holds it);
- a cost per request: fixed + per audio second (ASR, TTS with its chunking, animator), or time to
  first token + tokens at a per-stream speed that falls as the batch grows (vLLM);
- contention: every running request keeps `demand` units of its node busy (cores on a CPU machine,
  a whole GPU on an L4 unless told otherwise: CUDA time-slices processes that share a card), and
  when a node's demand exceeds its capacity every request on it slows in proportion (processor
  sharing);
- fractional GPU packing per node (`num_gpus` and `num_cpus` on nodes of the stage's role, a
  deployment's replicas spread over the nodes as Serve does), new nodes after `start_s`, new
  replicas after their load time, idle nodes given back after a timeout;
- Serve's default autoscaling policy as Ray 2.60 writes it (`ray/serve/autoscaling_policy.py`):
  desired = mean ongoing requests over `look_back_period_s` / `target_ongoing_requests`, scaled by
  the up/down factors, held until the wish has lasted `upscale_delay_s` / `downscale_delay_s`
  (wall-clock timestamps), clipped to [min, max]; the controller sees metrics as they were at the
  last push (replicas and handles push every 10 s by default);
- optionally, interference: a request's work grows by a measured factor for each kind of request
  running beside it on its node, weighted by the share of the node's other capacity that one holds
  (`StageCost.interference`; on 2 cores two llama.cpp decoders spend about 40 % more CPU per token);
- optionally, calls of the same size varying (`Scenario.jitter`, lognormal) as repeated calls do;
- optionally, per clip as measured (`Clip`): its endpointing wait, its reply, and the turns the turn
  model started early at a pause and cancelled when the speaker went on (their ASR and LLM calls run
  until the cancel); and the client's gap between one turn's end and the next turn's audio;
- optionally, the CPU a turn costs outside the stages' fitted calls (the ingress, Serve's proxy, Ray,
  the clients), measured per turn and run as one request from the user's first word, beside the
  stages on the same cores (`Scenario.overhead`).

Left out: network time beyond a fixed hop cost, the animator's session affinity (multiplexing),
memory, failures and barge-in.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

EPS = 1e-9


# ---- the event loop -----------------------------------------------------------------------------


class Loop:
    """A heap of (time, sequence, callback, args); a cancelled event keeps its place with no callback."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[list] = []
        self._seq = itertools.count()

    def at(self, t: float, fn: Callable, *args) -> list:
        event = [max(t, self.now), next(self._seq), fn, args]
        heapq.heappush(self._heap, event)
        return event

    def after(self, dt: float, fn: Callable, *args) -> list:
        return self.at(self.now + dt, fn, *args)

    @staticmethod
    def cancel(event: list | None) -> None:
        if event is not None:
            event[2] = None

    def run(self, until: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= until:
            t, _, fn, args = heapq.heappop(heap)
            if fn is not None:
                self.now = t
                fn(*args)
        self.now = until


# ---- costs --------------------------------------------------------------------------------------


@dataclass
class StageCost:
    """What one request costs a replica that has its node to itself; `work` is in those seconds."""

    fixed_s: float = 0.0  # per request (model call, first-frame latency)
    per_audio_s: float = 0.0  # per second of audio in (ASR) or out (TTS, animator)
    chunk_s: float | None = None  # TTS: seconds of audio per streamed chunk; None: the whole sentence
    ttft_s: float = 0.0  # LLM: time to the first token
    tokens_per_s: dict[int, float] | None = None  # LLM: a replica's total decode rate by batch size
    demand: float = 1.0  # node capacity one running request keeps busy (cores, or GPUs)
    max_demand: float | None = None  # what one replica keeps busy at most, however many requests
    # work beside a neighbour over work alone, by the neighbour's kind (a stage's name, or `python`:
    # the overhead and loading replicas), as benchmarks/interference.py measures it; None: none
    interference: dict[str, float] | None = None

    def speed(self, n: int) -> float:
        """Per-request speed with n requests running on the replica, relative to one alone: 1 except
        for a batching engine, whose total rate grows slower than the batch."""
        if not self.tokens_per_s or n <= 1:
            return 1.0
        return self.tokens_at(n) / n / self.tokens_at(1)

    def tokens_at(self, n: int) -> float:
        """Total tokens/s at batch size n, linear between the given sizes, flat beyond the largest."""
        table = sorted(self.tokens_per_s.items())
        if n <= table[0][0]:
            return table[0][1] * n / table[0][0]
        for (a, ta), (b, tb) in zip(table, table[1:]):
            if n <= b:
                return ta + (tb - ta) * (n - a) / (b - a)
        return table[-1][1]

    def replica_demand(self, n: int) -> float:
        d = n * self.demand
        return min(d, self.max_demand) if self.max_demand is not None else d


# ---- autoscaling (Ray 2.60's default policy) ----------------------------------------------------


@dataclass
class Autoscaling:
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0  # Serve's defaults
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    look_back_period_s: float = 30.0
    upscaling_factor: float = 1.0
    downscaling_factor: float = 1.0

    @classmethod
    def of(cls, d: dict | None, fixed: int | None = None) -> "Autoscaling":
        if d is None:
            n = fixed or 1
            return cls(min_replicas=n, max_replicas=n)
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Policy:
    """Ray's `replica_queue_length_autoscaling_policy` wrapped in `_apply_autoscaling_config` and
    `apply_bounds`, with the decision state (direction, first timestamp) it keeps between calls."""

    def __init__(self, cfg: Autoscaling):
        self.cfg = cfg
        self.counter = 0  # >0 wanting up, <0 wanting down
        self.since: float | None = None

    def decide(self, now: float, running: int, target: int, total_requests: float) -> int:
        cfg = self.cfg
        if running == 0:
            desired: float = target if total_requests <= 0 else max(1, target)
            return self.bounds(math.ceil(desired))
        desired = total_requests / cfg.target_ongoing_requests  # running * (total / (target * running))
        delta = desired - running
        factor = cfg.upscaling_factor if delta > 0 else cfg.downscaling_factor
        scaled = math.ceil(running + factor * delta - EPS)
        if math.ceil(desired - EPS) < running and scaled == running:
            scaled -= 1
        return self.bounds(self._delay(now, max(0, scaled), target))

    def _delay(self, now: float, desired: int, target: int) -> int:
        cfg = self.cfg
        if desired > target:
            if self.counter < 0:
                self.counter, self.since = 0, None
            self.counter += 1
            self.since = now if self.since is None else self.since
            if now - self.since + 1e-6 >= cfg.upscale_delay_s:
                self.counter, self.since = 0, None
                return desired
        elif desired < target:
            if self.counter > 0:
                self.counter, self.since = 0, None
            self.counter -= 1
            self.since = now if self.since is None else self.since
            if now - self.since + 1e-6 >= cfg.downscale_delay_s:
                self.counter, self.since = 0, None
                return max(1, desired) if target > 1 else desired
        else:
            self.counter, self.since = 0, None
        return target

    def bounds(self, n: int) -> int:
        return max(self.cfg.min_replicas, min(self.cfg.max_replicas, n))


# ---- nodes, replicas, requests ------------------------------------------------------------------


@dataclass
class NodeType:
    name: str
    role: str | None  # the custom resource that pins stages to it (avatar_media, avatar_llm)
    gpus: float = 1.0
    cpus: float = 8.0
    capacity: float = 1.0  # the shared compute (one GPU; or cores on a CPU machine)
    min_nodes: int = 0
    max_nodes: int = 1
    start_s: float = 240.0  # from the autoscaler's request to a node that takes replicas
    idle_timeout_s: float = 600.0


class Node:
    def __init__(self, sim: "Sim", ntype: NodeType, ready_at: float):
        self.sim, self.type, self.ready_at = sim, ntype, ready_at
        self.gpus_free, self.cpus_free = ntype.gpus, ntype.cpus
        self.replicas: list[Replica] = []
        self.idle_event: list | None = None
        self.gone = False

    def fits(self, dep: "Deployment") -> bool:
        return self.gpus_free + EPS >= dep.num_gpus and self.cpus_free + EPS >= dep.num_cpus

    def add(self, replica: "Replica") -> None:
        dep = replica.dep
        self.gpus_free -= dep.num_gpus
        self.cpus_free -= dep.num_cpus
        self.replicas.append(replica)
        Loop.cancel(self.idle_event)
        self.idle_event = None

    def remove(self, replica: "Replica") -> None:
        dep = replica.dep
        self.gpus_free += dep.num_gpus
        self.cpus_free += dep.num_cpus
        self.replicas.remove(replica)
        if not self.replicas:
            self.idle_event = self.sim.loop.after(self.type.idle_timeout_s, self.sim.cluster.release, self)

    def jobs(self):
        for r in self.replicas:
            yield from r.jobs

    def reschedule(self) -> None:
        """Advance every running request on this node to now, then give each its new rate (and the
        cores it holds meanwhile)."""
        for job in self.jobs():
            job.advance()
        demand = sum(r.demand() for r in self.replicas if r.jobs)
        share = 1.0 if demand <= self.type.capacity else self.type.capacity / demand
        # each request's kind and demand, for interference (none measured: nothing to weigh)
        held = [(job, r.kind(), r.demand() / len(r.jobs)) for r in self.replicas for job in r.jobs
                ] if any(r.dep.cost.interference for r in self.replicas) else []
        total = sum(d for _, _, d in held)
        for r in self.replicas:
            speed = 1.0 if r.state == "starting" else r.dep.cost.speed(len(r.jobs))
            per_job = r.demand() / len(r.jobs) if r.jobs else 0.0
            for job in r.jobs:
                slow = self.interference(r, job, per_job, held, total)
                job.rate = share * speed / slow
                job.cores = share * per_job
                job.schedule()

    def interference(self, r: "Replica", job: "Job", d: float, held: list, total: float) -> float:
        """How much more work `job` takes beside the node's other requests: 1 + the sum over them of
        (its measured factor beside that kind - 1) x the share of the rest of the node that one holds
        (its demand over the others' total, or over the cores left beside this one if more)."""
        factors = r.dep.cost.interference if r.state != "starting" else None
        others = total - d
        if not factors or others <= EPS:
            return 1.0
        room = max(others, self.type.capacity - d, 1.0)
        return max(EPS, 1.0 + sum((factors.get(kind, 1.0) - 1.0) * dj / room
                                  for other, kind, dj in held if other is not job))


class Replica:
    def __init__(self, dep: "Deployment", node: Node):
        self.dep, self.node = dep, node
        self.jobs: list[Job] = []
        self.state = "starting"  # -> running -> stopping -> stopped
        self.busy_since: float | None = None
        self.busy_s = 0.0  # time with at least one request running
        self.slot_s = 0.0  # request-seconds (sum over running requests)
        self._t = 0.0

    def account(self, now: float) -> None:
        if self.jobs:
            self.busy_s += now - self._t
            self.slot_s += len(self.jobs) * (now - self._t)
        self._t = now

    def demand(self) -> float:
        """A replica loading its model keeps one unit busy (see Scenario.start_demand)."""
        if self.state == "starting":
            return self.dep.sim.sc.start_demand
        return self.dep.cost.replica_demand(len(self.jobs))

    def kind(self) -> str:
        """What its requests are to their neighbours' interference: the stage, or plain Python work
        (the overhead; a replica importing and loading)."""
        return "python" if self.state == "starting" or self.dep.name == "overhead" else self.dep.name

    @property
    def free(self) -> int:
        return self.dep.max_ongoing - len(self.jobs) if self.state == "running" else 0


class Job:
    """One request: `work` seconds of service alone, with callbacks at points along it (a sentence
    written, an audio chunk out, a fragment rendered); the last point ends it."""

    __slots__ = ("sim", "marks", "i", "done", "rate", "last", "event", "replica", "submitted", "cores")

    def __init__(self, sim: "Sim", marks: list[tuple[float, Callable | None]]):
        self.sim = sim
        self.marks = sorted(marks, key=lambda m: m[0])
        self.i, self.done, self.rate, self.last = 0, 0.0, 0.0, 0.0
        self.cores = 0.0  # of its node, while at this rate
        self.event: list | None = None
        self.replica: Replica | None = None
        self.submitted = sim.loop.now

    @property
    def work(self) -> float:
        return self.marks[-1][0]

    def schedule(self) -> None:
        Loop.cancel(self.event)
        dt = max(0.0, (self.marks[self.i][0] - self.done) / self.rate)
        self.event = self.sim.loop.after(dt, self._mark)

    def advance(self) -> None:
        """Progress and CPU (core-seconds, on its deployment) from the last change to now."""
        dt = self.sim.loop.now - self.last
        self.done += self.rate * dt
        self.replica.dep.cpu_s += self.cores * dt
        self.last = self.sim.loop.now

    def _mark(self) -> None:
        self.event = None
        self.advance()
        while self.i < len(self.marks) and self.marks[self.i][0] <= self.done + 1e-7:
            _, fn = self.marks[self.i]
            self.i += 1
            if self.i == len(self.marks) and fn is not None and getattr(fn, "loader", False):
                pass  # a replica's model load: it leaves the replica itself
            elif self.i == len(self.marks):
                self.replica.dep.finish(self)
            if fn is not None:
                fn()
        if self.i < len(self.marks) and self.event is None:
            self.schedule()


class Deployment:
    def __init__(self, sim: "Sim", name: str, cost: StageCost, max_ongoing: int, scaling: Autoscaling,
                 num_gpus: float = 0.0, num_cpus: float = 1.0, role: str | None = None):
        self.sim, self.name, self.cost, self.max_ongoing = sim, name, cost, max_ongoing
        self.scaling, self.policy = scaling, Policy(scaling)
        self.num_gpus, self.num_cpus, self.role = num_gpus, num_cpus, role
        self.replicas: list[Replica] = []
        self.queue: deque[Job] = deque()
        self.target = 0
        self.ongoing = 0  # running + queued, the autoscaler's metric
        self.integral, self._t = 0.0, 0.0
        self.samples: list[float] = [0.0]  # the integral at t = 0 and at each control tick
        self.waits: list[float] = []
        self.peak_replicas = 0
        self.history: list[tuple[float, int]] = []  # (time, target) at each autoscaling decision
        self.replica_s = 0.0
        self._rt = 0.0
        self.cpu_s = 0.0  # core-seconds its requests (and its replicas' loading) have held

    # the autoscaler's metric
    def _count(self, d: int) -> None:
        now = self.sim.loop.now
        self.integral += self.ongoing * (now - self._t)
        self._t, self.ongoing = now, self.ongoing + d

    def integral_now(self) -> float:
        return self.integral + self.ongoing * (self.sim.loop.now - self._t)

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.state in ("starting", "running")]

    def running(self) -> list[Replica]:
        return [r for r in self.replicas if r.state == "running"]

    def _account_replicas(self) -> None:
        now = self.sim.loop.now
        self.replica_s += len(self.running()) * (now - self._rt)
        self._rt = now

    # requests
    def submit(self, job: Job) -> None:
        cv = self.sim.sc.jitter
        if cv > 0 and self.name in STAGES:
            sigma = math.sqrt(math.log(1 + cv * cv))
            f = self.sim.jitter_rng.lognormvariate(-sigma * sigma / 2, sigma)
            job.marks = [(w * f, fn) for w, fn in job.marks]
        job.submitted = self.sim.loop.now
        self._count(+1)
        self.queue.append(job)
        self.dispatch()

    def dispatch(self) -> None:
        while self.queue:
            free = [r for r in self.replicas if r.free > 0]
            if not free:
                return
            replica = min(free, key=lambda r: (len(r.jobs), self.replicas.index(r)))
            job = self.queue.popleft()
            self.waits.append(self.sim.loop.now - job.submitted)
            replica.account(self.sim.loop.now)
            job.replica, job.last = replica, self.sim.loop.now
            replica.jobs.append(job)
            replica.node.reschedule()

    def cancel(self, job: Job) -> None:
        """A request its caller gave up on: out of the queue, or stopped where it got to."""
        if job in self.queue:
            self.queue.remove(job)
            self._count(-1)
        elif job.replica is not None and job in job.replica.jobs:
            job.advance()
            self.finish(job)

    def finish(self, job: Job) -> None:
        replica = job.replica
        Loop.cancel(job.event)
        job.event = None
        replica.account(self.sim.loop.now)
        replica.jobs.remove(job)
        self._count(-1)
        replica.node.reschedule()
        if replica.state == "stopping" and not replica.jobs:
            self._stopped(replica)
        self.dispatch()

    # replicas
    def scale_to(self, n: int) -> None:
        self._account_replicas()
        self.target = n
        self.history.append((self.sim.loop.now, n))
        self.reconcile()

    def reconcile(self) -> None:
        """Bring the live replicas to the target; what no node can take now is retried each tick."""
        n, live = self.target, self.live()
        for _ in range(n - len(live)):
            if not self.sim.cluster.start_replica(self):
                short = n - len(self.live())
                self.sim.unplaced[self.name] = max(self.sim.unplaced.get(self.name, 0), short)
                break
        live = self.live()
        if len(live) > n:  # stop those still starting first, then the newest running
            order = sorted(live, key=lambda r: (r.state == "running", -self.replicas.index(r)))
            for replica in order[: len(live) - n]:
                self._stop(replica)
        self.peak_replicas = max(self.peak_replicas, len(self.live()))

    def _stop(self, replica: Replica) -> None:
        replica.state = "stopping"
        if not replica.jobs:
            self._stopped(replica)

    def _stopped(self, replica: Replica) -> None:
        self._account_replicas()
        replica.state = "stopped"
        replica.account(self.sim.loop.now)
        self.replicas.remove(replica)
        self.sim.retired.append(replica)
        replica.node.remove(replica)

    def became_running(self, replica: Replica) -> None:
        if replica.state != "starting":
            return
        self._account_replicas()
        replica.state = "running"
        replica._t = self.sim.loop.now
        self.dispatch()

    def tick(self, period: float, push_s: float) -> None:
        """One control-loop step: the metric as of the last push, averaged over the look-back."""
        self.samples.append(self.integral_now())
        k = len(self.samples) - 1  # samples[k] is the integral at k * period
        now = self.sim.loop.now
        seen = min(k, round(math.floor(now / push_s + EPS) * push_s / period)) if push_s > 0 else k
        back = max(0, seen - round(self.scaling.look_back_period_s / period))
        span = (seen - back) * period
        total = (self.samples[seen] - self.samples[back]) / span if span > 0 else 0.0
        n = self.policy.decide(now, len(self.running()), self.target, total)
        if n != self.target:
            self.scale_to(n)
        elif len(self.live()) < self.target:
            self.reconcile()


class Cluster:
    """Node types with fractional GPU packing; a replica no node has room for asks for a new node."""

    def __init__(self, sim: "Sim", types: list[NodeType]):
        self.sim, self.types = sim, {t.name: t for t in types}
        self.nodes: list[Node] = []
        self.node_s: dict[str, float] = {t.name: 0.0 for t in types}
        self.peak: dict[str, int] = {t.name: 0 for t in types}
        self._t = 0.0
        for t in types:
            for _ in range(t.min_nodes):
                self.nodes.append(Node(sim, t, 0.0))
        self._peak()

    def type_for(self, dep: Deployment) -> NodeType:
        matches = [t for t in self.types.values() if t.role == dep.role]
        if not matches:
            raise ValueError(f"no node type offers {dep.role!r} for {dep.name}")
        return matches[0]

    def count(self, ntype: NodeType) -> int:
        return sum(1 for n in self.nodes if n.type is ntype)

    def _account(self) -> None:
        now = self.sim.loop.now
        for n in self.nodes:
            self.node_s[n.type.name] += now - self._t
        self._t = now

    def _peak(self) -> None:
        for name in self.types:
            self.peak[name] = max(self.peak[name], sum(1 for n in self.nodes if n.type.name == name))

    def start_replica(self, dep: Deployment, initial: bool = False, compact: bool = False) -> bool:
        """Place a new replica (first fit), asking for a node if none has room; False when the node
        type is at its maximum. `initial`: the cluster as deployed, every node already up."""
        ntype = self.type_for(dep)
        # Serve spreads a deployment's replicas over nodes: the one with the fewest of them, then
        # the emptiest GPU (`compact`: the first that fits); a new node only when none has room.
        fits = [n for n in self.nodes if n.type is ntype and n.fits(dep)]
        spread = lambda n: (sum(r.dep is dep for r in n.replicas), -n.gpus_free, self.nodes.index(n))  # noqa: E731
        node = min(fits, key=(lambda n: self.nodes.index(n)) if compact else spread, default=None)
        if node is None:
            if self.count(ntype) >= ntype.max_nodes:
                return False
            self._account()
            node = Node(self.sim, ntype, self.sim.loop.now + (0.0 if initial else ntype.start_s))
            self.nodes.append(node)
            self._peak()
        if not node.fits(dep):
            raise AssertionError("packing overflow")
        replica = Replica(dep, node)
        node.add(replica)
        dep.replicas.append(replica)
        if initial:
            replica.state = "running"
        elif self.sim.sc.start_demand > 0:  # loading takes node time: start_s alone, longer when busy
            self.sim.loop.at(max(node.ready_at, self.sim.loop.now), self._load, replica)
        else:
            ready = max(node.ready_at, self.sim.loop.now) + dep.start_s
            self.sim.loop.at(ready, dep.became_running, replica)
        return True

    def _load(self, replica: "Replica") -> None:
        if replica.state != "starting":
            return

        def loaded() -> None:
            replica.jobs.remove(job)
            replica.node.reschedule()
            replica.dep.became_running(replica)

        loaded.loader = True
        job = Job(self.sim, [(replica.dep.start_s, loaded)])
        job.replica, job.last = replica, self.sim.loop.now
        replica.jobs.append(job)
        replica.node.reschedule()

    def release(self, node: Node) -> None:
        node.idle_event = None
        if node.replicas or self.count(node.type) <= node.type.min_nodes:
            return
        self._account()
        node.gone = True
        self.nodes.remove(node)


# ---- the workload and the turn ------------------------------------------------------------------


@dataclass
class Clip:
    """One thing a user says and the reply it gets, where they were measured per input (the turn
    model waits longer after an unfinished-sounding phrase; a greedy LLM gives each question its
    own reply); None: the workload's figure."""

    speech_s: float  # until the last voiced sample
    endpointing_s: float | None = None
    reply_s: float | None = None
    sentences: int | None = None
    first_sentence_s: float | None = None
    # (start, cancel), seconds into the clip, of each turn started early at a pause the turn model
    # called the end and cancelled when the speaker went on: its ASR and LLM calls run until then
    early: tuple[tuple[float, float], ...] = ()
    # what the graph adds to the first segment beyond its stage calls' own time, one turn at a time
    # (Serve's hops, its processes' work): a wait between ASR and the LLM
    graph_s: float = 0.0


@dataclass
class Workload:
    """How people talk to it, per turn: a range (lo, hi) is drawn uniformly, a list picked from."""

    utterance_s: float | tuple[float, float] | list[float] = 4.0  # the user's speech
    clips: list[Clip] | None = None  # picked from instead of the figures they give
    in_order: bool = False  # session i speaks clips i, i + 1, ... (run.py's protocol) instead of at random
    gap_s: float = 0.0  # the client's time from one turn's last fragment to the next turn's audio
    think_s: float = 3.0  # mean pause after the reply ends (or after `done`), exponential; 0: none
    sentences: int | tuple[int, int] = 3
    reply_s: float | tuple[float, float] = 8.0  # seconds of the avatar's speech in a reply
    first_sentence_s: float | None = None  # the first sentence's speech (None: an equal share)
    tokens_per_speech_s: float = 3.3  # tokens the LLM writes per second of speech
    first_sentence_tokens: float | None = None  # overrides the rate for the first sentence
    wait_for_playback: bool = True  # the user speaks again only after the avatar has finished
    turns: int | None = None  # per session (None: until the run ends)


@dataclass
class TurnConfig:
    endpointing_s: float = 0.72  # end_silence_s + half a 32 ms VAD window
    hop_s: float = 0.003  # a handle round trip per stage call
    first_fragment_s: float = 0.4
    fragment_s: float = 1.0
    max_turns: int | None = None  # the ingress's admission.max_turns


def draw(rng: random.Random, v):
    """A tuple (lo, hi) is a uniform range, a list a set of values to pick from, else a constant."""
    if isinstance(v, list):
        return rng.choice(v)
    if isinstance(v, tuple):
        lo, hi = v
        return rng.randint(lo, hi) if isinstance(lo, int) and isinstance(hi, int) else rng.uniform(lo, hi)
    return v


def fragments(piece_s: float, first: bool, cfg: TurnConfig) -> list[float]:
    """The lengths a piece is cut into: the turn's first fragment short, later ones about 1 s."""
    out, left = [], piece_s
    size = cfg.first_fragment_s if first else cfg.fragment_s
    while left > EPS:
        take = left if left < size * 1.5 else size
        out.append(take)
        left -= take
        size = cfg.fragment_s
    return out


class Turn:
    def __init__(self, sim: "Sim", session: "Session", clip: Clip):
        self.sim, self.session, self.cfg = sim, session, sim.turn_cfg
        self.speech_end = sim.loop.now
        self.clip, self.u, self.graph_s = clip, clip.speech_s, clip.graph_s
        rng, w = sim.rng, sim.workload
        n = max(1, int(clip.sentences or draw(rng, w.sentences)))
        total = clip.reply_s or draw(rng, w.reply_s)
        first_s = clip.first_sentence_s or w.first_sentence_s
        first = min(first_s, total) if first_s and n > 1 else total / n
        self.speech = [first] + [(total - first) / (n - 1)] * (n - 1) if n > 1 else [total]
        rate = w.tokens_per_speech_s
        self.tokens = [w.first_sentence_tokens or first * rate] + [s * rate for s in self.speech[1:]]
        self.tts_queue: deque[int] = deque()
        self.tts_busy = False
        self.avail = [0.0] * n  # audio of each sentence TTS has produced
        self.tts_done = [False] * n
        self.anim_k, self.anim_used, self.anim_busy = 0, 0.0, False
        self.arrivals: list[float] = []
        self.durations: list[float] = []
        self.asr_done: float | None = None
        self.utterance_end: float | None = None
        self.finished = False
        sim.loop.after(self.cfg.endpointing_s if clip.endpointing_s is None else clip.endpointing_s, self.heard)

    # stages
    def heard(self) -> None:
        sim = self.sim
        self.utterance_end = sim.loop.now
        if self.cfg.max_turns is not None and sim.active_turns >= self.cfg.max_turns:
            sim.rejected += 1
            self.session.turn_over(self, None)
            return
        sim.active_turns += 1
        cost = sim.deps["asr"].cost
        work = cost.fixed_s + cost.per_audio_s * self.u
        sim.loop.after(self.cfg.hop_s, sim.deps["asr"].submit, Job(sim, [(work, self.transcribed)]))

    def transcribed(self) -> None:
        self.asr_done = self.sim.loop.now
        llm = self.sim.deps["llm"]
        c = llm.cost
        single = c.tokens_at(1) if c.tokens_per_s else 1.0
        marks, cum = [], 0.0
        for k, toks in enumerate(self.tokens):
            cum += toks
            marks.append((c.ttft_s + c.fixed_s + cum / single, lambda k=k: self.sentence(k)))
        self.sim.loop.after(self.cfg.hop_s + self.graph_s, llm.submit, Job(self.sim, marks))

    def sentence(self, k: int) -> None:
        self.tts_queue.append(k)
        self.speak()

    def speak(self) -> None:
        if self.tts_busy or not self.tts_queue:
            return
        k = self.tts_queue.popleft()
        self.tts_busy = True
        c = self.sim.deps["tts"].cost
        s = self.speech[k]
        step = c.chunk_s or s
        marks, a = [], 0.0
        while a < s - EPS:
            a = min(s, a + step)
            marks.append((c.fixed_s + c.per_audio_s * a, lambda k=k, a=a: self.audio(k, a)))
        self.sim.loop.after(self.cfg.hop_s, self.sim.deps["tts"].submit, Job(self.sim, marks))

    def audio(self, k: int, a: float) -> None:
        self.avail[k] = a
        if a >= self.speech[k] - EPS:
            self.tts_done[k] = True
            self.tts_busy = False
            self.speak()
        self.animate()

    def animate(self) -> None:
        """Turn.animate: wait for a fragment's worth (or the sentence's end), take all there is."""
        if self.anim_busy or self.anim_k >= len(self.speech):
            return
        k = self.anim_k
        have = self.avail[k] - self.anim_used
        first = not self.arrivals and self.anim_used == 0 and k == 0
        need = self.cfg.first_fragment_s if not self.arrivals else self.cfg.fragment_s
        if have < need - EPS and not (self.tts_done[k] and have > EPS):
            return
        self.anim_busy = True
        c = self.sim.deps["animator"].cost
        marks, cum = [], 0.0
        for length in fragments(have, first, self.cfg):
            cum += length
            marks.append((c.fixed_s + c.per_audio_s * cum, lambda length=length: self.fragment(length)))
        piece = have
        end = marks[-1][1]
        marks[-1] = (marks[-1][0], lambda: (end(), self.rendered(piece)))
        self.sim.loop.after(self.cfg.hop_s, self.sim.deps["animator"].submit, Job(self.sim, marks))

    def fragment(self, length: float) -> None:
        self.arrivals.append(self.sim.loop.now + self.cfg.hop_s)
        self.durations.append(length)

    def rendered(self, piece: float) -> None:
        self.anim_busy = False
        self.anim_used += piece
        k = self.anim_k
        if self.tts_done[k] and self.anim_used >= self.speech[k] - EPS:
            self.anim_k, self.anim_used = k + 1, 0.0
            if self.anim_k == len(self.speech):
                self.finished = True
                self.sim.active_turns -= 1
                self.sim.loop.after(self.cfg.hop_s, self.session.turn_over, self, self.playback())
                return
        self.animate()

    def playback(self) -> dict:
        """Client-side: play from the first arrival, each fragment when it has come and the one
        before has ended; an underrun is a fragment that came after the one before had ended."""
        end, underruns = self.arrivals[0], 0
        for arrived, length in zip(self.arrivals, self.durations):
            if arrived > end + 1e-6:
                underruns += 1
                end = arrived
            end += length
        return {
            "speech_end": self.speech_end,
            "clip": self.clip,
            "v2f_s": self.arrivals[0] - self.speech_end,
            "endpointing_s": self.utterance_end - self.speech_end,
            "asr_s": self.asr_done - self.utterance_end,
            "underruns": underruns,
            "fragments": len(self.arrivals),
            "playback_end": end,
            "done": self.arrivals[-1],
        }


class EarlyStart:
    """A turn started at a pause and cancelled when the speaker went on: its ASR call, then its LLM
    call, hold their replicas and cores until the cancel."""

    def __init__(self, sim: "Sim", heard_s: float, cancel_s: float):
        self.sim, self.u = sim, heard_s
        self.job: Job | None = None
        self.dep: Deployment | None = None
        self.cancelled = False
        sim.loop.after(0.0, self.submit, "asr")
        sim.loop.after(cancel_s - heard_s, self.cancel)

    def submit(self, stage: str) -> None:
        if self.cancelled:
            return
        self.dep = self.sim.deps[stage]
        c = self.dep.cost
        if stage == "asr":
            self.job = Job(self.sim, [(c.fixed_s + c.per_audio_s * self.u, lambda: self.submit("llm"))])
        else:  # the reply it would have written: the cancel ends it first
            self.job = Job(self.sim, [(c.ttft_s + c.fixed_s + 1e6, None)])
        self.dep.submit(self.job)

    def cancel(self) -> None:
        self.cancelled = True
        if self.dep is not None:
            self.dep.cancel(self.job)


class Session:
    def __init__(self, sim: "Sim", start: float, turns: int | None, index: int = 0):
        self.sim = sim
        self.turns_left = turns
        self.next_clip = index
        sim.loop.at(start, self.speak)

    def speak(self) -> None:
        sim, w = self.sim, self.sim.workload
        if w.clips and w.in_order:
            clip = w.clips[self.next_clip % len(w.clips)]
            self.next_clip += 1
        else:
            clip = sim.rng.choice(w.clips) if w.clips else Clip(draw(sim.rng, w.utterance_s))
        if "overhead" in sim.deps:  # from the first word, beside the stages, not in the turn's path
            sim.deps["overhead"].submit(Job(sim, [(sim.deps["overhead"].cost.fixed_s, None)]))
        for start, cancel in clip.early:
            sim.loop.after(start, EarlyStart, sim, start, cancel)
        sim.loop.after(clip.speech_s, lambda: Turn(sim, self, clip))

    def turn_over(self, turn: Turn, result: dict | None) -> None:
        sim, w = self.sim, self.sim.workload
        if result is not None:
            sim.results.append(result)
        if self.turns_left is not None:
            self.turns_left -= 1
            if self.turns_left <= 0:
                sim.sessions_done += 1
                return
        think = sim.rng.expovariate(1 / w.think_s) if w.think_s > 0 else 0.0
        resume = result["playback_end"] if (result and w.wait_for_playback) else sim.loop.now
        sim.loop.at(max(resume, sim.loop.now) + think + w.gap_s, self.speak)


# ---- the whole simulation -----------------------------------------------------------------------


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
            dep.start_s = 0.0
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


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return math.nan
    s = sorted(xs)
    i = (len(s) - 1) * q
    lo, hi = math.floor(i), math.ceil(i)
    return s[lo] + (s[hi] - s[lo]) * (i - lo)


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
            v2f_p50_s=percentile(v2f, 0.5),
            v2f_p95_s=percentile(v2f, 0.95),
            v2f_mean_s=statistics.fmean(v2f) if v2f else math.nan,
            endpointing_s=statistics.fmean(r["endpointing_s"] for r in rs) if rs else math.nan,
            asr_p50_s=percentile([r["asr_s"] for r in rs], 0.5),
            underruns=sum(r["underruns"] for r in rs),
            fragments=sum(r["fragments"] for r in rs),
            turns_per_min=len(rs) / span * 60,
            rejected=sim.rejected,
            utilisation=util,
            replicas_peak={n: d.peak_replicas for n, d in sim.deps.items()},
            replicas_mean=rep_mean,
            queue_wait_p95_s={n: percentile(d.waits, 0.95) for n, d in sim.deps.items()},
            nodes_peak=dict(sim.cluster.peak),
            node_hours={k: v / 3600 for k, v in sim.cluster.node_s.items()},
            unplaced=dict(sim.unplaced),
        )
