"""The GPU Serve config on a rehearsal of the GCP L4 cluster (`ray.cluster_utils.Cluster`): a head
and fake L4 workers with cluster.yaml's resources, the embedded backends in place of the GPU ones.

Placement and packing are Ray's real scheduler at work; a killed node is real processes killed."""

import json
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.cluster_rehearsal import (
    animator_settled, controller_env, deploy, node_types, nodes, rehearsal_config, replicas, role, wait_running,
)
from tests.conftest import JFK_WORDS, stage_stats, wait_healthy
from tests.redis_server import redis_server
from tests.test_stages import words
from tests.test_turn import check_segments_match_reply, post_turn

pytestmark = pytest.mark.cluster
SERVE_ACTORS = {"ServeController", "ProxyActor"}


def add_fake_node(cluster, node_type: str):
    """A raylet with the resources cluster.yaml declares for `node_type` (tokens, not hardware)."""
    res = dict(node_types()[node_type]["resources"])
    return cluster.add_node(num_cpus=res.pop("CPU"), num_gpus=res.pop("GPU", 0), resources=res)


@pytest.fixture(scope="module")
def rehearsal():
    """Head + the minimum of each L4 node type, and the GPU config deployed on them."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized(), "the rehearsal starts its own cluster: run it before the session's"
    types = node_types()
    head = dict(types["ray_head"]["resources"])
    storage = Path(tempfile.mkdtemp(prefix="avatar-cluster-storage-"))
    env = pytest.MonkeyPatch()
    for key, value in controller_env().items():  # the Serve settings the real head starts with
        env.setenv(key, value)
    stack = ExitStack()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": head.pop("CPU"), "num_gpus": head.pop("GPU", 0), "resources": head,
                        "include_dashboard": False},  # `head`: its custom resources (avatar_front)
    )
    workers = {}
    try:
        for name, spec in types.items():
            for _ in range(spec.get("min_workers", 0)):
                node = add_fake_node(cluster, name)
                workers[node.node_id] = node
        ray.init(address=cluster.address, log_to_driver=False)
        redis = stack.enter_context(redis_server())  # stands in for Memorystore
        cfg = rehearsal_config(storage, store_url=redis.url)
        deploy(cfg)
        wait_running()
        base = f"http://127.0.0.1:{cfg['http_options']['port']}"
        wait_healthy(base)
        yield {"cluster": cluster, "workers": workers, "base": base}
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()
            stack.close()
            env.undo()
            shutil.rmtree(storage, ignore_errors=True)


def test_every_gpu_stage_runs_on_an_l4_worker_and_the_fractions_fit(rehearsal):
    from ray._private.state import actors

    alive = nodes()
    placed = replicas()
    gpu_per_node: dict[str, float] = {}
    for name, reps in placed.items():
        assert reps, f"{name} has no running replica"
        for r in reps:
            node = alive[r["node_id"]]
            if name == "Ingress":
                assert "avatar_front" in node["resources"] and not node["resources"].get("GPU"), "ingress off the front"
                continue
            assert not node["head"], f"{name} replica on the head"
            assert node["resources"].get("accelerator_type:L4") == 1, f"{name} on a node without an L4"
            gpu_per_node[r["node_id"]] = gpu_per_node.get(r["node_id"], 0) + r["num_gpus"]
    assert all(0 < total <= 1 for total in gpu_per_node.values()), gpu_per_node
    roles = {name: {role(alive[r["node_id"]]["resources"]) for r in reps} for name, reps in placed.items()}
    assert len({r["node_id"] for r in placed["Ingress"]}) == len(placed["Ingress"]) == 2  # one per front node
    assert roles == {"Ingress": {"head", "cpu_front"}, "ASR": {"l4_media"}, "TTS": {"l4_media"}, "Animator": {"l4_media"},
                     "LLM": {"l4_llm"}}
    # and no actor of ours beside them keeps an L4 node busy (the autoscaler gives back only idle nodes)
    ours = [a for a in actors().values() if a["State"] == "ALIVE" and a["ActorClassName"] not in SERVE_ACTORS
            and not a["ActorClassName"].startswith("ServeReplica:")]
    assert ours and all(alive[a["Address"]["NodeID"]]["head"] for a in ours), ours
    print("placement:", json.dumps({n: [r["node_id"][:8] for r in reps] for n, reps in placed.items()}))


def test_a_turn_runs_across_the_nodes(rehearsal, jfk_bytes):
    events, _ = post_turn(rehearsal["base"], jfk_bytes)
    assert events[-1]["type"] == "done", events[-1]
    assert JFK_WORDS in words(next(e["text"] for e in events if e["type"] == "transcript"))
    assert check_segments_match_reply(events)


def test_a_conversation_keeps_its_history_across_ingress_replicas_on_two_nodes(rehearsal, jfk_bytes):
    """Two Ingress replicas on different nodes share the conversation through Redis: turns of one
    session answered by either keep one history, and its segments fetch from any proxy."""
    base = rehearsal["base"]
    events, headers = post_turn(base, jfk_bytes)
    session, answered, said = headers["x-session-id"], {headers["x-replica"]}, [events]
    while len(answered) < 2 and len(said) < 12:
        events, headers = post_turn(base, jfk_bytes, session_id=session)
        assert events[-1]["type"] == "done", events[-1]
        answered.add(headers["x-replica"])
        said.append(events)
    assert len(answered) == 2, "every turn went to one replica"
    messages = httpx.get(f"{base}/api/v1/sessions/{session}", timeout=30).json()["messages"]
    assert [m["content"] for m in messages[1::2]] == [
        "".join(e["text"] for e in ev if e["type"] == "reply").strip() for ev in said
    ]
    assert all(JFK_WORDS in words(m["content"]) for m in messages[::2])
    url = next(e["url"] for e in said[0] if e["type"] == "segment")
    for _ in range(4):  # whichever replica each request reaches
        assert httpx.get(f"{base}{url}", timeout=30).content[4:8] == b"ftyp"


def test_a_worker_node_killed_mid_turn_fails_that_turn_clearly_then_the_next_succeeds(rehearsal, jfk_bytes):
    """Spare media nodes join; the node running the animator dies while it renders this turn.

    Two spares: the replicas Serve added under the earlier turns' load (ASR and TTS scale out at
    0.7 requests a replica) may already fill one, and the dead node's replicas need room besides.
    On GCP the cluster autoscaler would add that room; this rehearsal has none. The Animator may
    have scaled out too (with turns one at a time, Serve counted 2 ongoing requests: the two Ingress
    replicas' handles each reported the request it sent last), and which replica renders the turn
    is Serve's choice: so every node holding an Animator replica dies, and a spare joins for each."""
    cluster, workers = rehearsal["cluster"], rehearsal["workers"]
    for _ in range(2):
        spare = add_fake_node(cluster, "l4_media")
        workers[spare.node_id] = spare
    dead = {a["node_id"] for a in animator_settled()}
    for _ in range(len(dead) - 1):  # room for each dead node's replicas, as for one
        spare = add_fake_node(cluster, "l4_media")
        workers[spare.node_id] = spare
    on_dead = {name for name, reps in replicas().items() for r in reps if r["node_id"] in dead}
    events = []
    with httpx.stream("POST", f"{rehearsal['base']}/api/v1/turn", files={"audio": ("a.flac", jfk_bytes)},
                      timeout=180) as r:
        lines = (json.loads(line) for line in r.iter_lines() if line)
        for event in lines:
            events.append(event)
            if event["type"] in ("done", "error"):
                break
            if event["type"] in ("reply", "segment") and stage_stats("Animator")["in_flight"]:
                for node_id in dead:
                    cluster.remove_node(workers.pop(node_id), allow_graceful=False)
                try:
                    events += list(lines)
                except httpx.RemoteProtocolError:
                    # Every node runs a proxy (proxy_location: EveryNode), and on this one machine they
                    # all listen on the one port: the connection may have run through a dead node's
                    # proxy, which no server can answer for. The client sees the cut, not a hang.
                    events.append({"type": "cut"})
                break
    assert not dead & set(workers), f"the animator never started on this turn: {events[-1]}"
    if events[-1]["type"] != "cut":
        assert events[-1]["type"] == "error" and events[-1]["code"] == "stage_failed", events[-1]
        assert any(stage.lower() in events[-1]["message"].lower() for stage in on_dead), (events[-1], on_dead)

    # Serve replaces the lost replicas on the nodes that remain. Turns sent before then would queue
    # at the ingress's handles, and Serve counts queued requests as load.
    wait_replaced(dead)
    deadline = time.monotonic() + 120
    while True:
        events, _ = post_turn(rehearsal["base"], jfk_bytes)
        if events[-1]["type"] == "done":
            break
        assert time.monotonic() < deadline, f"no successful turn after the node died; last: {events[-1]}"
        time.sleep(2)
    check_segments_match_reply(events)
    for name, reps in replicas().items():  # every stage runs again, none on a dead node
        assert reps and all(r["node_id"] not in dead for r in reps), name


def wait_replaced(dead: set[str], deadline_s: float = 240) -> None:
    """Until every deployment has a running replica again, none on a node of `dead`."""
    end = time.monotonic() + deadline_s
    while True:
        placed = replicas()
        if all(reps and all(r["node_id"] not in dead for r in reps) for reps in placed.values()):
            return
        assert time.monotonic() < end, f"Serve did not replace the lost replicas: {placed}"
        time.sleep(1)
