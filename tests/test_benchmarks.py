"""`python -m benchmarks.run` end to end on a tiny budget: its JSON is what `capacity.schema` says
(the contract with the capacity planner, which reads it through the same models) and every number
in it is finite. No timing thresholds: speed lives in its tables."""

import json
import math
import os
import statistics
import subprocess
import sys

from capacity import scenarios
from capacity.schema import BenchResult
from tests.conftest import ROOT


def numbers(value, path="$"):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def test_run_quick_writes_every_number(tmp_path):
    out = tmp_path / "bench.json"
    # jfk.flac only, one run, one session, a short long reply, no A/B: the smallest complete run.
    # Its own Ray cluster, in a subprocess, as a user runs it.
    subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--runs", "1", "--questions", "0",
         "--sessions", "1", "--long-tokens", "40", "--no-ab", "--json", str(out)],
        check=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )
    raw = json.loads(out.read_text())
    r = BenchResult.model_validate(raw)  # every field, of its type
    assert r.v2f_p50_s <= r.v2f_p95_s
    assert math.isclose(sum(r.floor_parts_s.model_dump().values()), r.floor_s, rel_tol=1e-6)  # one run: the sum
    assert r.first_sentence_first is None  # --no-ab
    (one,) = r.concurrency
    assert one.sessions == 1
    # the fields older runs lacked, which the planner falls back without: this run.py writes them all
    assert None not in (one.reply_speech_s, one.reply_sentences, one.cpu_per_turn_s, one.cpu_busy_share,
                        one.turns_detail, r.costs.tts.chunk_s)
    cpu = one.cpu_per_turn_s  # every stage worked, and the machine at least as much
    assert all(cpu[g] > 0 for g in ("ASR", "LLM", "TTS", "Animator", "Ingress")), cpu
    assert cpu["machine"] >= sum(v for g, v in cpu.items() if g != "machine") * 0.9, cpu
    turns = one.turns_detail  # each turn, for the planner: its cycle in order
    assert len(turns) == one.turns and {t.input for t in turns} == {0}
    for t in turns:
        assert 0 < t.opened_s <= t.streamed_s < t.voiced_s < t.done_s, t
        assert math.isclose(t.v2f_s, t.endpointing_s + t.asr_s + t.rest_s), t
        assert t.reply_speech_s >= t.first_sentence_speech_s > 0 and t.reply_sentences >= 1, t
        assert all(0 < a < b for a, b in t.cancelled_starts), t
    assert r.costs.workload.reply_tokens > 0 and r.long_reply_fragments > 0
    assert r.sequential_sentences >= 1 and r.inputs[0].name == "jfk.flac"
    assert [i.input for i in r.v2f_per_input] == [i.input for i in r.per_input] == ["jfk.flac"]
    bad = [(p, v) for p, v in numbers(raw) if not math.isfinite(v)]
    assert not bad, bad
    # and the planner reads it: the clip as one session lived it (a quick run fits the LLM over one
    # reply, too few for a per-token cost to simulate with: tests/test_capacity.py simulates)
    (clip,), gap = scenarios.measured_clips(r)
    assert clip.speech_s == r.inputs[0].speech_end_s and gap >= 0
    assert clip.endpointing_s == statistics.median(t.endpointing_s for t in turns)
    assert clip.reply_s == statistics.median(t.reply_speech_s for t in turns)


def test_interference_measures_a_stage_alone_and_beside_a_neighbour(tmp_path):
    """`python -m benchmarks.interference` on its smallest run (Piper, alone and beside a pure-Python loop),
    in its own processes as a user runs it: the real stage's CPU per call and load, and a finite
    ratio (the planner's side of the file: tests/test_capacity.py)."""
    out = tmp_path / "interference.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.interference", "--stages", "tts", "--neighbours", "python",
         "--seconds", "0.5", "--json", str(out)],
        check=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )
    r = json.loads(out.read_text())
    alone = r["alone"]["tts"]
    assert alone["calls"] >= 3 and alone["cpu_per_call_s"] > 0 and alone["load_cpu_s"] > alone["cpu_per_call_s"]
    assert set(r["ratio"]) == {"tts"} and set(r["ratio"]["tts"]) == {"python"}
    assert 0 < r["ratio"]["tts"]["python"] < 10
    bad = [(p, v) for p, v in numbers(r) if not math.isfinite(v)]
    assert not bad, bad


def test_an_override_that_names_another_backend_replaces_the_section():
    """`--set asr.backend=moonshine` on the shipped faster-whisper section: Moonshine's defaults, not
    faster-whisper's fields it would refuse; an override of the same backend keeps the others."""
    from backends.moonshine import Moonshine
    from benchmarks.run import bench_config

    other = bench_config({"asr": {"backend": "moonshine"}})
    assert isinstance(other.asr, Moonshine.Config) and other.asr == Moonshine.Config()
    same = bench_config({"asr": {"beam_size": 5}})
    assert same.asr.beam_size == 5 and same.asr.compute_type == "int8"
