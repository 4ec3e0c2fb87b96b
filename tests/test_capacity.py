"""The capacity planner's simulation against cases with known answers: a turn with no queueing is
the sum of its costs; a queue with Poisson arrivals and fixed service waits as M/D/1 says; requests
sharing a node or a batch slow down as the model says; the autoscaler is Ray's policy, adds a
replica under a burst and removes it after the downscale delay; packing never puts more than one
GPU on a node. Pure Python, seeded: no Ray cluster, no timing."""

import math
import random
import statistics
from dataclasses import replace

import numpy as np
import pytest

from capacity import cli, inputs, planning, report, scenarios, validation
from capacity.autoscaling import Autoscaling, Policy
from capacity.avatar import Clip, Session, TurnConfig, Workload
from capacity.cluster import NodeType
from capacity.engine import Job, StageCost
from capacity.schema import BenchResult
from capacity.sim import STAGES, Scenario, Sim, StageSpec
from capacity.stats import quantile


def scenario(costs: dict | None = None, scaling: dict | None = None, capacity_units: float = 100.0,
             max_ongoing: dict | None = None, **kw) -> Scenario:
    """Four stages on one node big enough that nothing contends, unless told otherwise."""
    costs = {"asr": StageCost(fixed_s=0.2, per_audio_s=0.05, demand=0),
             "llm": StageCost(ttft_s=0.1, tokens_per_s={1: 20.0}, demand=0),
             "tts": StageCost(fixed_s=0.05, per_audio_s=0.25, demand=0),
             "animator": StageCost(fixed_s=0.1, per_audio_s=0.5, demand=0), **(costs or {})}
    scaling = scaling or {}
    max_ongoing = max_ongoing or {}
    stages = {s: StageSpec(max_ongoing.get(s, 1), scaling.get(s, Autoscaling.of(None, 1)), num_gpus=0, num_cpus=0)
              for s in costs}
    node = NodeType("one", None, gpus=0, cpus=100, capacity=capacity_units, min_nodes=1, max_nodes=1)
    return Scenario(costs=costs, stages=stages, node_types=[node], **kw)


def run_of(sessions: int, **fields) -> dict:
    """One of run.py's concurrency runs: `fields` as the test gives them, the rest placeholders."""
    return {"sessions": sessions, "turns": 4, "v2f_p50_s": 2.0, "v2f_p95_s": 2.5, "turns_per_min": 5.0, **fields}


def turn(**fields) -> dict:
    """A turn as run.py keeps it (`turn_record`): `fields` as the test gives them, the rest placeholders."""
    return {"session": 0, "input": 0, "began_s": 0.0, "opened_s": 0.01, "streamed_s": 0.02, "voiced_s": 1.0,
            "done_s": 5.0, "v2f_s": 1.5, "endpointing_s": 0.3, "asr_s": 0.5, "rest_s": 0.7, "reply_speech_s": 3.0,
            "reply_sentences": 1, "first_sentence_speech_s": 3.0, "cancelled_starts": [], **fields}


def bench(**fields) -> BenchResult:
    """A run.py result, validated by its schema: `fields` as the test gives them, and placeholders
    for the rest (the floor, the A/B, underruns: what docs/benchmarks.md's tables read, not the planner)."""
    stage = {"fixed_s": 0.1, "per_audio_s": 0.1, "r2": 1.0, "samples": 4}
    base = {
        "inputs": [], "floor_s": 1.0, "floor_parts_s": dict.fromkeys(STAGES, 0.25), "ttfs_s": 1.0, "ttfs_local_s": 1.0,
        "ttfs_over_floor": 1.0, "serve_overhead": 0.0, "per_input": [], "streaming_over_sequential": 0.2,
        "sequential_first_segment_s": 5.0, "streamed_first_segment_s": 1.0, "sequential_sentences": 4, "underruns": 0,
        "long_reply_speech_s": 30.0, "long_reply_fragments": 30, "v2f_p50_s": 2.0, "v2f_p95_s": 2.5,
        "v2f_parts_p50_s": {"endpointing": 0.4, "asr": 0.5, "rest": 1.1}, "v2f_per_input": [], "concurrency": [],
        "costs": {"asr": stage, "llm": {"fixed_s": 0.1, "per_token_s": 0.03, "first_token_s": 0.3,
                                        "tokens_per_speech_s": 4.0, "r2": 1.0, "samples": 4},
                  "tts": {**stage, "first_chunk_s": 0.2}, "animator": {**stage, "first_fragment_s": 0.1},
                  "endpointing": {"end_silence_s": 0.7},
                  "workload": {"utterance_s": 3.0, "reply_tokens": 40, "reply_speech_s": 10.0, "reply_sentences": 3,
                               "first_sentence_speech_s": 3.0}},
        "rtf": dict.fromkeys(STAGES, 0.1),
        "machine": {"date": "today", "commit": "abc", "cpus": 2, "load_before": [1.0] * 3, "load_after": [1.0] * 3,
                    "quick": True, "runs": 1},
    }
    return BenchResult.model_validate({**base, **fields})


# ---- a turn alone is the sum of its costs -------------------------------------------------------


