"""The GCP L4 cluster rehearsed on one CPU machine: fake L4 nodes with the resources
`clusters/gcp-l4/cluster.yaml` declares, and `clusters/gcp-l4/serve_config.yaml` deployed on them as
it is, but with the embedded (CPU) backends in place of the GPU ones. A declared GPU is a scheduling
token, which is all that placement, packing and autoscaling need."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import yaml

from tests.conftest import ROOT, free_port

CLUSTER_YAML = ROOT / "clusters" / "gcp-l4" / "cluster.yaml"
GPU_SERVE = ROOT / "clusters" / "gcp-l4" / "serve_config.yaml"
RAYSERVICE = ROOT / "clusters" / "kuberay" / "rayservice.yaml"
STAGES = {"ASR": "asr", "LLM": "llm", "TTS": "tts", "Animator": "animator"}
DEADLINE_S = 240


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def node_types() -> dict:
    """The launcher's node types: {name: {resources, min_workers, max_workers}}."""
    return load(CLUSTER_YAML)["available_node_types"]


# The front door: HAProxy in place of Serve's Python proxy, set on every node's `ray start`.
FRONT_DOOR_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1"}


def start_env(commands: str = "head_start_ray_commands") -> dict[str, str]:
    """The Serve settings a node type's `ray start` in cluster.yaml sets (`VAR=value ray start ...`)."""
    (start,) = (c for c in load(CLUSTER_YAML)[commands] if "ray start " in c)
    return dict(word.split("=", 1) for word in start.split() if word.startswith("RAY_SERVE_"))


def controller_env() -> dict[str, str]:
    """The Serve settings cluster.yaml's head starts Ray with, but the front door's: the controller,
    started from the head, reads them from its environment. The rehearsals keep Serve's Python proxy:
    their fake nodes share one machine, where an HAProxy per node would contend for one port (and
    for the stats ports); tests/test_haproxy.py runs the HAProxy front door for real on one node."""
    return {k: v for k, v in start_env().items() if k not in FRONT_DOOR_ENV}


def llm_actor_options(llm: dict) -> dict:
    """What Ray's vLLM server asks for (its placement bundle, accelerator type and replica options),
    written as a plain deployment's options, for the embedded LLM that stands in its place."""
    (bundle,) = llm["placement_group_config"]["bundles"]
    own = llm["deployment_config"].get("ray_actor_options", {})
    return {
        "num_cpus": bundle.get("CPU", 0) + own.get("num_cpus", 0),
        "num_gpus": bundle["GPU"],
        "accelerator_type": llm["accelerator_type"],
        "resources": {k: v for k, v in bundle.items() if k not in ("CPU", "GPU")},
    }


def rehearsal_config(
    storage: Path, port: int | None = None, delays: dict | None = None, store_url: str | None = None
) -> dict:
    """The GPU Serve config with the embedded backends: only `args` (the root serve_config.yaml's
    stage sections, plus test settings) and each stage's `max_ongoing_requests` (its backend's own)
    change; every resource, fraction and autoscaling bound is the GPU file's. `delays` shortens
    the autoscaling delays for a test; `store_url`: the Redis that stands in for Memorystore (None:
    the SQLite default in `storage`, which every node of this one machine shares)."""
    from avatar_core.config import AppConfig

    cfg = load(GPU_SERVE)
    (app,) = cfg["applications"]
    embedded = load(ROOT / "serve_config.yaml")["applications"][0]["args"]
    gpu_llm = app["args"]["llm"]
    app["args"] = {
        **{stage: copy.deepcopy(embedded[stage]) for stage in STAGES.values()},
        "storage": {"dir": str(storage)},
        "admission": {"max_turns": 8, "max_turns_per_client": 8},
    }
    if store_url:
        app["args"]["store"] = {"backend": "redis", "url": store_url}
    app["args"]["llm"]["temperature"] = 0.0
    # vLLM brings its own deployment (its options live in args.llm); the embedded LLM gets the same.
    llm = gpu_llm["deployment_config"]
    app["deployments"].append(
        {"name": "LLM", "autoscaling_config": dict(llm["autoscaling_config"]), "ray_actor_options": llm_actor_options(gpu_llm)}
    )
    backends = AppConfig.model_validate(app["args"])
    for d in app["deployments"]:
        if d["name"] in STAGES:
            d["max_ongoing_requests"] = backends.backend(STAGES[d["name"]]).max_concurrency
        d["autoscaling_config"].update(delays or {})
    cfg["http_options"] = {"host": "127.0.0.1", "port": port or free_port()}
    return cfg


def deploy(cfg: dict) -> None:
    """What `serve deploy` does, without the dashboard: the controller imports `import_path` and
    builds the application from the config on the cluster."""
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    serve.start(http_options=cfg["http_options"], proxy_location=cfg["proxy_location"])
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(cfg))


def wait_running(app: str = "avatar", deadline_s: float = DEADLINE_S) -> None:
    from ray import serve

    end = time.monotonic() + deadline_s
    status = None
    while time.monotonic() < end:
        status = serve.status().applications.get(app)
        if status is not None and status.status == "RUNNING":
            return
        if status is not None and status.status == "DEPLOY_FAILED":
            raise RuntimeError(f"deploy failed: {status.message}")
        time.sleep(1)
    raise TimeoutError(f"{app} not RUNNING after {deadline_s} s: {status}")


def nodes() -> dict[str, dict]:
    """Alive Ray nodes by id: their declared resources, and whether each is the head."""
    import ray

    return {
        n["NodeID"]: {"resources": n["Resources"], "head": "node:__internal_head__" in n["Resources"]}
        for n in ray.nodes()
        if n["Alive"]
    }


def replicas(app: str = "avatar") -> dict[str, list[dict]]:
    """Running replicas of each deployment, with the node each sits on and its GPU ask, from the
    Serve controller's own record (what `serve status -v` and the dashboard show)."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    out = {}
    for name, dep in details["applications"][app]["deployments"].items():
        opts = dep["deployment_config"].get("ray_actor_options") or {}
        out[name] = [
            {"node_id": r["node_id"], "num_gpus": opts.get("num_gpus") or 0, "actor_name": r["actor_name"]}
            for r in dep["replicas"]
            if r["state"] == "RUNNING"
        ]
    return out


def animator_settled(app: str = "avatar", deadline_s: float = 120) -> list[dict]:
    """The Animator's replicas once none is starting or stopping: the running ones. A replica that
    Serve added under earlier turns' load and that is still starting (it measures its quality
    ladder first) is not in `replicas()`, yet takes the next turn once it runs."""
    from ray.serve.context import _get_global_client

    end = time.monotonic() + deadline_s
    while True:
        dep = _get_global_client().get_serve_details()["applications"][app]["deployments"]["Animator"]
        states = [r["state"] for r in dep["replicas"]]
        if states and set(states) == {"RUNNING"}:
            return replicas(app)["Animator"]
        if time.monotonic() > end:
            raise TimeoutError(f"the Animator's replicas did not settle: {states}")
        time.sleep(0.5)


def role(resources: dict) -> str:
    """A node's role in cluster.yaml, told by the resources only that worker type declares."""
    if "node:__internal_head__" in resources:
        return "head"
    head = load(CLUSTER_YAML)["head_node_type"]
    for name, spec in node_types().items():
        own = {k for k in spec["resources"] if k.startswith("avatar_")}
        if name != head and own and own <= set(resources):
            return name
    return "unknown"
