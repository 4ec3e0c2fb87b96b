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


def test_measured_rows_share_the_planned_table(tmp_path, capsys):
    """--measured: the shipped arm's rows of a `benchmarks.run --playback-ab --json` file (built here
    by its own `playback_row` from two client turns) in the same table as the plan, milestone by
    milestone; the other arms' rows are left out."""
    import json
    from types import SimpleNamespace

    from benchmarks.run import playback_row
    from benchmarks.voice_to_face import Turn
    from capacity.waterfall import main

    def turn(end: float, late: float) -> Turn:
        return Turn(end, 0.0, 0.61, segments=[{"t": end + 0.61, "duration_s": 0.4, "rung": 0, "sentence": 0,
                                                "hold_s": 0.0},
                                               {"t": end + 0.61 + late, "duration_s": 0.8, "rung": 1, "sentence": 0}],
                    marks={"turn": end + 0.01, "first_token": end + 0.13, "first_clause": end + 0.33},
                    timings={"first_audio": 0.5, "first_segment": 0.58})

    turns = [turn(0.23, 0.3), turn(0.29, 0.5)]  # the second fragment late by 0.1 s in the second
    detail = [SimpleNamespace(session=0, input=k) for k in range(2)]
    rows = [playback_row(arm, 1, turns, detail) | {"clients": "listening"} for arm in ("before", "after")]
    path = tmp_path / "playback.json"
    path.write_text(json.dumps({"rows": rows, "date": "2026-12-04 17:00 UTC", "commit": "abc1234", "cpus": 2}))
    assert main(["--measured", str(path), "--sessions", "1", "--minutes", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    (mine,) = [line for line in out if line.startswith("| measured")]
    assert "2026-12-04 17:00 UTC at abc1234, 2 cores, 1 session (listening)" in mine
    cells = [c.strip() for c in mine.split("|")[1:-1]]
    # end of turn, transcript, first token, first clause, first TTS audio, first fragment made, received
    assert cells[1:9] == ["2", "0.26", "0.26", "0.39", "0.59", "0.77", "0.85", "0.87"]
    assert cells[9].startswith("1 / ")  # one underrun without the buffer
    assert any(line.startswith("| L4 plan, 1 session") for line in out)
    assert out.index(mine) < next(k for k, line in enumerate(out) if line.startswith("| L4 plan"))