def test_one_turn_without_queueing_takes_the_sum_of_its_costs():
    w = Workload(utterance_s=3.0, think_s=0.0, sentences=1, reply_s=2.0, tokens_per_speech_s=5.0, turns=1)
    turn = TurnConfig(endpointing_s=0.7, hop_s=0.01, first_fragment_s=0.4, fragment_s=1.0)
    sim = Sim(scenario(workload=w, turn=turn), seed=3).closed(1, turns=1)
    report = sim.run(60)
    (r,) = sim.results
    asr = 0.2 + 0.05 * 3.0
    llm = 0.1 + (2.0 * 5.0) / 20.0  # the only sentence: 10 tokens at 20 tokens/s
    tts = 0.05 + 0.25 * 2.0  # the whole sentence in one chunk
    anim = 0.1 + 0.5 * 0.4  # the first fragment: 0.4 s of audio
    hops = 5 * 0.01  # four stage calls and the fragment's way back
    assert r["endpointing_s"] == pytest.approx(0.7)
    assert r["asr_s"] == pytest.approx(0.01 + asr)
    assert r["v2f_s"] == pytest.approx(0.7 + asr + llm + tts + anim + hops)
    assert r["fragments"] == 3  # 2.0 s cut 0.4 + 1.0 + 0.6
    assert all(max(d.waits) == 0 for d in sim.deps.values())
    assert report.turns == 1 and report.rejected == 0


@pytest.mark.parametrize("endpointing, words", [(0.7, "after the decision"), (0.25, "before the decision")])
def test_words_started_at_the_hush_end_the_turn_with_the_decision_or_after_it(endpointing, words):
    """transcribe_at_s (endpointing.transcribe_silence_s): ASR starts at the hush, and the end of
    the turn is the endpointer's decision or the words' arrival, whichever comes last; the turn
    then goes straight to the LLM, with no ASR call of its own."""
    w = Workload(utterance_s=3.0, think_s=0.0, sentences=1, reply_s=2.0, tokens_per_speech_s=5.0, turns=1)
    turn = TurnConfig(endpointing_s=endpointing, transcribe_at_s=0.1, hop_s=0.01, first_fragment_s=0.4, fragment_s=1.0)
    sim = Sim(scenario(workload=w, turn=turn), seed=3).closed(1, turns=1)
    sim.run(60)
    (r,) = sim.results
    asr = 0.2 + 0.05 * 3.0
    heard = 0.1 + 0.01 + asr + 0.01  # the hush, its call and the words' way back
    end = max(endpointing, heard)
    assert (end == heard) is (words == "before the decision")
    llm = 0.1 + (2.0 * 5.0) / 20.0
    tts = 0.05 + 0.25 * 2.0
    anim = 0.1 + 0.5 * 0.4
    assert r["endpointing_s"] == pytest.approx(end)
    assert r["asr_s"] == pytest.approx(0.0)
    assert r["v2f_s"] == pytest.approx(end + llm + tts + anim + 4 * 0.01)  # three stage calls and the way back
    assert len(sim.deps["asr"].waits) == 1  # one ASR call: the hush's


def test_fragments_grow_as_the_animator_config_says():
    """The planner cuts fragments as the Animator does (animator.fragment_growth): 2.0 s of speech
    is 0.4 + 1.0 + 0.6 straight to 1 s fragments, 0.4 + 0.8 + 0.8 with growth 2."""
    from capacity.avatar import fragments

    w = Workload(utterance_s=3.0, think_s=0.0, sentences=1, reply_s=2.0, tokens_per_speech_s=5.0, turns=1)
    cut = {}
    for growth in (None, 2.0):
        turn = TurnConfig(endpointing_s=0.7, hop_s=0.01, first_fragment_s=0.4, fragment_s=1.0, fragment_growth=growth)
        sim = Sim(scenario(workload=w, turn=turn), seed=3).closed(1, turns=1)
        sim.run(60)
        cut[growth] = sim.results[0]["fragments"], fragments(2.0, None, turn)
    assert cut[None] == (3, pytest.approx([0.4, 1.0, 0.6]))
    assert cut[2.0] == (3, pytest.approx([0.4, 0.8, 0.8]))


def test_underruns_appear_only_when_the_animator_is_slower_than_speech():
    w = Workload(utterance_s=2.0, think_s=0.0, sentences=3, reply_s=9.0)
    fast, slow = (Sim(scenario({"animator": StageCost(fixed_s=0.1, per_audio_s=rtf, demand=0)}, workload=w), seed=1)
                  .closed(1, turns=1) for rtf in (0.2, 1.5))
    fast.run(120)
    slow.run(120)
    assert fast.results[0]["underruns"] == 0
    assert slow.results[0]["underruns"] > 0


# ---- queueing and sharing -----------------------------------------------------------------------


def test_poisson_arrivals_to_one_fixed_time_server_wait_as_md1_says():
    """M/D/1 at load 0.5: mean wait rho * D / (2 (1 - rho)) = 0.5 s for D = 1 s."""
    sim = Sim(scenario(), seed=0)
    dep, rng, t = sim.deps["asr"], random.Random(7), 0.0
    for _ in range(40_000):
        t += rng.expovariate(0.5)
        sim.loop.at(t, lambda: dep.submit(Job(sim, [(1.0, None)])))
    sim.loop.run(t + 100)
    assert len(dep.waits) == 40_000
    assert sum(dep.waits) / len(dep.waits) == pytest.approx(0.5, rel=0.06)


