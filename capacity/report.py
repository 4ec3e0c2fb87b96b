"""The planner's markdown tables, from the rows `capacity.validation` and `capacity.planning` return
(the numbers are computed there; here they are only formatted)."""

from __future__ import annotations

from capacity.inputs import NAMES
from capacity.front_door import FrontDoorSize
from capacity.planning import AutoscaleRow, Busy, SizeRow, Sizing, underrun_share
from capacity.schema import BenchResult
from capacity.sim import STAGES, Report, Scenario
from capacity.validation import AIM, Validation, ValidationRow, worst_error


def line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table; with no rows, its header (rows printed as they come follow it)."""
    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(r) for r in rows])


# ---- simulate -----------------------------------------------------------------------------------

RUN_HEADER = ["run", "turns", "v2f p50 s", "v2f p95 s", "underruns/fragments", "utilisation asr/llm/tts/anim",
              "peak replicas", "peak nodes media + llm"]


def run_cells(label: str, r: Report) -> list[str]:
    return [label, str(r.turns), f"{r.v2f_p50_s:.2f}", f"{r.v2f_p95_s:.2f}", f"{r.underruns}/{r.fragments}",
            " / ".join(f"{r.utilisation[s]:.2f}" for s in STAGES), " / ".join(str(r.replicas_peak[s]) for s in STAGES),
            " + ".join(f"{v}" for v in r.nodes_peak.values())]


def simulation(label: str, r: Report, sc: Scenario) -> str:
    out = table(RUN_HEADER, [run_cells(label, r)])
    if r.rejected:
        out += f"\n\n{r.rejected} turns refused by admission (max_turns {sc.turn.max_turns})"
    return out


# ---- validate -----------------------------------------------------------------------------------

VALIDATION_HEADER = ["sessions", "turns measured", "measured p50", "simulated p50", "error", "measured p95",
                     "simulated p95", "error", "turns/min measured", "simulated"]


def validation_cells(r: ValidationRow) -> list[str]:
    interval = f" ({r.p95_interval[0]:.2f}–{r.p95_interval[1]:.2f})" if r.p95_interval else ""
    return [str(r.sessions), str(r.turns), f"{r.measured_p50_s:.2f}", f"{r.simulated_p50_s:.2f}",
            f"{r.error_p50:+.0f} %", f"{r.measured_p95_s:.2f}{interval}", f"{r.simulated_p95_s:.2f}",
            f"{r.error_p95:+.0f} %", f"{r.measured_turns_per_min:.1f}", f"{r.simulated_turns_per_min:.1f}"]


def validation_table(rows: list[ValidationRow]) -> str:
    return table(VALIDATION_HEADER, [validation_cells(r) for r in rows])


def within(rows: list[ValidationRow]) -> str:
    worst = worst_error(rows)
    return f"worst error {worst:.0f} % ({'within' if worst <= AIM else 'outside'} {AIM} %)"


def clips_modelled(sc: Scenario) -> str:
    """The clips as the model takes them from run.py, and the CPU it runs beside them."""
    w, out = sc.workload, []
    if w.clips:
        out.append(f"Clips in run.py's order ({'measured per clip' if w.clips[0].reply_s else 'endpointing per clip'}), "
                   f"the client's gap between turns {w.gap_s:.2f} s, calls varying by {sc.jitter:.0%} (lognormal):\n")
        rows = []
        for c in w.clips:
            reply = f"{c.reply_s:.1f}, {c.sentences}, {c.first_sentence_s:.1f}" if c.reply_s else "the median"
            early = ", ".join(f"{a:.2f}–{b:.2f}" for a, b in c.early) or "none"
            rows.append([f"{c.speech_s:.2f}", f"{c.endpointing_s:.2f}", reply, early, f"{c.graph_s:.2f}"])
        out.append(table(["speech (s)", "endpointing (s)", "reply (s of speech, sentences, first)",
                          "early starts (s into the clip)", "graph beyond the stage calls (s)"], rows) + "\n")
    if sc.overhead is not None:
        o = sc.overhead
        out.append(f"CPU per turn outside the modelled stage calls (one session, measured): {o.fixed_s * o.demand:.2f} s, "
                   f"modelled as {o.demand:.2f} cores over {o.fixed_s:.1f} s from the first word\n")
    return "\n".join(out)


def validation(v: Validation, bench: BenchResult, path: str, seeds: int) -> str:
    m = bench.machine
    out = [f"Simulated against measured (`{path}`, {m.date}, commit {m.commit}):\n", validation_table(v.rows),
           f"\n{within(v.rows)}; simulated: {seeds} seeds pooled; in brackets, where run.py kept each turn, the "
           "measured p95's 90 % bootstrap interval (how far another run of as many turns could put it)"]
    if v.clips:
        out += ["\nOne session, per clip: voice to face measured (median) against simulated, and run.py's in-process "
                "floor (its stage calls one at a time) plus the clip's endpointing wait, against the model's:\n",
                table(["clip", "speech (s)", "measured", "simulated", "floor + endpointing, measured", "model's"],
                      [[c.name, f"{c.speech_s:.2f}", f"{c.measured_s:.2f}", f"{c.simulated_s:.2f}",
                        f"{c.floor_measured_s:.2f}", f"{c.floor_model_s:.2f}"] for c in v.clips])]
    out += ["\nSimulated: busy share of replica time, and peak replicas:\n",
            table(["sessions", *STAGES], [[str(r.sessions)] + [f"{r.utilisation[s]:.2f}, {r.peak_replicas[s]}"
                                                               for s in STAGES] for r in v.stages])]
    if v.cpu is not None:
        cols = [*STAGES, "overhead", "all"]
        out += ["\nCPU seconds per turn, measured / simulated (the overhead: everything else we run, "
                "against the ingress, proxy, Ray and clients measured):\n",
                table(["sessions", *(NAMES[s] for s in STAGES), "overhead", "all"],
                      [[str(r.sessions)] + [f"{r.measured[c]:.2f} / {r.simulated[c]:.2f}" for c in cols] for r in v.cpu])]
    return "\n".join(out)


def pooled(rows: list[ValidationRow], benches: list[BenchResult], seeds: int) -> str:
    runs = ", ".join(f"{b.machine.date} ({b.machine.commit})" for b in benches)
    return "\n".join([f"Simulated against measured, {len(benches)} runs pooled: {runs}\n", validation_table(rows),
                      f"\n{within(rows)}; simulated: {seeds} seeds per run; in brackets, the measured p95's 90 % "
                      "bootstrap interval"])


# ---- size ---------------------------------------------------------------------------------------

SIZE_HEADER = ["sessions", "replicas asr/llm/tts/anim", "media L4", "LLM L4", "v2f p50 s", "v2f p95 s",
               "underruns/fragments", "utilisation asr/llm/tts/anim", "front door: Ingress replicas, CPU nodes (limit)",
               "sessions per L4"]


def size_intro(p95: float, minutes: float, gpu_sharing: str, how: Sizing | None = None) -> str:
    how = how or Sizing()
    bound = "any" if how.underruns is None else f"at most {how.underruns:.1%} of fragments"
    front = (f"front door: `{how.front.name}` ({how.front.message_ms} ms messages, "
             f"+{how.front.latency_s * 1000:.0f} ms to voice to face)" if how.front else "front door left out")
    return (f"Fewest L4 nodes for voice-to-face p95 <= {p95} s and underruns {bound} (replicas fixed, added "
            f"one at a time to a stage and/or a media node added, whichever comes closest to the target with the "
            f"fewest nodes; {minutes:g} simulated minutes each, GPU sharing: {gpu_sharing}; {hold(how.hold_s)}; "
            f"{front}):\n\n" + table(SIZE_HEADER, []))


def hold(hold_s: float | None) -> str:
    if hold_s is None:
        return "an adaptive jitter buffer (the largest need of the last 5 turns, at most 1 s)"
    return "speech shown from the first fragment" if hold_s == 0 else f"speech shown {hold_s:g} s after the first fragment"


def front_cells(f: FrontDoorSize | None) -> str:
    if f is None:
        return "-"
    return f"{f.replicas}, {f.nodes} ({f.limit}, {f.node_sessions} a node){'' if f.within_config else ' over config'}"


def size_row(row: SizeRow) -> str:
    r = row.report
    return line([str(row.sessions), "/".join(str(row.replicas[s]) for s in STAGES),
                 str(row.nodes.get("avatar_media", 0)), str(row.nodes.get("avatar_llm", 0)), f"{r.v2f_p50_s:.2f}",
                 f"{r.v2f_p95_s:.2f}{'' if row.met else ' (missed)'}",
                 f"{r.underruns}/{r.fragments} ({underrun_share(r):.1%})",
                 " / ".join(f"{r.utilisation[s]:.2f}" for s in STAGES), front_cells(row.front),
                 f"{row.sessions_per_l4:.2f}"])


def best_size(best: SizeRow, p95: float) -> str:
    front = f" and {best.front.nodes} CPU front nodes" if best.front else ""
    return (f"\nbest: {best.sessions} sessions on {best.l4s} L4s{front} = {best.sessions_per_l4:.2f} "
            f"sessions per L4 at p95 <= {p95} s, underruns {underrun_share(best.report):.1%}")


def no_size(p95: float) -> str:
    return f"\nno number of sessions met p95 <= {p95} s with underruns within the bound"


# ---- autoscale ----------------------------------------------------------------------------------

AUTOSCALE_HEADER = ["upscale_delay_s", "downscale_delay_s", "target_ongoing asr,tts / animator / llm", "v2f p50 s",
                    "v2f p95 s", "refused turns", "underruns", "L4 node-hours", "peak replicas asr/llm/tts/anim",
                    "peak nodes per type", "front door at the peak"]


def autoscale_intro(busy: Busy, node_start_s: float) -> str:
    return (f"Autoscaling settings over a busy period ({busy.minutes:g} simulated minutes: quiet, a ramp to "
            f"{busy.peak} sessions at once, an hour at the peak, quiet; new L4 nodes take "
            f"{node_start_s:.0f} s; GPU sharing: {busy.gpu_sharing}; admission max_turns "
            f"{busy.max_turns or 'as configured'}; means over {len(busy.seeds)} seeds), p95 target {busy.p95} s, "
            f"underruns {'any' if busy.underruns is None else f'at most {busy.underruns:.1%}'}"
            f", {hold(busy.hold_s)}"
            f"{f', front door `{busy.front.name}`' if busy.front else ''}:\n\n"
            + table(AUTOSCALE_HEADER, []))


def autoscale_row(r: AutoscaleRow) -> str:
    single, anim, llm = r.targets
    return line([f"{r.upscale_delay_s:g}", f"{r.downscale_delay_s:g}", f"{single:g} / {anim:g} / {llm:g}",
                 f"{r.v2f_p50_s:.2f}", f"{r.v2f_p95_s:.2f}", f"{r.refused:.0f}", f"{r.underrun_share:.1%}",
                 f"{r.node_hours:.1f}", "/".join(str(r.peak_replicas[s]) for s in STAGES),
                 " + ".join(str(v) for v in r.peak_nodes), front_cells(r.front)])


def autoscale_choice(rows: list[AutoscaleRow], chosen: AutoscaleRow | None) -> str:
    if chosen:
        t = chosen.targets
        return (f"\nchosen (fewest node-hours meeting the target, within 2 %, then the lowest p95): "
                f"upscale_delay_s {chosen.upscale_delay_s:g}, downscale_delay_s {chosen.downscale_delay_s:g}, "
                f"target_ongoing_requests {t[0]:g} (ASR, TTS) / {t[1]:g} (Animator) / {t[2]:g} (LLM): "
                f"p95 {chosen.v2f_p95_s:.2f} s, {chosen.node_hours:.1f} L4 node-hours")
    best = min(rows, key=lambda r: r.v2f_p95_s)
    return (f"\nno setting met the target; the lowest p95 ({best.v2f_p95_s:.2f} s): upscale_delay_s "
            f"{best.upscale_delay_s:g}, downscale_delay_s {best.downscale_delay_s:g}, targets {best.targets}")
