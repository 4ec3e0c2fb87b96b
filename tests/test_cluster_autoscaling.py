"""Scale-out across nodes, rehearsed: Ray's real autoscaler with its fake multi-node provider adds
and removes fake L4 nodes of cluster.yaml's types while Serve adds and removes replicas of the GPU
config's deployments, under a burst of real turns (embedded backends).

`ray.cluster_utils.AutoscalingCluster` would do the same, but it runs `ray stop --force` (every Ray
on the machine) and reads an example config the wheel does not ship; this starts the head the same
way through `Cluster` and stops only the processes it started."""

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from serve_app.conversation import Conversation
from tests.cluster_rehearsal import deploy, load, CLUSTER_YAML, controller_env, nodes, rehearsal_config, replicas, role, wait_running
from tests.conftest import free_port, wait_healthy
from tests.test_turn import check_segments_match_reply

pytestmark = pytest.mark.cluster

MAX_MEDIA = 2  # fake media nodes at most (cluster.yaml allows 4; two cores hold two)
CLIENTS = 3  # concurrent conversations in the burst: more than one media L4 can animate
DELAYS = {"upscale_delay_s": 1, "downscale_delay_s": 4}
# On two cores the llama.cpp LLM (one request at a time) is where a burst queues, so the media
# stages behind it average well under the GPU file's target of one request a replica over Serve's
# 30 s look-back: they would never scale here. The rehearsal lowers their target and look-back so
# that the burst's load on them counts; bounds, fractions and resources stay the GPU file's.
MEDIA_TARGET = {"target_ongoing_requests": 0.5, "look_back_period_s": 5, "metrics_interval_s": 1}
FAKE_HEAD = "ray.head.default"  # the head's type name in Ray's fake provider


def fake_autoscaling_config(gcs_address: str) -> dict:
    """cluster.yaml with the fake provider: the same node types and resources; fewer nodes, and
    nodes given back seconds (not minutes) after they fall idle."""
    cfg = load(CLUSTER_YAML)
    types = {}
    for name, spec in cfg["available_node_types"].items():
        if name == cfg["head_node_type"]:
            types[FAKE_HEAD] = {"resources": spec["resources"], "node_config": {}, "max_workers": 0}
            continue
        most = MAX_MEDIA if name == "l4_media" else spec["min_workers"]
        types[name] = {
            "resources": {**spec["resources"], "object_store_memory": 100 * 1024**2},
            "node_config": {},
            "min_workers": spec["min_workers"],
            "max_workers": most,
        }
    return {
        "cluster_name": "fake-l4",
        "max_workers": sum(t["max_workers"] for t in types.values()),
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "available_node_types": types,
        "head_node_type": FAKE_HEAD,
        "idle_timeout_minutes": 0.05,
        "upscaling_speed": 1.0,
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (from /proc: no psutil here)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@pytest.fixture(scope="module")
def autoscaling_cluster():
    import ray
    from ray import serve
    from ray._private import ray_constants
    from ray._private.services import get_node_ip_address
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized(), "the rehearsal starts its own cluster: run it before the session's"
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="avatar-autoscale-"))
    config = tmp / "autoscaling.json"
    config.write_text(json.dumps(fake_autoscaling_config(f"{get_node_ip_address()}:{port}")))
    head = dict(load(CLUSTER_YAML)["available_node_types"][load(CLUSTER_YAML)["head_node_type"]]["resources"])
    env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # the monitor reads these
           **controller_env(), "RAY_SERVE_NODE_COMPACTION_DELAY_S": "5"}  # the controller these (5 s, not 5 min)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    cluster = Cluster(initialize_head=True, head_node_args={
        "gcs_server_port": port, "num_cpus": head.pop("CPU"), "num_gpus": head.pop("GPU", 0), "resources": head,
        "autoscaling_config": str(config), "include_dashboard": False,
    })
    (monitor,) = cluster.head_node.all_processes[ray_constants.PROCESS_TYPE_MONITOR]
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cfg = rehearsal_config(tmp / "storage", delays=DELAYS)
        for d in cfg["applications"][0]["deployments"]:
            if d["name"] in ("ASR", "TTS", "Animator"):
                d["autoscaling_config"].update(MEDIA_TARGET)
        deploy(cfg)
        wait_running()
        base = f"http://127.0.0.1:{cfg['http_options']['port']}"
        wait_healthy(base)
        yield base
    finally:
        fake_nodes = descendants(monitor.process.pid)  # the nodes the autoscaler started
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()
            for pid in fake_nodes:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for key, value in saved.items():
                os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
            shutil.rmtree(tmp, ignore_errors=True)


def media_nodes() -> int:
    return sum(1 for n in nodes().values() if role(n["resources"]) == "l4_media")