def test_requests_on_a_full_node_share_it():
    """Two requests of 1 s that each keep the whole node busy finish together at 2 s."""
    sc = scenario({"asr": StageCost(fixed_s=1.0, demand=1.0), "tts": StageCost(fixed_s=1.0, demand=1.0)},
                  capacity_units=1.0)
    sim, ends = Sim(sc), []
    for stage in ("asr", "tts"):
        sim.deps[stage].submit(Job(sim, [(1.0, lambda: ends.append(sim.loop.now))]))
    sim.loop.run(10)
    assert ends == [pytest.approx(2.0), pytest.approx(2.0)]


def test_a_request_beside_one_that_interferes_takes_longer_by_the_measured_factor():
    """On 2 cores, an LLM call of 2 s whose work grows 1.5 times beside TTS: alone 2 s; beside a TTS
    call holding the other core 3 s; beside one holding half of it 2.5 s; beside the animator,
    for which no factor was measured, 2 s. It holds its core all along: the CPU is 3 s, not 2."""
    def llm_end(neighbour: str | None, demand: float = 1.0) -> tuple[float, float]:
        costs = {"llm": StageCost(fixed_s=2.0, demand=1.0, interference={"tts": 1.5}),
                 "tts": StageCost(fixed_s=100.0, demand=demand), "animator": StageCost(fixed_s=100.0, demand=1.0)}
        sim, ends = Sim(scenario(costs, capacity_units=2.0)), []
        if neighbour:
            sim.deps[neighbour].submit(Job(sim, [(100.0, None)]))
        sim.deps["llm"].submit(Job(sim, [(2.0, lambda: ends.append(sim.loop.now))]))
        sim.loop.run(10)
        return ends[0], sim.deps["llm"].cpu_s

    assert llm_end(None) == (pytest.approx(2.0), pytest.approx(2.0))
    assert llm_end("tts") == (pytest.approx(3.0), pytest.approx(3.0))
    assert llm_end("tts", demand=0.5)[0] == pytest.approx(2.5)
    assert llm_end("animator")[0] == pytest.approx(2.0)


def test_the_cpu_counted_is_what_requests_held_of_their_node():
    """Two requests of 1 s, each wanting both cores of a 2-core node: 2 s each at one core, so each
    deployment counts 2 core-seconds; a request alone counts its work times its demand."""
    costs = {"asr": StageCost(fixed_s=1.0, demand=2.0), "tts": StageCost(fixed_s=1.0, demand=2.0)}
    sim = Sim(scenario(costs, capacity_units=2.0))
    for stage in ("asr", "tts"):
        sim.deps[stage].submit(Job(sim, [(1.0, None)]))
    sim.loop.run(10)
    assert sim.deps["asr"].cpu_s == pytest.approx(2.0) and sim.deps["tts"].cpu_s == pytest.approx(2.0)
    sim.deps["asr"].submit(Job(sim, [(0.5, None)]))
    sim.loop.run(20)
    assert sim.deps["asr"].cpu_s == pytest.approx(3.0)


def test_a_batching_engine_slows_each_stream_as_its_throughput_table_says():
    """Four streams at 20 tokens/s in all, against 10 alone: each at half speed."""
    llm = StageCost(tokens_per_s={1: 10.0, 4: 20.0}, demand=0)
    sim, ends = Sim(scenario({"llm": llm}, max_ongoing={"llm": 8})), []
    for _ in range(4):
        sim.deps["llm"].submit(Job(sim, [(1.0, lambda: ends.append(sim.loop.now))]))
    sim.loop.run(10)
    assert ends == [pytest.approx(2.0)] * 4
    assert llm.tokens_at(2) == pytest.approx(40 / 3) and llm.tokens_at(16) == 20.0


def test_a_full_replica_queues_and_a_second_one_takes_the_next_request():
    sc = scenario(scaling={"asr": Autoscaling.of(None, 2)})
    sim, ends = Sim(sc), []
    for _ in range(3):
        sim.deps["asr"].submit(Job(sim, [(1.0, lambda: ends.append(sim.loop.now))]))
    sim.loop.run(10)
    assert ends == [pytest.approx(1.0), pytest.approx(1.0), pytest.approx(2.0)]


# ---- autoscaling --------------------------------------------------------------------------------


def test_the_policy_decides_as_rays_own_functions_do():
    """Ray 2.60's scaling factors, delay logic and bounds, on a random walk of load."""
    from ray.serve.autoscaling_policy import _apply_delay_logic, _apply_scaling_factors
    from ray.serve.config import AutoscalingConfig

    cfg = dict(min_replicas=1, max_replicas=6, target_ongoing_requests=1.5, upscale_delay_s=3.0,
               downscale_delay_s=7.0, upscaling_factor=0.8, downscaling_factor=0.5)
    ray_cfg, ours = AutoscalingConfig(**cfg), Policy(Autoscaling.of(cfg))
    rng, state, target, running = random.Random(11), {}, 1, 1
    changes = 0
    for step in range(2000):
        now = step * 0.5
        if step % 40 == 0:
            level = rng.uniform(0, 10)  # the load changes every 20 s
        total = max(0.0, rng.gauss(level, 1.0))
        desired = running * (total / (ray_cfg.target_ongoing_requests * running))
        scaled = _apply_scaling_factors(desired, running, ray_cfg)
        theirs, state = _apply_delay_logic(max(0, scaled), target, ray_cfg, state, _now=now)
        theirs = max(cfg["min_replicas"], min(cfg["max_replicas"], theirs))
        mine = ours.decide(now, running, target, total)
        assert mine == theirs, step
        changes += mine != target
        target = mine
        running = target if step % 3 == 0 else running  # replicas come up a little later
    assert changes > 10


