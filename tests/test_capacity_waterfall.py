"""The planner's waterfall (capacity/waterfall.py): the same simulation as the plain planner, with
each turn's milestones noted in order, and the page's jitter buffer applied per session."""

from __future__ import annotations

import pytest

from avatar_core.playback import hold_s
from capacity import avatar
from capacity.inputs import l4_inputs
from capacity.scenarios import l4_scenario
from capacity.sim import Sim
from capacity.waterfall import MILESTONES, WaterfallTurn, plan, recording, summary, underruns


@pytest.fixture(scope="module")
def scenario():
    return l4_scenario(l4_inputs(), gpu_sharing="free")


def run(sc, sessions: int, record: bool):
    sim = Sim(sc, seed=3).closed(sessions)
    if record:
        with recording():
            sim.run(600)
    else:
        sim.run(600)
    return sim.results


def test_recording_the_milestones_changes_nothing_it_plans(scenario):
    plain, noted = run(scenario, 4, record=False), run(scenario, 4, record=True)
    assert avatar.Turn is not WaterfallTurn  # put back
    assert len(plain) == len(noted) > 20
    assert [(r["v2f_s"], r["underruns"], r["fragments"]) for r in plain] == \
        [(r["v2f_s"], r["underruns"], r["fragments"]) for r in noted]


def test_each_turns_milestones_come_in_order_and_end_at_its_voice_to_face(scenario):
    for r in run(scenario, 2, record=True):
        times = [r["marks"][key] for _, key in MILESTONES]
        assert times == sorted(times), r["marks"]
        assert r["marks"]["sent"] == pytest.approx(r["v2f_s"])
        assert r["marks"]["utterance_end"] == pytest.approx(r["endpointing_s"])


def test_the_page_holds_each_sessions_turn_by_its_earlier_turns():
    session = object()
    late = {"session": session, "arrivals": [0.0, 0.9], "durations": [0.4, 1.0], "v2f_s": 1.0, "marks": {}}
    on_time = {"session": session, "arrivals": [0.0, 0.1], "durations": [0.4, 1.0], "v2f_s": 1.0, "marks": {}}
    s = summary([late, on_time, dict(late)])
    assert s["underruns_no_buffer"] == 2  # the late turns, each once
    assert s["underruns"] == 1  # the first late turn had no history; the third was held 0.5 s
    assert s["hold_max_s"] == pytest.approx(hold_s([0.5])) == pytest.approx(0.5)
    assert s["played_p95_s"] > s["v2f_p95_s"]
    assert underruns([0.0, 0.9], [0.4, 1.0], 0.5) == 0 and underruns([0.0, 0.9], [0.4, 1.0], 0.45) == 1


def test_a_plan_reports_every_milestone(scenario):
    s = plan(scenario, 1, minutes=5, warmup_s=30)
    assert s["turns"] > 5
    assert set(s["milestones_p50_s"]) == {key for _, key in MILESTONES}
    assert s["milestones_p50_s"]["sent"] == pytest.approx(s["v2f_p50_s"], abs=0.5)
    assert s["underruns"] <= s["underruns_no_buffer"]


def test_a_waterfall_can_plan_the_cluster_size_answered(capsys):
    """--replicas and --nodes: the waterfall of a sized cluster (fixed replicas, nodes up from the
    start) rather than the config's autoscaling from its minimum."""
    from capacity.waterfall import counts, main

    assert counts("asr=3,animator=5") == {"asr": 3, "animator": 5}
    assert main(["--sessions", "2", "--minutes", "3", "--replicas", "asr=1,llm=1,tts=2,animator=2",
                 "--nodes", "avatar_media=2,avatar_llm=1"]) == 0
    assert "L4 plan, 2 sessions" in capsys.readouterr().out
