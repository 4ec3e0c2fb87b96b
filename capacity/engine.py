"""The generic discrete-event engine: an event loop, requests (`Job`) with points along their work,
deployments of replicas with `max_ongoing_requests` slots behind one FIFO queue, and what a request
costs (`StageCost`). Nodes and placement are in `capacity.cluster`, Serve's autoscaling policy in
`capacity.autoscaling`, the avatar's turn in `capacity.avatar`; `capacity.sim` wires them up."""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from capacity.autoscaling import Autoscaling, Policy

if TYPE_CHECKING:
    from capacity.cluster import Node
    from capacity.sim import Sim

EPS = 1e-9


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
        """A replica loading its model keeps `Scenario.start_demand` of its node busy."""
        if self.state == "starting":
            return self.dep.sim.sc.start_demand
        return self.dep.cost.replica_demand(len(self.jobs))

    def kind(self) -> str:
        """What its requests are to their neighbours' interference: the stage, or plain Python work
        (the overhead; a replica importing and loading)."""
        return "python" if self.state == "starting" else self.dep.kind

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
        self.jitter = 0.0  # how much its calls vary (Scenario.jitter); 0: each costs its work exactly
        self.kind = name  # what its requests are to their neighbours' interference (Replica.kind)

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
        cv = self.jitter
        if cv > 0:
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