def test_a_burst_adds_replicas_and_the_quiet_after_it_removes_them_after_the_downscale_delay():
    scaling = Autoscaling.of(dict(min_replicas=1, max_replicas=3, target_ongoing_requests=1, upscale_delay_s=5,
                                  downscale_delay_s=60, look_back_period_s=12))
    w = Workload(utterance_s=1.0, think_s=0.5, sentences=1, reply_s=1.0, turns=3)
    sc = scenario({"asr": StageCost(fixed_s=1.0, demand=0)}, scaling={"asr": scaling}, workload=w,
                  metrics_push_s=0, replica_start_s=2.0)
    sim = Sim(sc, seed=5).arrivals([(0, 1.0), (60, 0.0)])  # a session a second for a minute, then none
    report = sim.run(600)
    history = [(0.0, 1)] + sim.deps["asr"].history
    assert max(n for _, n in history) >= 2 and report.replicas_peak["asr"] >= 2
    for (t0, n0), (t1, n1) in zip(history, history[1:]):
        # a wish must last the delay, and the clock starts again after each decision
        assert t1 - t0 >= (5 if n1 > n0 else 60) - 1e-6, history
    assert history[-1][1] == 1 and len(sim.deps["asr"].live()) == 1
    assert history[-1][0] >= 60 + 60  # the burst ended at 60 s; the last step down came a delay later
    assert report.turns == sim.sessions_done * 3 and report.rejected == 0


# ---- packing ------------------------------------------------------------------------------------


def test_replicas_never_pack_more_than_one_gpu_onto_a_node():
    sc = scenarios.l4_scenario(inputs.l4_inputs())
    sc.node_types = [replace(t, start_s=30.0) for t in sc.node_types]
    sim = Sim(sc, seed=2).closed(40)  # far more than the cluster's maximum serves
    for t in range(60, 1200, 60):
        sim.run(t)
        for node in sim.cluster.nodes:
            used = sum(r.dep.num_gpus for r in node.replicas)
            assert used <= node.type.gpus + 1e-9 and node.gpus_free >= -1e-9
    assert max(sim.cluster.peak.values()) > 1  # it did add nodes


def test_first_fit_packing_counts_nodes_per_role():
    specs = inputs.stage_specs(inputs.load_yaml(inputs.GPU_SERVE))
    one_each = {"asr": 1, "llm": 1, "tts": 1, "animator": 1}
    assert planning.nodes_for(one_each, specs) == {"avatar_media": 1, "avatar_llm": 1}  # 0.25 + 0.25 + 0.5
    more = {"asr": 1, "llm": 2, "tts": 3, "animator": 3}  # 0.25 + 0.75 + 1.5 GPUs: 3 media L4s
    assert planning.nodes_for(more, specs) == {"avatar_media": 3, "avatar_llm": 2}


def test_the_l4_costs_file_names_a_source_for_every_figure():
    raw = inputs.load_yaml(inputs.L4_COSTS)
    figures = []

    def walk(x):
        if isinstance(x, dict) and "value" in x:
            figures.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)

    walk(raw)
    assert len(figures) > 15
    assert all(f.get("source") for f in figures)


def test_a_run_is_the_same_for_the_same_seed():
    l4 = inputs.l4_inputs()
    a = Sim(scenarios.l4_scenario(l4), seed=4).closed(6).run(600)
    b = Sim(scenarios.l4_scenario(l4), seed=4).closed(6).run(600)
    assert a == b and a.turns > 50 and math.isfinite(a.v2f_p95_s)


# ---- the model against run.py's measurements ---------------------------------------------------


def made_up_run(turns_detail: list[dict] | None = None, **fields) -> BenchResult:
    """Two clips (11 s and 2.6 s) and the costs of a 2-core machine, made up; 1, 2 and 4 sessions
    measured at the same voice to face, each with these turns kept (or none)."""
    stage = {"r2": 1.0, "samples": 4}
    costs = {
        "asr": {"fixed_s": 0.3, "per_audio_s": 0.02, **stage},
        "llm": {"fixed_s": 0.25, "per_token_s": 0.035, "first_token_s": 0.3, "tokens_per_speech_s": 4.0, **stage},
        "tts": {"fixed_s": -0.01, "per_audio_s": 0.06, "first_chunk_s": 0.2, **stage},
        "animator": {"fixed_s": 0.04, "per_audio_s": 0.13, "first_fragment_s": 0.06, **stage},
        "endpointing": {"end_silence_s": 0.7},
        "workload": {"utterance_s": 6.8, "reply_tokens": 79, "reply_speech_s": 19.0, "reply_sentences": 5,
                     "first_sentence_speech_s": 3.2},
    }
    return bench(**{"inputs": [{"name": "a", "seconds": 11.0, "speech_end_s": 11.0},
                               {"name": "b", "seconds": 2.6, "speech_end_s": 2.6}],
                    "v2f_parts_p50_s": {"endpointing": 0.4, "asr": 0.5, "rest": 1.4},
                    "concurrency": [run_of(n, turns=10, v2f_p50_s=2.0, v2f_p95_s=2.5, turns_per_min=5.0,
                                           turns_detail=turns_detail) for n in (1, 2, 4)],
                    "costs": costs, **fields})


def kept_turns() -> list[dict]:
    """Ten turns of one session, clips a and b in turn, voice to face 1.0, 1.1, ... 1.9 s."""
    return [turn(input=k % 2, began_s=20.0 * k, streamed_s=0.2, done_s=19.0, endpointing_s=0.3, reply_speech_s=8.0,
                 reply_sentences=2, first_sentence_speech_s=3.0, asr_s=0.5, v2f_s=1.0 + 0.1 * k) for k in range(10)]


