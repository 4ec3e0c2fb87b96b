"""Nodes and placement: node types with fractional GPU packing (`num_gpus` and `num_cpus` on nodes
of the stage's role), a deployment's replicas spread over the nodes as Serve spreads them, new
nodes after `start_s`, idle nodes given back after a timeout; requests on one node share it
(processor sharing) and, where measured, interfere with their neighbours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from capacity.engine import EPS, Job, Loop, Replica

if TYPE_CHECKING:
    from capacity.engine import Deployment
    from capacity.sim import Sim


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

    def add(self, replica: Replica) -> None:
        dep = replica.dep
        self.gpus_free -= dep.num_gpus
        self.cpus_free -= dep.num_cpus
        self.replicas.append(replica)
        Loop.cancel(self.idle_event)
        self.idle_event = None

    def remove(self, replica: Replica) -> None:
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

    def interference(self, r: Replica, job: Job, d: float, held: list, total: float) -> float:
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

    def _load(self, replica: Replica) -> None:
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
