"""The planner's front door (capacity/front_door.py) and what a sizing must hold besides p95: the
front door's replicas and CPU nodes from its measured costs, by arithmetic that can be checked by
hand; underruns within a bound; a client that starts playing once it holds some of the reply. Pure
Python, seeded: no Ray."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from avatar_core import playback
from capacity import cli, front_door, inputs, planning
from capacity.avatar import TurnConfig, Workload
from capacity.engine import StageCost
from capacity.front_door import FrontDoorCost, FrontDoorSpec
from capacity.sim import Sim
from tests.test_capacity import scenario

SPEC = FrontDoorSpec(replica_cpus=2, per_node=1, node_cpus=8, min_replicas=2, max_replicas=4, max_nodes=4, min_nodes=2)


def cost(**kw) -> FrontDoorCost:
    base = dict(name="t", listen_ingress_s=0.01, listen_proxy_s=0.002, turn_ingress_s=1.0, turn_proxy_s=0.1,
                knee=1000, proxy_in_python=False)
    return FrontDoorCost(**{**base, **kw})


def test_a_replica_takes_what_one_core_carries_at_the_sizing_utilisation():
    c = cost()
    rate = 0.05  # a turn every 20 s
    per_session = 0.01 + rate * 1.0  # 0.06 cores of the Ingress
    f = front_door.size(100, rate, c, SPEC)
    assert f.replica_sessions == 11  # 0.7 / 0.06
    assert f.limit == "ingress CPU" and f.node_sessions == 11
    assert f.replicas == math.ceil(100 / 11) == 10 and f.nodes == 10  # one replica a node
    assert f.cores == pytest.approx(100 * (per_session + 0.002 + rate * 0.1))
    assert not f.within_config  # the config allows 4


def test_the_measured_knee_caps_a_replica_below_its_cpu():
    f = front_door.size(60, 0.0, cost(knee=25), SPEC)
    assert (f.replica_sessions, f.limit, f.replicas, f.nodes) == (25, "loop lag", 3, 3)


def test_servers_python_proxy_caps_a_node_where_haproxy_does_not():
    serve = cost(listen_proxy_s=0.025, proxy_in_python=True)
    hap = replace(serve, proxy_in_python=False)
    a, b = front_door.size(200, 0.0, serve, SPEC), front_door.size(200, 0.0, hap, SPEC)
    assert a.limit == "proxy" and a.node_sessions == 28  # 0.7 / 0.025
    assert b.limit == "ingress CPU" and b.node_sessions == 70  # 0.7 / 0.01
    assert a.nodes == 8 and b.nodes == 3


def test_a_node_holds_several_replicas_within_its_cpus():
    spec = replace(SPEC, per_node=4, node_cpus=2, min_nodes=1)
    f = front_door.size(400, 0.0, cost(), spec)
    # 4 replicas of 70 would be 280 sessions, but 2 cores at 0.7 carry 1.4 / 0.012 = 116
    assert f.limit == "node CPUs" and f.node_sessions == 116
    assert f.nodes == math.ceil(400 / 116) and f.replicas == math.ceil(400 / 70)


def test_the_minimum_replicas_hold_however_few_sessions():
    f = front_door.size(1, 0.05, cost(), SPEC)
    assert f.replicas == 2 and f.nodes == 2


def test_the_gpu_clusters_front_door_is_read_from_its_configs():
    spec = front_door.front_spec()
    serve = inputs.load_yaml(inputs.GPU_SERVE)
    (ingress,) = [d for d in serve["applications"][0]["deployments"] if d["name"] == "Ingress"]
    assert spec.per_node == ingress.get("max_replicas_per_node", 1)
    assert spec.min_replicas == ingress["autoscaling_config"]["min_replicas"] >= 2
    assert spec.node_cpus == 8 and spec.max_nodes >= spec.min_nodes >= 2  # the head and a cpu_front worker


def test_the_shipped_costs_are_measured_figures_with_their_source():
    raw = inputs.load_yaml(front_door.FRONT_DOOR_COSTS)
    costs = front_door.load_costs()
    assert set(costs) == set(raw["front_door"]) and len(costs) >= 2
    for name, entry in raw["front_door"].items():
        assert "source" in entry and "benchmarks/sessions.py" in entry["source"], name
        c = costs[name]
        assert 0 < c.listen_ingress_s < 0.2 and 0 <= c.listen_proxy_s < 0.2 and c.knee > 0
        assert c.turn_ingress_s > 0
    assert any(c.proxy_in_python for c in costs.values()) and any(not c.proxy_in_python for c in costs.values())


def test_the_default_front_door_is_one_the_costs_file_has():
    args = cli.parser().parse_args(["size"])
    assert args.front_door == "haproxy-100ms-lean" and args.front_door in front_door.load_costs()  # the cluster's
    assert args.underruns == 0.0 and args.hold == 0.0  # as the page plays


# ---- playback and underruns ---------------------------------------------------------------------


def slow_animator(hold_s: float | None, turns: int = 1) -> list[dict]:
    """Turns of one session whose animator is slower than speech (RTF 1.5): fragments fall behind."""
    w = Workload(utterance_s=2.0, think_s=1.0, sentences=3, reply_s=9.0, turns=turns)
    sc = scenario({"animator": StageCost(fixed_s=0.1, per_audio_s=1.5, demand=0)}, workload=w,
                  turn=TurnConfig(hold_s=hold_s))
    sim = Sim(sc, seed=1).closed(1, turns=turns)
    sim.run(600)
    return sim.results


def test_a_longer_jitter_buffer_trades_underruns_for_voice_to_face():
    runs = [slow_animator(h)[0] for h in (0.0, 2.0, 30.0)]
    assert runs[0]["underruns"] > 0 and runs[2]["underruns"] == 0
    assert [r["underruns"] for r in runs] == sorted((r["underruns"] for r in runs), reverse=True)
    for r, h in zip(runs, (0.0, 2.0, 30.0)):  # the first frame of speech is shown `hold` after it came
        assert r["v2f_s"] == pytest.approx(runs[0]["v2f_s"] + h)


def test_the_adaptive_buffer_learns_from_the_sessions_turns_up_to_a_second():
    """The first turn plays at once and stalls; the next ones wait the largest recent need, capped
    at 1 s, so an animator this slow still stalls, less."""
    turns = slow_animator(None, turns=3)
    first, later = turns[0], turns[1:]
    assert first["v2f_s"] == pytest.approx(slow_animator(0.0)[0]["v2f_s"])
    for t in later:
        assert t["v2f_s"] == pytest.approx(first["v2f_s"] + playback.MAX_HOLD_S, abs=0.06)
        assert 0 < t["underruns"] <= first["underruns"]


def test_a_turns_need_is_how_late_playback_must_start_for_no_stall():
    # fragments of 1 s: the second came 1.3 s after the first (0.3 s late), the third 2.2 s (0.2 s late)
    arrivals, durations = [10.0, 11.3, 12.2], [1.0, 1.0, 1.0]
    assert playback.need(arrivals, durations) == pytest.approx(0.3)
    assert playback.play(arrivals, durations, 0.0)[1] == 1  # the second stalls; after it, the third is in time
    assert playback.play(arrivals, durations, 0.3) == (10.3, 0, pytest.approx(13.3))
    assert playback.need([0.0, 0.5, 0.99], [0.5, 0.5, 0.5]) == 0.0  # within LATE_S: noise, not a need
    # the buffer: the largest of the last five needs, up to the next 50 ms, at most 1 s
    assert playback.hold_s([]) == 0.0
    assert playback.hold_s([0.31, 0.07]) == pytest.approx(0.35)
    assert playback.hold_s([2.0, 0.1, 0.1, 0.1, 0.1, 0.1]) == pytest.approx(0.1)  # the 2 s is six turns ago
    assert playback.hold_s([0.1, 2.0]) == playback.MAX_HOLD_S


def test_a_plan_meets_its_target_only_within_the_underrun_bound():
    report = planning.Report(
        turns=10, v2f_p50_s=2.0, v2f_p95_s=2.4, v2f_mean_s=2.1, endpointing_s=0.7, asr_p50_s=0.4, underruns=5,
        fragments=100, turns_per_min=3.0, rejected=0, utilisation={}, replicas_peak={}, replicas_mean={},
        queue_wait_p95_s={}, nodes_peak={}, node_hours={}, unplaced={})
    assert planning.underrun_share(report) == 0.05
    assert planning.excess(report, 2.5, None) == 0  # p95 alone: met
    assert planning.excess(report, 2.5, 0.0) == pytest.approx(0.05)
    assert planning.excess(report, 2.5, 0.05) == 0
    assert planning.excess(report, 2.0, 0.05) == pytest.approx(0.2)  # 0.4 s over a 2 s target
    assert planning.turns_per_s(report, 2) == pytest.approx(3.0 / 60 / 2)


def test_size_rows_report_the_front_door_and_count_only_l4s_per_session():
    """A short run of the real sizing search: its row carries the front door at that load, and a
    row that misses the underrun bound has no sessions-per-L4 figure."""
    c = front_door.load_costs()
    how = planning.Sizing(minutes=2, gpu_sharing="free", underruns=None, front=next(iter(c.values())))
    (row,) = planning.size_rows(inputs.l4_inputs(), [2], 30.0, how)
    assert row.front is not None and row.front.sessions == 2 and row.front.nodes >= 2
    assert row.l4s == sum(n for role, n in row.nodes.items() if role != front_door.ROLE) >= 2
    assert row.met and row.sessions_per_l4 == pytest.approx(2 / row.l4s)
    strict = replace(how, underruns=0.0)
    (again,) = planning.size_rows(inputs.l4_inputs(), [2], 30.0, replace(strict, minutes=2))
    share = planning.underrun_share(again.report)
    assert again.met == (share == 0) and (again.met or math.isnan(again.sessions_per_l4))