def test_validation_simulates_each_concurrency_run_and_more_sessions_wait_longer():
    """Run.py's protocol on the same two cores: more sessions can only wait longer, and one session
    waits at least its endpointing, ASR's fixed part and the first token."""
    run = made_up_run()
    v = validation.validate(run, scenarios.local_scenario(run), range(1, 6))
    p50 = {r.sessions: r.simulated_p50_s for r in v.rows}
    assert list(p50) == [1, 2, 4]
    assert p50[1] <= p50[2] <= p50[4]
    assert p50[1] > 0.4 + 0.3 + 0.3
    assert all(r.simulated_p50_s <= r.simulated_p95_s for r in v.rows)
    assert all(r.measured_p95_s == 2.5 and r.p95_interval is None for r in v.rows)  # no turns kept: no interval
    assert [r.error_p50 for r in v.rows] == [pytest.approx((x - 2.0) / 2.0 * 100) for x in p50.values()]
    assert v.clips == [] and v.cpu is None  # no turns kept, no CPU measured
    assert [s.sessions for s in v.stages] == [1, 2, 4] and all(0 < s.utilisation["llm"] < 1 for s in v.stages)


def test_interference_slows_turns_where_sessions_overlap():
    """interference.py's file: an LLM whose work doubles beside anything slows turns where sessions
    overlap (one session's first sentence is written before anything runs beside it); a stage it
    did not measure keeps its costs."""
    run = made_up_run()
    ratio = dict.fromkeys(("asr", "llm", "tts", "animator", "python"), 2.0)
    inter = {"alone": {"llm": {"load_cpu_s": 4.0}}, "ratio": {"llm": ratio}}
    plain = validation.validate(run, scenarios.local_scenario(run), range(1, 6)).rows
    sc = scenarios.local_scenario(run, interference=inter)
    slower = validation.validate(run, sc, range(1, 6)).rows
    assert slower[0].simulated_p50_s >= plain[0].simulated_p50_s
    assert slower[1].simulated_p50_s > plain[1].simulated_p50_s and slower[2].simulated_p50_s > plain[2].simulated_p50_s
    assert sc.costs["llm"].interference == ratio and sc.stages["llm"].start_s == 4.0
    assert sc.costs["tts"].interference is None and sc.stages["tts"].start_s is None


def test_kept_turns_give_the_measured_p95_its_interval_and_each_clip_its_floor():
    """With each turn kept (run.py's turns_detail): the measured p95's bootstrap interval lies within
    the turns' own range; per clip, the measured median and the floors, run.py's (its floor plus the
    clip's 0.3 s wait) and the model's (the wait, then each stage's fitted cost alone)."""
    run = made_up_run(kept_turns(), per_input=[{"input": "a", "floor_s": 1.5, "ttfs_s": 1.7, "ttfs_local_s": 1.6},
                                               {"input": "b", "floor_s": 1.2, "ttfs_s": 1.1, "ttfs_local_s": 1.1}])
    sc = scenarios.local_scenario(run)
    assert [c.graph_s for c in sc.workload.clips] == [pytest.approx(0.2), 0.0]  # ttfs over the floor, if above
    v = validation.validate(run, sc, range(1, 3))
    assert len(v.rows) == 3
    lo, hi = v.rows[0].p95_interval
    assert 1.0 <= lo < hi <= 1.9
    a, b = v.clips
    assert (a.name, b.name) == ("a", "b")
    assert a.measured_s == pytest.approx(1.4)  # the median of clip a's turns (even k: 1.0, 1.2, ... 1.8)
    assert a.floor_measured_s == pytest.approx(1.5 + 0.3)
    # ASR 0.3 + 0.02 x 11 s; the first token 0.3 + 3 s of speech x 4 tokens x 0.035 s; TTS 0.06 x 3 s
    # (its fixed part clipped at 0); the animator 0.04 + 0.13 x the first fragment
    assert a.floor_model_s == pytest.approx(0.3 + (0.3 + 0.02 * 11) + (0.3 + 3 * 4 * 0.035) + 0.06 * 3
                                            + 0.04 + 0.13 * sc.turn.first_fragment_s)


def test_pooled_runs_pool_their_turns_and_their_simulations():
    """The same run twice: its turns twice (the median of their own voice to face), the same
    simulated median, and every session count."""
    run = made_up_run(kept_turns())
    seeds = range(1, 3)
    one = validation.validate(run, scenarios.local_scenario(run), seeds).rows
    two = validation.validate_pooled([run, run], [scenarios.local_scenario(run)] * 2, seeds)
    assert [r.sessions for r in two] == [1, 2, 4]
    for single, pooled in zip(one, two):
        assert pooled.turns == 20 and pooled.measured_p50_s == pytest.approx(statistics.median(1.0 + 0.1 * k for k in range(10)))
        assert pooled.simulated_p50_s == pytest.approx(single.simulated_p50_s)


def test_a_run_without_a_per_token_cost_is_refused_by_name():
    """run.py --questions 0 fits the LLM over one reply: its slope is 0, an LLM infinitely fast."""
    run = made_up_run()
    run.costs.llm.per_token_s = 0.0
    with pytest.raises(ValueError, match="per-token cost"):
        scenarios.local_scenario(run)


