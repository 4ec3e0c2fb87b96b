"""Where a turn's first second goes, planned: the simulated turn's milestones, in seconds after the
last voiced sample, as `benchmarks/run.py --playback-ab` measures them on this machine: end of turn
(the endpointer's decision), transcript, first token, first clause (the first sentence sent to TTS),
first TTS audio, first fragment made, first fragment received. And the client's playback with the
page's jitter buffer (`ui/player.js`, `serve_app/playback.py`: each session's next turn held by the
largest need of its last turns): underruns with and without it, and what the hold adds to voice to
face.

    .venv/bin/python -m capacity.waterfall --sessions 1 8 [--costs capacity/costs/l4.yaml] [--gpu-sharing free]
        [--animator-rtf 0.35 0.68] [--replicas asr=3,llm=2,tts=5,animator=5 --nodes avatar_media=10,avatar_llm=2]
        [--measured playback.json]

`--measured playback.json` (what `benchmarks.run --playback-ab --json` wrote) puts the measured rows
(the shipped arm) in the same table, above the planned ones, so one table shows both.

It runs the planner's simulation with `WaterfallTurn` (the model's own turn, recording when each
milestone is reached) in place of `capacity.avatar.Turn`, so the sessions, stages and costs are
exactly those `avatar-capacity simulate` plans with.
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path

from capacity import avatar
from capacity.avatar import Turn
from capacity.engine import Job
from capacity.inputs import L4_COSTS, l4_inputs, with_animator_rtf
from capacity.scenarios import l4_scenario
from capacity.sim import Scenario, Sim
from capacity.stats import quantile
from avatar_core.playback import hold_s, need, underruns

MILESTONES = [("end of turn", "utterance_end"), ("transcript", "transcript"), ("first token", "first_token"),
              ("first clause", "first_clause"), ("first TTS audio", "first_audio"),
              ("first fragment made", "first_fragment"), ("first fragment received", "sent")]


class WaterfallTurn(Turn):
    """The model's turn, noting when each milestone is reached (simulated seconds)."""

    def __init__(self, *args, **kwargs):
        self.marks: dict[str, float] = {}
        super().__init__(*args, **kwargs)

    def _mark(self, name: str, t: float | None = None) -> None:
        self.marks.setdefault(name, self.sim.loop.now if t is None else t)

    def heard(self) -> None:
        super().heard()
        if self.utterance_end is not None:  # (not while the hush's words are awaited)
            self._mark("utterance_end", self.utterance_end)

    def transcribed(self) -> None:
        """Turn.transcribed's LLM request with one more point along its work: the first token."""
        self._mark("transcript")
        self.asr_done = self.sim.loop.now
        llm = self.sim.deps["llm"]
        c = llm.cost
        single = c.tokens_at(1) if c.tokens_per_s else 1.0
        marks, cum = [(c.ttft_s + c.fixed_s, lambda: self._mark("first_token"))], 0.0
        for k, toks in enumerate(self.tokens):
            cum += toks
            marks.append((c.ttft_s + c.fixed_s + cum / single, lambda k=k: self.sentence(k)))
        self.sim.loop.after(self.cfg.hop_s + self.graph_s, llm.submit, Job(self.sim, marks))

    def sentence(self, k: int) -> None:
        if k == 0:
            self._mark("first_clause")
        super().sentence(k)

    def audio(self, k: int, a: float) -> None:
        if k == 0:
            self._mark("first_audio")
        super().audio(k, a)

    def fragment(self, length: float) -> None:
        if not self.arrivals:
            self._mark("first_fragment")
            self._mark("sent", self.sim.loop.now + self.cfg.hop_s)
        super().fragment(length)

    def playback(self) -> dict:
        out = super().playback()
        out["marks"] = {k: v - self.speech_end for k, v in self.marks.items()}
        out["arrivals"], out["durations"] = list(self.arrivals), list(self.durations)
        out["session"] = self.session
        return out


@contextmanager
def recording():
    """Sessions start `WaterfallTurn`s while inside."""
    saved = avatar.Turn
    avatar.Turn = WaterfallTurn
    try:
        yield
    finally:
        avatar.Turn = saved