def media_node_activity() -> dict[str, dict]:
    """Why Ray counts each media node busy (what `ray status -v` prints): the raylet's own reasons,
    and the actors on it."""
    import ray
    from ray._private.state import actors
    from ray._raylet import GcsClient
    from ray.autoscaler.v2.sdk import get_cluster_resource_state

    state = get_cluster_resource_state(GcsClient(address=ray.get_runtime_context().gcs_address))
    alive = [a for a in actors().values() if a["State"] == "ALIVE"]
    media = {i for i, n in nodes().items() if role(n["resources"]) == "l4_media"}
    return {
        n.node_id.hex()[-8:]: {"activity": list(n.node_activity),
                               "actors": [a["ActorClassName"] for a in alive if a["Address"]["NodeID"] == n.node_id.hex()]}
        for n in state.node_states if n.node_id.hex() in media
    }


def running(name: str) -> int:
    return len(replicas()[name])


def settle(what: str, within_s: float = 180) -> None:
    """Wait for the quiet shape: one media node, one replica of each media stage. The deploy can
    leave a second node (the autoscaler saw the replicas pending before the first node was up) that
    is given back once idle."""
    deadline = time.monotonic() + within_s
    while (shape := (media_nodes(), {n: running(n) for n in ("ASR", "TTS", "Animator")})) != (
            1, {"ASR": 1, "TTS": 1, "Animator": 1}):
        assert time.monotonic() < deadline, f"did not {what}: {shape}; {media_node_activity()}"
        time.sleep(1)


def converse(base: str, audio: bytes, stop: threading.Event, turns: list, errors: list) -> None:
    """One conversation: a turn after another in one session until told to stop."""
    session = None
    try:
        while not stop.is_set():
            data = {"session_id": session} if session else {}
            with httpx.stream("POST", f"{base}/api/v1/turn", files={"audio": ("a.flac", audio)}, data=data,
                              timeout=300) as r:
                assert r.status_code == 200, r.read()
                events = [json.loads(line) for line in r.iter_lines() if line]
            session = events[0]["session_id"]
            turns.append((session, events))
    except Exception as exc:  # reported by the test, with the others
        errors.append(repr(exc))


def test_a_burst_scales_replicas_and_l4_nodes_out_then_both_back_in(autoscaling_cluster, jfk_bytes):
    base = autoscaling_cluster
    media = ("ASR", "TTS", "Animator")
    settle("settle before the burst")  # the autoscaler may have launched a second node for the deploy
    first_nodes = {i for i, n in nodes().items() if role(n["resources"]) == "l4_media"}
    stop, turns, errors = threading.Event(), [], []
    clients = [threading.Thread(target=converse, args=(base, jfk_bytes, stop, turns, errors)) for _ in range(CLIENTS)]
    for c in clients:
        c.start()
    began = time.monotonic()
    most_nodes, peak, on_new_node = 0, dict.fromkeys(media, 1), set()
    try:
        while time.monotonic() - began < 240 and not errors:
            most_nodes = max(most_nodes, media_nodes())
            for name, reps in replicas().items():
                if name in media:
                    peak[name] = max(peak[name], len(reps))
                    on_new_node |= {name for r in reps if r["node_id"] not in first_nodes}
            if most_nodes >= MAX_MEDIA and on_new_node:  # a new L4 node, and replicas working on it
                break
            time.sleep(1)
        scaled_out_s = time.monotonic() - began
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=300)
    stopped = time.monotonic()
    assert not errors, errors
    assert most_nodes == MAX_MEDIA and on_new_node, (most_nodes, peak, len(turns))
    assert sum(peak.values()) > len(media), peak
    print(f"scale-out: {MAX_MEDIA} media nodes after {scaled_out_s:.0f} s, replicas at most {peak}, "
          f"{sorted(on_new_node)} on the new node, {len(turns)} turns")

    sessions: dict[str, int] = {}
    for session, events in turns:  # every turn completed, its fragments in order
        assert events[-1]["type"] == "done", events[-1]
        check_segments_match_reply(events)
        sessions[session] = sessions.get(session, 0) + 1
    kept = Conversation.__dataclass_fields__["max_messages"].default // 2
    for session, count in sessions.items():  # and each conversation kept its turns, in order
        history = httpx.get(f"{base}/api/v1/sessions/{session}", timeout=30).json()
        roles = [m["role"] for m in history["messages"]]
        assert roles == ["user", "assistant"] * min(count, kept), roles

    settle("scale back in")  # load gone: replicas back to their minimum, idle L4 nodes given back
    print(f"scale-in: one media node and one replica a stage {time.monotonic() - stopped:.0f} s after the load stopped")
