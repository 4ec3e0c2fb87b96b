"""`python -m benchmarks.conversation --quick` on two items in Piper's voice (and jfk.flac): what it
writes is what it measured. No timing thresholds: speed lives in its tables (docs/benchmarks.md)."""

import json
import math
import os
import re
import subprocess
import sys

from benchmarks.asr_models import edit_distance
from benchmarks.conversation import words
from benchmarks.conversation import load_items  # noqa: E402
from tests.conftest import ROOT


def test_quick_run_hears_answers_and_times_each_item(tmp_path):
    out = tmp_path / "conversation.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.conversation", "--quick", "--items", "capital-france", "my-name",
         "--voices", "piper", "--json", str(out)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, check=True,
    )
    r = json.loads(out.read_text())
    items = {i.id: i for i in load_items()}
    rows = {(x["item"], x["voice"]): x for x in r["rows"]}
    assert set(rows) == {("capital-france", "piper"), ("my-name", "piper"), ("jfk", "jfk.flac")}

    for (item, voice), x in rows.items():
        # hearing: the errors counted are those between what was said and what was heard
        assert x["words"] == len(words(x["said"])) and x["errors"] >= 0
        if voice == "piper":  # tiny.en hears the embedded voice exactly (docs/benchmarks.md, ASR models)
            assert words(x["heard"]) == words(items[item].say) and x["errors"] == 0, x
        # answering: a reply, judged by the item's own expression
        assert x["reply"].strip() and x["reply_words"] == len(x["reply"].split())
        expect = items[item].expect if item in items else None
        assert x["on_point"] == (None if expect is None else bool(re.search(expect, x["reply"], re.I)))
        assert 0 < x["first_token_s"] <= x["first_sentence_s"] <= x["reply_s"]

    # end of turn: each item had a pause inserted, jfk.flac has its own; one true end per clip and way of asking
    eot = r["end_of_turn"]
    names = {"silence timer", "Smart Turn", "Smart Turn + words"}
    for key in ("at_300ms", "at_5pct", "shipped"):
        assert {s["detector"] for s in eot[key]} == names
    shipped = {s["detector"]: s for s in eot["shipped"]}
    assert all(s["ends"] == 3 and s["mid_pauses"] >= 5 for s in shipped.values()), shipped  # jfk: 3 pauses
    for s in eot["shipped"] + eot["at_300ms"]:
        assert 0 <= s["cut_offs"] <= s["mid_pauses"] and s["cut_off_rate"] == s["cut_offs"] / s["mid_pauses"]
        assert s["delay_mean_s"] > 0
    pauses = r["pauses"]
    assert {p["clip"] for p in pauses} == {0, 1, 2} and sum(p["final"] for p in pauses) == 6  # 3 clips, 2 ways
    jfk_final = [p for p in pauses if p["clip"] == 2 and p["final"]]
    assert all("ask what you can do for your country" in " ".join(words(p["heard"])) for p in jfk_final)

    # voice to face: one turn over the real WebSocket session, its parts adding up
    (timed,) = [x["v2f"] for x in r["rows"] if "v2f" in x]
    assert "error" not in timed, timed
    assert math.isclose(timed["v2f_s"], timed["endpointing_s"] + timed["asr_s"] + timed["rest_s"])
    # heard from the speech up to the hush (0.1 s of silence), not from the whole clip as above:
    # tiny.en has once taken "France" there for "friends", so one word may differ, not more
    assert edit_distance(words(items["capital-france"].say), words(timed["heard"])) <= 1, timed["heard"]

    # the tables printed: one line per voice and per item
    assert "| piper | 2 | 0.0 % |" in run.stdout and "| capital-france |" in run.stdout and "| jfk |" in run.stdout