def test_the_cli_prints_the_validation_it_computes(tmp_path, capsys):
    """`validate --bench F` reads run.py's JSON through the schema and prints the rows that
    `validation.validate` returns for the same seeds; its exit status says whether the worst
    error is within the aim."""
    run = made_up_run()
    path = tmp_path / "bench.json"
    path.write_text(run.to_json())
    code = cli.main(["validate", "--bench", str(path), "--seeds", "2"])
    rows = validation.validate(run, scenarios.local_scenario(run), range(1, 3)).rows
    assert report.validation_table(rows) in capsys.readouterr().out
    assert code == (0 if validation.worst_error(rows) <= validation.AIM else 1)


def test_a_run_is_written_and_read_back_with_a_nan_as_it_was():
    """A number a run could not measure is NaN in the file and NaN when read back (pydantic's own
    serializer would write null, which no float field accepts)."""
    run = made_up_run(floor_s=float("nan"))
    back = BenchResult.from_json(run.to_json())
    assert math.isnan(back.floor_s) and back.model_copy(update={"floor_s": 0.0}) == run.model_copy(update={"floor_s": 0.0})


def test_a_replica_loading_its_model_shares_the_node_with_running_requests():
    """start_demand: a new replica's 2 s load and a running request, each keeping the one unit of
    the node busy, go at half speed: the replica is up at 4 s, not 2."""
    sc = scenario({"asr": StageCost(fixed_s=10.0, demand=1.0)}, capacity_units=1.0,
                  scaling={"asr": Autoscaling.of({"min_replicas": 1, "max_replicas": 2})}, replica_start_s=2.0, start_demand=1.0, autoscale=False)
    sim = Sim(sc)
    dep = sim.deps["asr"]
    dep.submit(Job(sim, [(10.0, None)]))
    dep.scale_to(2)
    sim.loop.run(3.9)
    assert len(dep.running()) == 1
    sim.loop.run(4.1)
    assert len(dep.running()) == 2 and dep.ongoing == 1  # the load is not a request


# ---- what run.py measured beyond the stage costs ------------------------------------------------


def test_each_clip_waits_its_own_endpointing():
    """A clip the turn model hears as unfinished waits longer than one it hears as finished: the
    pairs are kept together, not averaged."""
    w = Workload(clips=[Clip(1.0, 0.3), Clip(2.0, 2.0)], think_s=0.0, sentences=1, reply_s=1.0)
    sim = Sim(scenario(workload=w), seed=2).closed(1, turns=40)
    sim.run(600)
    waits = {round(r["endpointing_s"], 6) for r in sim.results}
    assert waits == {0.3, 2.0}


def test_cpu_outside_the_stages_slows_turns_that_share_its_cores():
    """An overhead request per turn from the first word, beside the stages on one core: not in the
    turn's path, but the stages share the core with it while it runs, and the turn slows."""
    w = Workload(utterance_s=1.0, think_s=0.0, sentences=1, reply_s=2.0, turns=1)
    costs = {"asr": StageCost(fixed_s=0.5, demand=1.0)}
    plain = Sim(scenario(costs, capacity_units=1.0, workload=w)).closed(1, turns=1)
    heavy = Sim(scenario(costs, capacity_units=1.0, workload=w, overhead=StageCost(fixed_s=5.0, demand=1.0))).closed(1, turns=1)
    plain.run(60)
    heavy.run(60)
    (a,), (b,) = plain.results, heavy.results
    assert b["asr_s"] == pytest.approx(a["asr_s"] + 0.5)  # ASR's 0.5 s of work at half the core
    assert b["v2f_s"] > a["v2f_s"]


def test_the_overhead_is_what_one_session_cost_beyond_the_simulated_stage_calls():
    """Run.py's processes spent 9 s a turn in one session (every group but `other` and `machine`);
    the same protocol simulated spends 4.4 s in the stage calls (ASR 0.2 + 0.05 x 2, the LLM 0.1 +
    20 tokens at 20/s, TTS 0.25 x 4, the animator 0.5 x 4, each on one core, nothing contending), so
    the rest, 4.6 s, runs beside each turn over the 10 s one session's turn took."""
    cpu = {"ASR": 1.0, "LLM": 2.0, "TTS": 1.0, "Animator": 2.0, "Ingress": 1.5, "proxy": 0.5, "ray": 0.5, "client": 0.5,
           "other": 9.0, "machine": 20.0}
    measured = bench(concurrency=[run_of(1, turns=4, turns_per_min=6.0, cpu_per_turn_s=cpu)])
    costs = {"asr": StageCost(fixed_s=0.2, per_audio_s=0.05, demand=1.0),
             "llm": StageCost(ttft_s=0.1, tokens_per_s={1: 20.0}, demand=1.0),
             "tts": StageCost(per_audio_s=0.25, demand=1.0), "animator": StageCost(per_audio_s=0.5, demand=1.0)}
    sc = scenario(costs, workload=Workload(utterance_s=2.0, sentences=2, reply_s=4.0, tokens_per_speech_s=5.0,
                                           think_s=0.0, wait_for_playback=False))
    sim = scenarios.protocol(sc, 1, 4, seed=0)
    assert len(sim.results) == 4
    assert sum(scenarios.stage_cpu_per_turn(sim).values()) == pytest.approx(4.4)
    overhead = scenarios.overhead_cost(measured, sc)
    assert overhead.fixed_s == 10.0 and overhead.demand == pytest.approx((9.0 - 4.4) / 10.0)
    assert scenarios.overhead_cost(bench(concurrency=[run_of(1)]), sc) is None  # a run without accounting