def summary(results: list[dict]) -> dict:
    """Median milestones, underruns without and with the page's jitter buffer (per session, from
    its earlier turns), and voice to face without and with the hold."""
    holds, needs = [], {}
    for r in results:  # in the order the turns ended: each session's in its own order
        mine = needs.setdefault(id(r["session"]), [])
        holds.append(hold_s(mine))
        if len(r["arrivals"]) > 1:
            mine.append(need(r["arrivals"], r["durations"]))
    v2f = [r["v2f_s"] for r in results]
    played = [v + h for v, h in zip(v2f, holds)]
    return {
        "turns": len(results),
        "fragments": sum(len(r["arrivals"]) for r in results),
        "milestones_p50_s": {k: quantile([r["marks"][k] for r in results if k in r["marks"]], 0.5)
                             for _, k in MILESTONES},
        "underruns_no_buffer": sum(underruns(r["arrivals"], r["durations"], 0.0) for r in results),
        "underruns": sum(underruns(r["arrivals"], r["durations"], h) for r, h in zip(results, holds)),
        "hold_p50_s": quantile(holds, 0.5), "hold_max_s": max(holds, default=0.0),
        "v2f_p50_s": quantile(v2f, 0.5), "v2f_p95_s": quantile(v2f, 0.95),
        "played_p50_s": quantile(played, 0.5), "played_p95_s": quantile(played, 0.95),
    }


def plan(sc: Scenario, sessions: int, minutes: float = 30.0, seed: int = 1, warmup_s: float = 60.0) -> dict:
    """`sessions` people talking to the cluster of `sc` for `minutes` (as `avatar-capacity simulate`)."""
    with recording():
        sim = Sim(sc, seed=seed).closed(sessions)
        sim.run(minutes * 60, warmup_s=warmup_s)
    return summary([r for r in sim.results if r["speech_end"] >= warmup_s])


def table(rows: list[tuple[str, dict]]) -> str:
    lines = ["| what | turns | " + " | ".join(name for name, _ in MILESTONES)
             + " | underruns (fragments), no buffer / page's buffer | hold p50 / max | v2f + hold p50 / p95 |",
             "|---|---|" + "---|" * len(MILESTONES) + "---|---|---|"]
    for name, s in rows:
        m = s["milestones_p50_s"]
        lines.append(f"| {name} | {s['turns']} | " + " | ".join(f"{m[k]:.2f}" for _, k in MILESTONES)
                     + f" | {s['underruns_no_buffer']} / {s['underruns']} ({s['fragments']}) | "
                     f"{s['hold_p50_s']:.2f} / {s['hold_max_s']:.2f} | {s['played_p50_s']:.2f} / {s['played_p95_s']:.2f} |")
    return "\n".join(lines)


def measured(path: Path) -> list[tuple[str, dict]]:
    """The shipped arm's rows of a `benchmarks.run --playback-ab --json` file, as `table` rows: the
    same milestones, measured (its `waterfall_p50_s`), with the same playback columns."""
    r = json.loads(path.read_text())
    where = f"measured {r['date']} at {r['commit']}, {r['cpus']} cores"
    return [(f"{where}, {x['sessions']} session{'s' if x['sessions'] > 1 else ''} ({x['clients']})",
             x | {"milestones_p50_s": x["waterfall_p50_s"]})
            for x in r["rows"] if x["arm"] == "after"]


def counts(text: str) -> dict[str, int]:
    """'asr=3,tts=5' -> {'asr': 3, 'tts': 5}"""
    return {k.strip(): int(v) for k, v in (part.split("=") for part in text.split(",") if part)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 8])
    p.add_argument("--costs", type=Path, default=L4_COSTS)
    p.add_argument("--gpu-sharing", choices=("time-sliced", "free"), default="time-sliced")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--animator-rtf", type=float, nargs="+", default=[None],
                   help="Ditto's real-time factor (the animator's per_audio_s; its fixed_s scales with it) to plan "
                   "with instead of the costs file's, e.g. both ends of its range: 0.35 0.68")
    p.add_argument("--replicas", type=counts, default=None,
                   help="replicas per stage, fixed (as `size` answers), e.g. asr=3,llm=2,tts=5,animator=5; "
                   "default: the config's autoscaling")
    p.add_argument("--nodes", type=counts, default=None,
                   help="L4 nodes per role, all up from the start, e.g. avatar_media=10,avatar_llm=2")
    p.add_argument("--measured", type=Path, help="a `benchmarks.run --playback-ab --json` file: its shipped "
                   "arm's rows first, in the same table")
    args = p.parse_args(argv)
    rows = measured(args.measured) if args.measured else []
    for rtf in args.animator_rtf:
        inputs = with_animator_rtf(l4_inputs(args.costs), rtf)
        sc = l4_scenario(inputs, fixed=args.replicas, nodes=args.nodes, gpu_sharing=args.gpu_sharing)
        what = f"L4 plan{'' if rtf is None else f', Ditto RTF {rtf:g}'}"
        rows += [(f"{what}, {n} session{'s' if n > 1 else ''}", plan(sc, n, args.minutes, args.seed)) for n in args.sessions]
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
