"""Playback that does not stutter: the quality ladder's decisions (deployments/ladder.py), the client's
clock as the ingress keeps it (serve_app/playback.py), what each rung renders and encodes, and one
turn through the graph whose fragments say which rung made them."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from avatar_core.media import decode_audio, held, mux_segment
from avatar_core.playback import MAX_HOLD_S, hold_s, need
from avatar_core.types import Speech
from deployments.ladder import Cost, Ladder
from serve_app.metrics import TurnCounts
from serve_app.playback import SessionPlayback, TurnPlayback
from tests.segments import decode_segment

ROOT = Path(__file__).resolve().parents[1]
JFK = ROOT / "assets" / "media" / "jfk.flac"
ASTRONAUT = ROOT / "assets" / "avatars" / "astronaut.png"

# seconds for a fragment of 1 s of speech at load 1: 0.11, 0.06, 0.04, 0.02
COSTS = [Cost(0.01, 0.10), Cost(0.01, 0.05), Cost(0.01, 0.03), Cost(0.01, 0.01)]


# ---- the ladder's decisions ---------------------------------------------------------------------

def test_without_a_deadline_the_session_keeps_its_rung():
    ladder = Ladder(COSTS)
    assert [ladder.choose(rung, 1.0, None) for rung in range(4)] == [0, 1, 2, 3]


def test_with_time_to_spare_the_best_rung_stays():
    assert Ladder(COSTS).choose(0, 1.0, 0.5) == 0


def test_it_steps_down_to_the_best_rung_that_still_meets_the_deadline():
    ladder = Ladder(COSTS)  # margin 0.1 s
    assert ladder.choose(0, 1.0, 0.17) == 1  # 0.07 s to spend: rung 0 needs 0.11, rung 1 0.06
    assert ladder.choose(0, 1.0, 0.145) == 2  # 0.045: rung 2 needs 0.04
    assert ladder.choose(1, 1.0, 0.13) == 3  # 0.03: only the last, 0.02
    assert ladder.choose(0, 0.4, 0.17) == 0  # a short fragment fits where a long one would not


def test_when_no_rung_meets_the_deadline_it_takes_the_cheapest():
    ladder = Ladder(COSTS)
    assert ladder.choose(0, 1.0, 0.11) == 3
    assert ladder.choose(0, 1.0, -2.0) == 3  # already late


def test_it_steps_back_up_one_rung_at_a_time_with_headroom():
    ladder = Ladder(COSTS)  # headroom 0.5
    assert ladder.choose(3, 1.0, 0.181) == 2  # rung 2 needs 0.04, half of the 0.081 s to spend
    assert ladder.choose(3, 1.0, 100.0) == 2  # one step per fragment, however much time
    assert ladder.choose(1, 1.0, 0.321) == 0


def test_without_headroom_it_does_not_step_up():
    ladder = Ladder(COSTS)
    assert ladder.choose(3, 1.0, 0.17) == 3  # 0.04 would fit in 0.07, but not in half of it
    assert ladder.choose(1, 1.0, 0.31) == 1


def test_the_load_factor_moves_the_decision():
    ladder = Ladder(COSTS, smoothing=1.0)  # the newest fragment alone sets the load
    assert ladder.choose(0, 1.0, 0.3) == 0
    ladder.observe(0, 1.0, 0.22)  # twice what rung 0 costs an idle replica
    assert ladder.load == pytest.approx(2.0)
    assert ladder.predict(0, 1.0) == pytest.approx(0.22)
    assert ladder.choose(0, 1.0, 0.3) == 1  # 0.2 s to spend: 0.22 misses, 0.12 makes it
    ladder.observe(1, 1.0, 0.03)  # the machine is quiet again
    assert ladder.choose(1, 1.0, 0.3) == 0
    assert ladder.snapshot()["rungs"][0]["fragments"] == 1


def test_a_lower_rung_never_looks_slower_than_the_one_above():
    ladder = Ladder([Cost(0.01, 0.05), Cost(0.02, 0.08), Cost(0.005, 0.01)])
    assert ladder.costs == [Cost(0.01, 0.05), Cost(0.01, 0.05), Cost(0.005, 0.01)]


def test_a_rung_out_of_range_is_clamped():
    ladder = Ladder(COSTS)
    assert ladder.choose(9, 1.0, None) == 3 and ladder.choose(-1, 1.0, None) == 0
    assert Ladder([Cost(0.0, 0.0)]).choose(0, 1.0, -5.0) == 0  # one rung: nowhere to go


# ---- the client's clock, kept by the ingress ------------------------------------------------------

def test_a_turn_whose_fragments_come_in_time_needs_no_buffer():
    assert need([0.0, 0.3, 1.2], [0.4, 1.0, 1.0]) == 0.0
    assert need([5.0], [0.4]) == 0.0


def test_a_turns_need_is_how_late_its_latest_fragment_came():
    # the second is due 0.4 s after the first arrived and comes at 0.6; the third is early
    assert need([0.0, 0.6, 1.3], [0.4, 1.0, 1.0]) == pytest.approx(0.2)
    assert need([0.0, 0.41], [0.4, 1.0]) == 0.0  # 10 ms: a timer tick, not lateness


def test_a_listening_benchmark_client_waits_until_its_page_has_played_the_reply():
    """benchmarks/run.py's listening clients speak again once the reply has played: the fragments
    back to back from the first's arrival plus the page's hold, stalls included, counted from `done`."""
    from benchmarks.voice_to_face import Turn

    # fragments at 1.0 s (0.4 s long) and 1.2 s (1.0 s) after the last voiced sample; done at 1.3 s
    turn = Turn(0.3, 0.0, 0.7, segments=[{"t": 1.0, "duration_s": 0.4}, {"t": 1.2, "duration_s": 1.0}],
                voiced_s=2.0, done_s=3.3)
    assert turn.still_playing_s() == pytest.approx(2.4 - 1.3)
    assert turn.still_playing_s(hold_s=0.5) == pytest.approx(2.9 - 1.3)
    late = Turn(0.3, 0.0, 0.7, segments=[{"t": 1.0, "duration_s": 0.4}, {"t": 2.0, "duration_s": 1.0}],
                voiced_s=2.0, done_s=4.1)
    assert late.still_playing_s() == pytest.approx(3.0 - 2.1)  # the stall pushes the end back
    assert Turn(0.3, 0.0, 0.7, voiced_s=2.0, done_s=3.0).still_playing_s() == 0.0  # nothing to play
    assert turn.still_playing_s() > Turn(0.3, 0.0, 0.7, segments=turn.segments, voiced_s=2.0,
                                         done_s=5.0).still_playing_s() == 0.0  # played out before done


def test_the_jitter_buffer_follows_the_last_turns_needs():
    assert hold_s([]) == 0.0
    assert hold_s([0.2, 0.0]) == pytest.approx(0.2)
    assert hold_s([0.21]) == pytest.approx(0.25)  # rounded up to 50 ms
    assert hold_s([3.0]) == MAX_HOLD_S
    assert hold_s([0.9, 0.0, 0.0, 0.0, 0.0, 0.0]) == 0.0  # five turns in time: forgotten


def test_the_turn_keeps_the_clients_clock_and_counts_steps():
    now = [100.0]
    session, counts = SessionPlayback(), TurnCounts()
    turn = TurnPlayback(session, counts, clock=lambda: now[0])
    assert turn.deadline() is None  # nothing plays yet
    turn.sent(0.4, 0)
    assert turn.deadline() == pytest.approx(100.4)
    now[0] = 100.3
    turn.sent(1.0, 1)  # in time, a rung lower
    assert turn.deadline() == pytest.approx(101.4) and turn.rung == 1
    now[0] = 101.6
    turn.sent(1.0, 1)  # 0.2 s after the client ran out: it stalled, and plays on from now
    assert turn.underruns == 1 and turn.deadline() == pytest.approx(102.6)
    now[0] = 102.0
    turn.sent(1.0, 0)  # back up
    assert counts.snapshot()["step_down"] == 1 and counts.snapshot()["step_up"] == 1
    turn.close()
    assert list(session.needs) == [pytest.approx(0.2)]  # the stall
    assert session.rung == 0


def test_the_session_carries_its_rung_into_the_next_turn():
    session, counts = SessionPlayback(), TurnCounts()
    first = TurnPlayback(session, counts, clock=lambda: 0.0)
    first.sent(0.4, 2)
    first.close()
    second = TurnPlayback(session, counts, clock=lambda: 9.0)
    assert second.rung == 2
    second.sent(0.4, 2)
    assert counts.snapshot()["step_down"] == 1  # 0 -> 2 once, not again in the next turn


def test_the_client_holds_a_late_sessions_next_turn_and_its_first_fragment_grows():
    session, counts = SessionPlayback(), TurnCounts()
    session.needs.extend([0.0, 0.3])
    now = [50.0]
    turn = TurnPlayback(session, counts, clock=lambda: now[0])
    assert turn.hold_s == pytest.approx(0.3)
    assert turn.first_fragment_s(0.4, 1.0) == pytest.approx(0.4)  # already as long as the hold
    turn.sent(0.4, 0)
    assert turn.deadline() == pytest.approx(50.7)  # held 0.3 s, then 0.4 s of video
    session.needs.append(0.8)
    later = TurnPlayback(session, counts)
    assert later.hold_s == pytest.approx(0.8) and later.first_fragment_s(0.4, 1.0) == pytest.approx(0.8)
    session.needs.append(5.0)
    assert TurnPlayback(session, counts).first_fragment_s(0.4, 1.0) == 1.0  # never past a fragment
    assert TurnPlayback(SessionPlayback(), counts).first_fragment_s(0.4, 1.0) == 0.4


def test_a_new_session_on_a_replica_whose_turns_came_late_is_held_too():
    from collections import deque

    replica, counts = deque(maxlen=5), TurnCounts()
    busy, fresh, elsewhere = SessionPlayback(replica), SessionPlayback(replica), SessionPlayback()
    now = [0.0]
    turn = TurnPlayback(busy, counts, clock=lambda: now[0])
    turn.sent(0.4, 0)
    now[0] = 1.0  # 0.6 s after the first had finished
    turn.sent(1.0, 0)
    turn.close()
    assert list(busy.needs) == [pytest.approx(0.6)] and list(fresh.needs) == []
    assert busy.hold_s == fresh.hold_s == pytest.approx(0.6)  # this replica has been late
    assert elsewhere.hold_s == 0.0  # another replica's history is its own


def test_the_page_computes_the_same_buffer_as_the_server():
    """ui/player.js's need and holdFor, run by Node, against serve_app/playback.py on the same
    arrivals."""
    import json
    import shutil
    import subprocess

    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    rng = np.random.default_rng(1)
    turns = []
    for _ in range(40):
        n = int(rng.integers(1, 8))
        durations = [0.4] + [float(d) for d in rng.uniform(0.2, 1.0, n - 1)]
        gaps = rng.uniform(0.0, 1.3, n)
        gaps[0] = 0.0
        turns.append({"arrivals": [float(t) for t in 10.0 + np.cumsum(gaps)], "durations": durations})
    script = (f"import {{ need, holdFor }} from '{ROOT / 'ui' / 'player.js'}';\n"
              f"const turns = {json.dumps(turns)}; const needs = []; const out = [];\n"
              "for (const t of turns) { out.push([need(t.arrivals, t.durations), holdFor(needs)]); "
              "needs.push(need(t.arrivals, t.durations)); }\n"
              "console.log(JSON.stringify(out));")
    run = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    page, needs, server = json.loads(run.stdout), [], []
    for t in turns:
        server.append([need(t["arrivals"], t["durations"]), hold_s(needs)])
        needs.append(server[-1][0])
    assert np.allclose(page, server, atol=1e-9)
    assert any(h > 0 for _, h in server) and any(h == 0 for _, h in server)


# ---- what a rung renders and encodes ---------------------------------------------------------------

def test_a_held_rung_encodes_fewer_frames_on_the_same_timeline():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (11, 64, 64, 3), np.uint8)
    frames = cv2.GaussianBlur(frames.reshape(11 * 64, 64, 3), (9, 9), 3).reshape(11, 64, 64, 3)
    audio = (0.2 * np.sin(np.arange(11 * 640) / 10)).astype(np.float32)
    full = decode_segment(mux_segment(frames, audio, 16_000, crf=10).data)
    low = decode_segment(mux_segment(frames, audio, 16_000, crf=10, hold=3).data)
    assert held(11, 3) == [0, 3, 6, 9, 10]
    assert len(full.frames) == 11 and len(low.frames) == 5
    assert full.video_s == pytest.approx(0.44) and low.video_s == pytest.approx(0.44)
    assert low.same_length_within_a_frame()
    for decoded, i in zip(low.frames, held(11, 3)):  # each encoded frame is the one it holds
        errors = [np.abs(decoded.astype(int) - f).mean() for f in frames]
        assert int(np.argmin(errors)) == i


def test_a_lower_rung_renders_the_same_face_smaller_and_held():
    from backends.procedural import Procedural
    from backends.procedural.backend import ProceduralRung

    async def frames_at(backend, avatar, rung, audio):
        low = await backend.at_rung(avatar, rung)
        out = [f async for f, _ in backend.render(low, audio, backend.new_state())]
        return np.concatenate(out)

    async def main():
        backend = Procedural(Procedural.Config())
        avatar = await backend.prepare_avatar(cv2.cvtColor(cv2.imread(str(ASTRONAUT)), cv2.COLOR_BGR2RGB))
        audio = decode_audio(JFK.read_bytes(), 60)[16_000 : 16_000 + 640 * 12]
        top = await frames_at(backend, avatar, ProceduralRung(), audio)
        low = await frames_at(backend, avatar, ProceduralRung(hold=3, scale=0.5), audio)
        return top, low

    top, low = asyncio.run(main())
    assert top.shape == (12, 512, 512, 3) and low.shape == (12, 256, 256, 3)
    for i in range(12):  # frames 1, 2 hold frame 0; 4, 5 hold 3; ...; the last is its own
        shown = max(k for k in held(12, 3) if k <= i)
        assert np.array_equal(low[i], low[shown])
    assert not np.array_equal(low[0], low[3])  # the mouth moved with the speech
    for i in held(12, 3):  # the same face, at half the size
        small = cv2.resize(top[i], (256, 256), interpolation=cv2.INTER_AREA)
        assert np.abs(small.astype(int) - low[i]).mean() < 4.0


def test_the_animator_makes_late_fragments_on_its_cheapest_rung():
    """The Animator deployment's class in this process (no Serve): its ladder measured at start,
    a deadline long gone, and one far ahead."""
    from avatar_core.config import AppConfig
    from deployments.animator import Animator

    async def main():
        cfg = AppConfig.model_validate({}).animator
        cls = Animator.func_or_class
        animator = cls.__new__(cls)
        await cls.__init__(animator, cfg)
        pcm = decode_audio(JFK.read_bytes(), 60)[16_000 : 16_000 * 4]
        late = [f async for f in animator.animate(Speech(pcm, 16_000), None, "default", 0.4, 1.0, time.time() - 30, 0)]
        ahead = [f async for f in animator.animate(Speech(pcm, 16_000), None, "default", 0.4, 1.0, time.time() + 300, 0)]
        return animator, late, ahead

    animator, late, ahead = asyncio.run(main())
    last = len(animator.rungs) - 1
    assert [f.rung for f in late] == [last] * len(late) and [f.rung for f in ahead] == [0] * len(ahead)
    assert [f.duration_s for f in late] == [f.duration_s for f in ahead] == [0.4, 1.0, 1.0, 0.6]
    cheapest = animator.rungs[last]
    for f in late:
        decoded = decode_segment(f.data)
        assert decoded.frames[0].shape == (256, 256, 3)  # the last rung's size
        assert len(decoded.frames) == len(held(round(f.duration_s * 25), cheapest.hold))
        assert decoded.video_s == pytest.approx(f.duration_s) and decoded.same_length_within_a_frame()
    stats = animator.ladder_stats()
    assert stats["names"] == [r.name for r in animator.rungs]
    assert stats["rungs"][last]["fragments"] >= 4 and stats["rungs"][0]["fragments"] >= 4
    costs = [r["per_s"] for r in stats["rungs"]]
    assert costs == sorted(costs, reverse=True) and costs[-1] < costs[0]


RUNG_COSTS = """
import asyncio, json, sys
sys.path.insert(0, {root!r})
from avatar_core.config import AppConfig
from deployments.animator import Animator
cls = Animator.func_or_class
animator = cls.__new__(cls)
asyncio.run(cls.__init__(animator, AppConfig.model_validate({{}}).animator))
print(json.dumps([r["fixed_s"] + r["per_s"] for r in animator.ladder_stats()["rungs"]]))
"""


def test_a_replica_given_half_the_time_measures_what_it_would_alone():
    """Autoscaling starts replicas while the machine is busy. An Animator replica's process measures
    its rungs (a 1 s fragment at each) alone, then stopped for 20 ms of every 40 (SIGSTOP and
    SIGCONT), as a core shared with a busy neighbour leaves it half the wall time: the costs it
    measures must be its own (as wall time, they came out about twice as high). The pause is a
    signal, not a neighbour spinning on the same core, because a neighbour also evicts the replica's
    caches, which raised its CPU time by 1.3-2.5x from one machine to the next."""
    import json
    import signal
    import subprocess
    import sys
    import threading

    def costs(halved: bool) -> list[float]:
        proc = subprocess.Popen([sys.executable, "-c", RUNG_COSTS.format(root=str(ROOT))],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        done = threading.Event()

        def halve() -> None:
            while not done.wait(0.02):
                proc.send_signal(signal.SIGSTOP)
                time.sleep(0.02)
                proc.send_signal(signal.SIGCONT)

        pauser = threading.Thread(target=halve, daemon=True)
        if halved:
            pauser.start()
        try:
            out, err = proc.communicate(timeout=600)
        finally:
            done.set()
            if halved:
                pauser.join()
            proc.kill()  # a no-op once it has exited; never left stopped or running
        assert proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])

    alone, halved = costs(False), costs(True)
    assert all(c > 0 for c in alone + halved) and halved[0] == max(halved), (alone, halved)
    assert sum(halved) < 1.5 * sum(alone), (alone, halved)


# ---- a turn through the graph --------------------------------------------------------------------

def test_a_turns_fragments_say_which_rung_made_them(serve_app, jfk_bytes):
    """An animator whose best rung (x264's veryslow preset) cannot keep up with real time, and a
    cheap one below it: the turn's first fragment (no deadline yet) is made on the best, the next one
    that would miss its deadline a rung lower, and the ingress counts every step."""
    from ray import serve

    from deployments.animator import Animator
    from serve_app.builder import stage_app
    from tests.conftest import STORAGE, app_config, second_app
    from tests.test_turn import post_turn

    cfg = app_config()
    animator = {"backend": "procedural", "ladder": [{"name": "slow", "preset": "veryslow"},
                                                    {"name": "fast", "hold": 2, "scale": 0.5}]}
    cfg = cfg.model_copy(update={"animator": type(cfg.animator).model_validate(animator)})
    own = {"animator": stage_app(Animator, "animator", cfg.animator, str(STORAGE))}
    base = second_app(serve_app, "ladder", cfg, own=own)
    try:
        before = httpx.get(f"{base}/api/v1/stats", timeout=30).json()["turns"]
        events, _ = post_turn(base, jfk_bytes)
        after = httpx.get(f"{base}/api/v1/stats", timeout=30).json()["turns"]
        segments = [e for e in events if e["type"] == "segment"]
        rungs = [s["rung"] for s in segments]
        assert len(segments) >= 2 and rungs[0] == 0 and 1 in rungs, rungs
        assert segments[0]["hold_s"] >= 0.0 and all("hold_s" not in s for s in segments[1:])  # the turn's first
        for segment in segments:
            decoded = decode_segment(httpx.get(f"{base}{segment['url']}", timeout=30).content)
            side = 512 if segment["rung"] == 0 else 256
            assert decoded.frames[0].shape == (side, side, 3), segment
            assert decoded.video_s == pytest.approx(segment["duration_s"])
        steps = list(zip([0] + rungs, rungs))
        assert after["step_down"] - before["step_down"] == sum(b > a for a, b in steps) >= 1
        assert after["step_up"] - before["step_up"] == sum(b < a for a, b in steps)
    finally:
        serve.delete("ladder")


def test_a_long_sentence_after_a_short_one_reaches_tts_in_growing_pieces(serve_app, jfk_bytes):
    """The seam between sentences: TTS speaks a piece once it is written, and whole, so a long
    sentence after a short one would come after the short one had played. The turn cuts a later
    piece at a clause boundary once it is as long as the reply before it (`tts.piece_growth`). An
    echo LLM answers "Okay." and a long sentence ending in what it heard: with the shipped growth
    the long one reaches TTS as two pieces, each spoken and animated in order; as before (null),
    whole."""
    from ray import serve

    from deployments.llm import LLM
    from serve_app.builder import stage_app
    from serve_app.sentences import SentenceSplitter
    from tests.conftest import JFK_WORDS, app_config, second_app
    from tests.test_seam import EchoChat
    from tests.test_turn import post_turn

    prefix = "Okay. I heard you, and I will say it again, word for word:"
    cfg = app_config().model_copy(update={"llm": EchoChat.Config(prefix=prefix)})
    assert cfg.tts.piece_growth == 1.0  # the shipped rule
    base = second_app(serve_app, "pieces", cfg, own={"llm": stage_app(LLM, "llm", cfg.llm)})
    try:
        events, _ = post_turn(base, jfk_bytes)
        assert events[-1]["type"] == "done", events[-1]
        reply = "".join(e["text"] for e in events if e["type"] == "reply")
        segments = [e for e in events if e["type"] == "segment"]
        sentences = sorted({s["sentence"] for s in segments})
        texts = [next(s["text"] for s in segments if s["sentence"] == k) for k in sentences]
        whole = SentenceSplitter(growth=None)
        assert len(whole.push(reply) + whole.flush()) == 2, reply  # "Okay." and the long sentence
        assert texts[:2] == ["Okay.", "I heard you, and I will say it again,"], texts
        assert len(texts) == 3 and JFK_WORDS in texts[2].lower().replace(",", ""), texts
        assert " ".join(texts) == reply.strip()
        assert [s["sentence"] for s in segments if s["last"]] == sentences == [0, 1, 2]  # each spoken, in order
    finally:
        serve.delete("pieces")