def test_a_cancelled_request_leaves_the_queue_or_stops_where_it_got_to():
    sim = Sim(scenario({"asr": StageCost(fixed_s=1.0, demand=1.0)}))
    dep = sim.deps["asr"]
    running, queued = Job(sim, [(1.0, None)]), Job(sim, [(1.0, None)])
    dep.submit(running)
    dep.submit(queued)
    sim.loop.run(0.4)
    dep.cancel(queued)
    assert dep.ongoing == 1 and not dep.queue
    dep.cancel(running)
    assert dep.ongoing == 0 and dep.replicas[0].jobs == [] and dep.cpu_s == pytest.approx(0.4)
    sim.loop.run(5.0)
    assert running.i == 0  # its end never came


def test_a_turn_started_early_holds_asr_then_the_llm_until_the_speaker_goes_on():
    """A pause 1.0 s into a 3 s clip started a turn, cancelled at 1.5 s: its ASR call (0.2 + 0.05 x
    1.0 s) runs to 1.25 s, then its LLM call to the cancel, 0.25 s more; cancelled at 1.1 s, the ASR
    call stops there and the LLM is never called. The turn of the whole clip is as it was."""
    costs = {"asr": StageCost(fixed_s=0.2, per_audio_s=0.05, demand=1.0),
             "llm": StageCost(ttft_s=0.1, tokens_per_s={1: 20.0}, demand=1.0)}

    def run(early):
        w = Workload(clips=[Clip(3.0, 0.3, early=early)], sentences=1, reply_s=2.0, tokens_per_speech_s=5.0,
                     think_s=0.0)
        sim = Sim(scenario(costs, workload=w)).closed(1, turns=1)
        sim.run(60)
        return sim.deps["asr"].cpu_s, sim.deps["llm"].cpu_s, sim.results[0]["v2f_s"]

    asr, llm, v2f = run(())
    assert (asr, llm) == (pytest.approx(0.35), pytest.approx(0.6))  # 0.2 + 0.05 x 3; 0.1 + 10 tokens / 20
    assert run(((1.0, 1.5),)) == (pytest.approx(asr + 0.25), pytest.approx(llm + 0.25), pytest.approx(v2f))
    assert run(((1.0, 1.1),)) == (pytest.approx(asr + 0.1), pytest.approx(llm), pytest.approx(v2f))


def test_sessions_speak_the_clips_in_order_with_their_replies_and_the_clients_gap():
    """In order, as run.py's clients do: a session takes the clips from its own index on, each
    with its measured wait and reply; the next turn's audio starts the client's gap after the last
    fragment of the one before."""
    w = Workload(clips=[Clip(1.0, 0.3, reply_s=1.0, sentences=1), Clip(2.0, 0.5, reply_s=3.0, sentences=1)],
                 in_order=True, gap_s=0.7, think_s=0.0, wait_for_playback=False)
    for index, waits in ((0, [0.3, 0.5, 0.3]), (1, [0.5, 0.3, 0.5])):
        fast = {"tts": StageCost(per_audio_s=0.05, demand=0), "animator": StageCost(per_audio_s=0.05, demand=0)}
        sim = Sim(scenario(fast, workload=w))
        Session(sim, 0.0, turns=3, index=index)
        sim.run(120)
        rs = sim.results
        assert [round(r["endpointing_s"], 6) for r in rs] == waits
        replies = [r["playback_end"] - r["speech_end"] - r["v2f_s"] for r in rs]
        assert replies == [pytest.approx(1.0 if x == 0.3 else 3.0) for x in waits]  # no underruns here
        for a, b, x in zip(rs, rs[1:], waits[1:]):
            assert b["speech_end"] - a["done"] == pytest.approx(0.7 + (1.0 if x == 0.3 else 2.0))


def test_the_clips_are_what_the_one_session_turns_measured():
    """run.py's turns_detail: per input the median wait and reply, the usual number of early starts
    at their median times; the gap is from one turn's `done` to the next turn's first audio."""
    def one(k, began, ep, reply, starts):
        return turn(input=k, began_s=began, streamed_s=0.25, done_s=10.0, endpointing_s=ep, reply_speech_s=reply,
                    reply_sentences=2, first_sentence_speech_s=1.5, cancelled_starts=starts)

    clips_spoken = [{"name": "jfk", "seconds": 11.5, "speech_end_s": 11.0}, {"name": "q", "seconds": 2.5, "speech_end_s": 2.0}]
    run = bench(inputs=clips_spoken, concurrency=[run_of(1, turns_detail=[
        one(0, 0.0, 0.3, 7.0, [[2.5, 3.3]]), one(1, 10.5, 0.2, 5.0, []), one(0, 21.0, 0.5, 7.0, [[2.7, 3.5]]),
        one(1, 31.5, 0.2, 5.0, []), one(0, 42.0, 0.4, 7.0, [])])])
    clips, gap = scenarios.measured_clips(run)
    assert clips == [Clip(11.0, 0.4, reply_s=7.0, sentences=2, first_sentence_s=1.5, early=((2.6, 3.4),)),
                     Clip(2.0, 0.2, reply_s=5.0, sentences=2, first_sentence_s=1.5)]
    assert gap == pytest.approx(0.5 + 0.25)  # began 10.5 after a turn that began at 0 and ended at 10
    summary = {"turns": 2, "v2f_p50_s": 2.0, "v2f_p95_s": 2.5, "asr_p50_s": 0.5, "rest_p50_s": 1.2}
    old = bench(inputs=clips_spoken, concurrency=[run_of(1)],
                v2f_per_input=[{"input": "q", "endpointing_p50_s": 0.3, **summary}])
    assert scenarios.measured_clips(old) == ([Clip(2.0, 0.3)], 0.0)


