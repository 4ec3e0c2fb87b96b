"""The planner's inputs, read into typed objects: the entered L4 costs (`capacity/costs/l4.yaml`,
each figure with its source), the deployments as Serve is configured (the serve_config.yaml files),
the L4 cluster's node types (`clusters/gcp-l4/cluster.yaml`), `benchmarks/run.py --json`'s results
(`capacity.schema`) and `benchmarks/interference.py --json`'s factors.

The cluster and Serve configs are the repository's own, so the planner runs from a checkout (an
editable install); the costs file ships with the package.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from ray.serve._private.constants import DEFAULT_MAX_ONGOING_REQUESTS

from capacity.autoscaling import Autoscaling
from capacity.avatar import TurnConfig, Workload
from capacity.cluster import NodeType
from capacity.engine import StageCost
from capacity.schema import BenchResult
from capacity.sim import StageSpec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
L4_COSTS = HERE / "costs" / "l4.yaml"
GPU_SERVE = ROOT / "clusters" / "gcp-l4" / "serve_config.yaml"
CLUSTER_YAML = ROOT / "clusters" / "gcp-l4" / "cluster.yaml"
LOCAL_SERVE = ROOT / "serve_config.yaml"
NAMES = {"asr": "ASR", "llm": "LLM", "tts": "TTS", "animator": "Animator"}  # stage -> deployment name
NAMES_INV = {v: k for k, v in NAMES.items()}


def value(x):
    """A figure is a number, or {value, source, estimate}: its number (lists become ranges)."""
    if isinstance(x, dict) and "value" in x:
        x = x["value"]
    if isinstance(x, dict):
        return {k: value(v) for k, v in x.items()}
    return tuple(x) if isinstance(x, list) else x


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def load_bench(path: Path) -> BenchResult:
    """run.py's JSON, validated."""
    return BenchResult.from_json(Path(path).read_text())


def load_interference(path: Path | None) -> dict | None:
    """interference.py's JSON: {"alone": {stage: {"load_cpu_s", ...}}, "ratio": {stage: {neighbour: x}}}."""
    return json.loads(Path(path).read_text()) if path else None


# ---- Serve's options and the L4 cluster ---------------------------------------------------------


def deployments(serve: dict) -> dict[str, dict]:
    """Each stage's Serve options, the LLM's from `args.llm` when Ray's vLLM server is the LLM."""
    (app,) = serve["applications"]
    out = {NAMES_INV[d["name"]]: d for d in app["deployments"] if d["name"] in NAMES_INV}
    llm = app["args"].get("llm", {})
    if "deployment_config" in llm:  # ray.serve.llm: options in LLMConfig, the whole GPU in the bundle
        (bundle,) = llm["placement_group_config"]["bundles"]
        d = copy.deepcopy(llm["deployment_config"])
        d["ray_actor_options"] = {"num_gpus": bundle.get("GPU", 0), "num_cpus": bundle.get("CPU", 1),
                                  "resources": {k: v for k, v in bundle.items() if k not in ("GPU", "CPU")}}
        out["llm"] = d
    return out


def stage_specs(serve: dict, fixed: dict[str, int] | None = None) -> dict[str, StageSpec]:
    """Each stage's deployment as configured; `fixed`: that many replicas instead of autoscaling."""
    specs = {}
    for stage, d in deployments(serve).items():
        opts = d.get("ray_actor_options", {})
        role = next((k for k in opts.get("resources", {}) if k.startswith("avatar_")), None)
        scaling = Autoscaling.of(d.get("autoscaling_config"), d.get("num_replicas"))
        if fixed and stage in fixed:
            scaling = replace(scaling, min_replicas=fixed[stage], max_replicas=fixed[stage])
        specs[stage] = StageSpec(max_ongoing=d.get("max_ongoing_requests", DEFAULT_MAX_ONGOING_REQUESTS), scaling=scaling,
                                 num_gpus=opts.get("num_gpus", 0), num_cpus=opts.get("num_cpus", 1), role=role)
    return specs


@dataclass
class L4Inputs:
    """The entered L4 figures: per-request costs, load times, how people talk to it."""

    costs: dict[str, StageCost]
    replica_start_s: dict[str, float]  # per stage: a new replica's load time
    node_start_s: float  # from the autoscaler's request to a node that takes replicas
    turn: TurnConfig
    workload: Workload


def l4_inputs(path: Path = L4_COSTS) -> L4Inputs:
    raw = load_yaml(path)
    costs, starts = {}, {}
    for stage, c in raw["stages"].items():
        c = value(c)
        starts[stage] = c.pop("replica_start_s", 30.0)
        if "tokens_per_s" in c:
            c["tokens_per_s"] = {int(k): float(v) for k, v in c["tokens_per_s"].items()}
        costs[stage] = StageCost(**c)
    return L4Inputs(costs=costs, replica_start_s=starts, node_start_s=value(raw["nodes"]["start_s"]),
                    turn=TurnConfig(**value(raw["turn"])), workload=Workload(**value(raw["workload"])))


def with_animator_rtf(inputs: L4Inputs, rtf: float | None) -> L4Inputs:
    """The same inputs with Ditto at real-time factor `rtf` (None: as they are): per_audio_s becomes
    `rtf`, and fixed_s, the look-ahead audio each call renders before its first frame, scales with
    it (the same audio at another rate). How the planner shows both ends of Ditto's range, and a
    rung of its quality ladder."""
    if rtf is None:
        return inputs
    anim = inputs.costs["animator"]
    scaled = anim.fixed_s * rtf / anim.per_audio_s if anim.per_audio_s else anim.fixed_s
    return replace(inputs, costs={**inputs.costs, "animator": replace(anim, per_audio_s=rtf, fixed_s=scaled)})


def l4_node_types(node_start_s: float, nodes: dict[str, int] | None = None) -> list[NodeType]:
    """The worker node types of cluster.yaml (one L4 each); `nodes`: that many of each role, all up
    from the start, instead of its min/max workers."""
    cluster = load_yaml(CLUSTER_YAML)
    idle = cluster.get("idle_timeout_minutes", 5) * 60.0
    types = []
    for name, t in cluster["available_node_types"].items():
        if name == cluster["head_node_type"]:
            continue
        res = t["resources"]
        role = next(k for k in res if k.startswith("avatar_"))
        lo, hi = t.get("min_workers", 0), t.get("max_workers", 1)
        if nodes is not None:
            lo = hi = nodes.get(role, 0)
        types.append(NodeType(name, role, gpus=res.get("GPU", 1), cpus=res.get("CPU", 8), capacity=1.0,
                              min_nodes=lo, max_nodes=hi, start_s=node_start_s, idle_timeout_s=idle))
    return types
