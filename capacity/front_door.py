"""The front door: the Ingress replicas and the proxy in front of them, on the cluster's CPU nodes.

Every open session streams its microphone to an Ingress replica (16 kHz PCM, one message each
40 ms from the page), which runs Silero VAD on it, the turn model at pauses, and relays the turn's
events and fragments back; the proxy on each node carries those messages between the client and the
replica. So the front door's load is set by how many sessions are open, all the time, plus a little
per turn. `benchmarks/sessions.py` measures it on this machine with instant toy stages (the front door
alone): CPU seconds per session-second with the mic on, CPU seconds per turn beyond that, for the
Ingress and for the proxy, and how many sessions one replica holds before its event loop's lag p95
passes 50 ms. Those figures are in `capacity/costs/front_door.yaml`, one entry per way of running it
(Serve's Python proxy or HAProxy; the message size; the VAD as shipped or batched).

Sizing (no simulation: the front door is sized so that it never queues, so it adds no latency the
stage model must see):
- an Ingress replica is one Python process, its event loop on one core: it takes at most
  `min(knee, UTIL / ingress CPU per session)` sessions;
- Serve's proxy is one Python process per node, likewise at most `UTIL / proxy CPU per session`
  sessions per node (HAProxy runs in C threads: its CPU counts against the node only);
- each front node (the head and the `cpu_front` workers of `clusters/gcp-l4/cluster.yaml`) runs
  `max_replicas_per_node` replicas and one proxy, within its CPUs;
- sessions per node is the least of those; nodes = ceil(sessions / per node), at least the Ingress's
  `min_replicas` worth and the cluster's minimum of front nodes.

The measured figures come from a 2-core machine whose cores are slower than and shared unlike an
n2-standard-8's: the planner takes them as they are (`speed` scales them if a front node is known to
be faster)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from capacity.inputs import CLUSTER_YAML, GPU_SERVE, HERE, load_yaml, value

FRONT_DOOR_COSTS = HERE / "costs" / "front_door.yaml"
UTIL = 0.7  # the busy share of one core a Python process is sized to (its loop's lag stays short)
ROLE = "avatar_front"


@dataclass(frozen=True)
class FrontDoorCost:
    """What a session costs the front door, as benchmarks/sessions.py measured it."""

    name: str
    listen_ingress_s: float  # CPU seconds of the Ingress per session-second, mic on (all the time)
    listen_proxy_s: float  # the same for the proxy (Serve's, or HAProxy and its manager)
    turn_ingress_s: float  # CPU seconds of the Ingress per turn beyond listening
    turn_proxy_s: float
    knee: int  # sessions one replica held with its loop's lag p95 <= 50 ms (measured, shared cores)
    proxy_in_python: bool  # Serve's proxy: one Python process per node, bound to a core
    message_ms: int = 40
    latency_s: float = 0.0  # what this way of running adds to voice to face (larger messages)

    def ingress_per_session(self, turns_per_s: float, speed: float = 1.0) -> float:
        """Cores of the Ingress one session keeps busy, at `turns_per_s` turns a second."""
        return (self.listen_ingress_s + turns_per_s * self.turn_ingress_s) / speed

    def proxy_per_session(self, turns_per_s: float, speed: float = 1.0) -> float:
        return (self.listen_proxy_s + turns_per_s * self.turn_proxy_s) / speed


def load_costs(path: Path = FRONT_DOOR_COSTS) -> dict[str, FrontDoorCost]:
    raw = load_yaml(path)
    out = {}
    for name, entry in raw["front_door"].items():
        e = value(entry)
        out[name] = FrontDoorCost(
            name=name, listen_ingress_s=float(e["listen_ingress_s"]), listen_proxy_s=float(e["listen_proxy_s"]),
            turn_ingress_s=float(e["turn_ingress_s"]), turn_proxy_s=float(e["turn_proxy_s"]), knee=int(e["knee"]),
            proxy_in_python=bool(e["proxy_in_python"]), message_ms=int(e.get("message_ms", 40)),
            latency_s=float(e.get("latency_s", 0.0)))
    return out


@dataclass(frozen=True)
class FrontDoorSpec:
    """The front door as the GPU cluster configures it."""

    replica_cpus: float  # the Ingress's num_cpus (what Ray reserves; the process uses about one core)
    per_node: int  # max_replicas_per_node
    node_cpus: float  # a front node's CPUs
    min_replicas: int
    max_replicas: int
    max_nodes: int  # the head and the cpu_front workers at their maximum
    min_nodes: int = 1  # the head and the cpu_front workers at their minimum


def front_spec(serve: dict | None = None, cluster: dict | None = None) -> FrontDoorSpec:
    serve = serve or load_yaml(GPU_SERVE)
    cluster = cluster or load_yaml(CLUSTER_YAML)
    (app,) = serve["applications"]
    ingress = next(d for d in app["deployments"] if d["name"] == "Ingress")
    opts = ingress.get("ray_actor_options", {})
    scaling = ingress.get("autoscaling_config") or {}
    fixed = ingress.get("num_replicas")
    types = cluster["available_node_types"]
    front = {k: t for k, t in types.items() if ROLE in t.get("resources", {})}
    if not front:  # no front role: the head alone
        front = {cluster["head_node_type"]: types[cluster["head_node_type"]]}
    cpus = min(t["resources"].get("CPU", 8) for t in front.values())
    max_nodes = sum(1 if k == cluster["head_node_type"] else t.get("max_workers", 1) for k, t in front.items())
    min_nodes = sum(1 if k == cluster["head_node_type"] else t.get("min_workers", 0) for k, t in front.items())
    return FrontDoorSpec(
        replica_cpus=float(opts.get("num_cpus", 1)), per_node=int(ingress.get("max_replicas_per_node") or 1),
        node_cpus=float(cpus), min_replicas=int(scaling.get("min_replicas", fixed or 1)),
        max_replicas=int(scaling.get("max_replicas", fixed or 1)), max_nodes=max_nodes, min_nodes=max(1, min_nodes))


def _floor(x: float) -> int:
    return math.floor(x + 1e-9)  # 0.7 / 0.025 is 28, not 27.999...


@dataclass(frozen=True)
class FrontDoorSize:
    sessions: int
    turns_per_s: float  # per session
    replica_sessions: int  # the most one replica takes
    node_sessions: int  # the most one front node takes
    limit: str  # what sets node_sessions: "loop lag", "ingress CPU", "proxy", "node CPUs"
    replicas: int
    nodes: int
    cores: float  # the front door's busy cores at this load (Ingress + proxy)
    within_config: bool  # replicas <= the Ingress's max_replicas and nodes <= the front nodes there are


def size(sessions: int, turns_per_s: float, cost: FrontDoorCost, spec: FrontDoorSpec | None = None,
         speed: float = 1.0) -> FrontDoorSize:
    """Replicas and front nodes that carry `sessions` open sessions taking `turns_per_s` turns a
    second each, none past UTIL of a core per Python process nor past the measured knee."""
    spec = spec or front_spec()
    ci, cp = cost.ingress_per_session(turns_per_s, speed), cost.proxy_per_session(turns_per_s, speed)
    by_cpu = _floor(UTIL / ci) if ci > 0 else 10**9
    replica = max(1, min(cost.knee, by_cpu))
    limits = {"loop lag" if cost.knee <= by_cpu else "ingress CPU": replica * spec.per_node}
    if cost.proxy_in_python and cp > 0:
        limits["proxy"] = max(1, _floor(UTIL / cp))
    node_budget = spec.node_cpus * UTIL  # the node's cores, the replicas' and the proxy's together
    limits["node CPUs"] = max(1, _floor(node_budget / (ci + cp)))
    limit, node = min(limits.items(), key=lambda kv: kv[1])
    replicas = max(spec.min_replicas, math.ceil(sessions / replica))
    nodes = max(math.ceil(sessions / node), math.ceil(replicas / spec.per_node), spec.min_nodes)
    return FrontDoorSize(
        sessions=sessions, turns_per_s=turns_per_s, replica_sessions=replica, node_sessions=node, limit=limit,
        replicas=replicas, nodes=nodes, cores=sessions * (ci + cp),
        within_config=replicas <= spec.max_replicas and nodes <= spec.max_nodes)