def test_calls_vary_by_the_jitter_around_their_fitted_cost():
    """With jitter, each stage request's work is its fitted cost times a lognormal draw of mean 1
    and the given coefficient of variation; without, exactly its cost."""
    def works(jitter):
        sim = Sim(scenario(jitter=jitter), seed=3)
        dep = sim.deps["asr"]
        jobs = [Job(sim, [(0.5, None), (2.0, None)]) for _ in range(4000)]
        for job in jobs:
            dep.submit(job)
        return [job.marks[-1][0] / 2.0 for job in jobs], [job.marks[0][0] / job.marks[-1][0] for job in jobs]

    same, _ = works(0.0)
    assert set(same) == {1.0}
    factors, shape = works(0.2)
    mean = sum(factors) / len(factors)
    cv = (sum((f - mean) ** 2 for f in factors) / len(factors)) ** 0.5 / mean
    assert mean == pytest.approx(1.0, abs=0.02) and cv == pytest.approx(0.2, abs=0.02)
    assert shape == [pytest.approx(0.25)] * len(shape)  # the points along a call scale with it


def test_the_call_spread_is_how_one_sessions_repeated_asr_calls_varied():
    turns = [turn(input=0, asr_s=0.4), turn(input=0, asr_s=0.6), turn(input=1, asr_s=1.0),
             turn(input=1, asr_s=1.0), turn(input=2, asr_s=9.0)]  # a clip spoken once tells nothing
    # clip 0: variance 0.02 over a mean of 0.5 squared, 0.08; clip 1: 0; pooled: the root of their mean
    assert scenarios.call_spread(bench(concurrency=[run_of(1, turns_detail=turns)])) == pytest.approx(0.2)
    assert scenarios.call_spread(bench(concurrency=[run_of(1)])) == 0.0


def test_what_the_graph_adds_beyond_the_stage_calls_is_a_wait_before_the_llm():
    def v2f(graph_s):
        w = Workload(clips=[Clip(1.0, 0.3, graph_s=graph_s)], sentences=1, reply_s=1.0, think_s=0.0)
        sim = Sim(scenario(workload=w)).closed(1, turns=1)
        sim.run(60)
        return sim.results[0]["v2f_s"], sim.results[0]["asr_s"]

    (plain, asr), (slower, asr_too) = v2f(0.0), v2f(0.25)
    assert slower == pytest.approx(plain + 0.25) and asr_too == pytest.approx(asr)


def test_the_one_quantile_is_numpys_default_and_statistics_inclusive_method():
    """capacity.stats.quantile, which the planner and the benchmarks share: linear between the
    closest ranks, as numpy's default and statistics.quantiles(method="inclusive") compute it."""
    rng = random.Random(5)
    for n in (1, 2, 3, 10, 17):
        xs = [rng.expovariate(1.0) for _ in range(n)]
        assert [quantile(xs, q) for q in (0.0, 0.05, 0.5, 0.95, 1.0)] == pytest.approx(
            [float(np.quantile(xs, q)) for q in (0.0, 0.05, 0.5, 0.95, 1.0)])
        if n > 1:
            assert [quantile(xs, k / 100) for k in range(1, 100)] == pytest.approx(
                statistics.quantiles(xs, n=100, method="inclusive"))
    assert quantile([3.0], 0.95) == 3.0 and math.isnan(quantile([], 0.5))
    with pytest.raises(ValueError):
        quantile([1.0, 2.0], 95)  # a percent where a fraction belongs fails rather than reading past the end


def test_unset_autoscaling_fields_take_serves_own_defaults():
    """Nothing of Serve's defaults is retyped in the planner: what a config leaves out is Ray's."""
    from ray.serve.config import AutoscalingConfig

    ours, ray = Autoscaling.of({"min_replicas": 1, "max_replicas": 4}), AutoscalingConfig(min_replicas=1, max_replicas=4)
    assert (ours.target_ongoing_requests, ours.upscale_delay_s, ours.downscale_delay_s, ours.look_back_period_s) == (
        ray.target_ongoing_requests, ray.upscale_delay_s, ray.downscale_delay_s, ray.look_back_period_s)
    assert Autoscaling.of(None, 3).min_replicas == Autoscaling.of(None, 3).max_replicas == 3


def test_ditto_at_another_rtf_renders_its_look_ahead_at_that_rate_too():
    """--animator-rtf: per_audio_s becomes the RTF and fixed_s (the look-ahead audio each call
    renders before its first frame) scales with it; the other stages are untouched."""
    from capacity.inputs import l4_inputs, with_animator_rtf

    base = l4_inputs()
    slow = with_animator_rtf(base, base.costs["animator"].per_audio_s * 2)
    assert slow.costs["animator"].per_audio_s == pytest.approx(2 * base.costs["animator"].per_audio_s)
    assert slow.costs["animator"].fixed_s == pytest.approx(2 * base.costs["animator"].fixed_s)
    assert slow.costs["tts"] == base.costs["tts"] and with_animator_rtf(base, None) is base
