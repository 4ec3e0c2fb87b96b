"""The model against this machine: `benchmarks/run.py`'s concurrency protocol simulated with what the
same run measured, many seeds pooled, compared with what it measured, as rows of numbers
(`capacity.report` formats them).

The protocol: n sessions started 0.5 s apart from a cold deployment (one replica a stage), each for
its share of the measured turns, no think time; session i speaks the inputs in turn from the i-th.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

from capacity.avatar import Clip
from capacity.inputs import NAMES, NAMES_INV
from capacity.scenarios import OURS, protocol, stage_cpu_per_turn
from capacity.schema import BenchResult, Concurrency
from capacity.sim import STAGES, Scenario, Sim
from capacity.stats import quantile

AIM = 20  # per cent: the model is good enough when every p50 and p95 is within this of the measured


def error_pct(simulated: float, measured: float) -> float:
    """The simulated figure's error against the measured one, in per cent of it."""
    return (simulated - measured) / measured * 100


@dataclass
class ValidationRow:
    """Voice to face and throughput at one number of sessions, measured and simulated."""

    sessions: int
    turns: int  # measured
    measured_p50_s: float
    simulated_p50_s: float
    measured_p95_s: float
    p95_interval: tuple[float, float] | None  # the measured p95's 90 % bootstrap interval, where turns were kept
    simulated_p95_s: float
    measured_turns_per_min: float
    simulated_turns_per_min: float

    @property
    def error_p50(self) -> float:
        return error_pct(self.simulated_p50_s, self.measured_p50_s)

    @property
    def error_p95(self) -> float:
        return error_pct(self.simulated_p95_s, self.measured_p95_s)


@dataclass
class ClipRow:
    """One session, one clip: voice to face measured (median) and simulated, and the floor (the
    stage calls one at a time) plus the clip's endpointing wait, run.py's and the model's."""

    name: str
    speech_s: float
    measured_s: float
    simulated_s: float
    floor_measured_s: float  # NaN where run.py measured no floor for it
    floor_model_s: float


@dataclass
class StageRow:
    """Simulated, per stage: the busy share of replica time (mean over seeds) and peak replicas."""

    sessions: int
    utilisation: dict[str, float]
    peak_replicas: dict[str, int]


@dataclass
class CpuRow:
    """CPU seconds per turn per stage, `overhead` (all else of ours) and `all`."""

    sessions: int
    measured: dict[str, float]
    simulated: dict[str, float]


@dataclass
class Validation:
    rows: list[ValidationRow]
    clips: list[ClipRow]  # empty without one session's turns
    stages: list[StageRow]
    cpu: list[CpuRow] | None  # None unless every concurrency run measured its CPU


def worst_error(rows: list[ValidationRow]) -> float:
    worst = 0.0
    for r in rows:
        worst = max(worst, abs(r.error_p50), abs(r.error_p95))
    return worst


def p95_interval(xs: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 5th and 95th percentiles of the p95 of `xs` resampled with replacement: with 16 or 32
    turns a measured p95 rests on the slowest one or two."""
    rng = random.Random(seed)
    p95s = sorted(quantile(rng.choices(xs, k=len(xs)), 0.95) for _ in range(draws))
    return quantile(p95s, 0.05), quantile(p95s, 0.95)


def protocol_runs(sc: Scenario, m: Concurrency, seeds: range) -> list[Sim]:
    """`protocol` once per seed for one of run.py's concurrency runs: its sessions, each for its
    share of the measured turns."""
    n = m.sessions
    return [protocol(sc, n, max(1, round(m.turns / n)), seed) for seed in seeds]


def turns_per_min(sim: Sim) -> float:
    return len(sim.results) / max(r["done"] for r in sim.results) * 60


def alone_floor(sc: Scenario, clip: Clip) -> float:
    """The model's floor for a clip: its endpointing wait, then each stage's fitted cost alone, as
    run.py's floor takes them (ASR, the LLM to the first sentence, TTS of it, the first fragment)."""
    c, w = sc.costs, sc.workload
    first = clip.first_sentence_s or w.first_sentence_s
    llm = c["llm"].ttft_s + c["llm"].fixed_s + (w.first_sentence_tokens or first * w.tokens_per_speech_s) / c["llm"].tokens_at(1)
    return (clip.endpointing_s + c["asr"].fixed_s + c["asr"].per_audio_s * clip.speech_s + llm
            + c["tts"].fixed_s + c["tts"].per_audio_s * (c["tts"].chunk_s or first)
            + c["animator"].fixed_s + c["animator"].per_audio_s * sc.turn.first_fragment_s)


def validate(bench: BenchResult, sc: Scenario, seeds: range) -> Validation:
    """One run of run.py against its protocol simulated once per seed, the seeds' turns pooled."""
    rows, stages, cpu_rows = [], [], []
    alone: list[dict] = []  # the one-session turns simulated
    for m in bench.concurrency:
        n = m.sessions
        runs = protocol_runs(sc, m, seeds)
        turns = [r for sim in runs for r in sim.results]
        v2f, rates = [r["v2f_s"] for r in turns], [turns_per_min(sim) for sim in runs]
        cpu: dict[str, float] = {}
        for sim in runs:
            for name, v in stage_cpu_per_turn(sim).items():
                cpu[name] = cpu.get(name, 0.0) + v / len(seeds)
        reports = [sim.run(sim.loop.now) for sim in runs]
        if n == 1:
            alone = turns
        rows.append(ValidationRow(
            sessions=n, turns=m.turns, measured_p50_s=m.v2f_p50_s, simulated_p50_s=quantile(v2f, 0.5),
            measured_p95_s=m.v2f_p95_s, simulated_p95_s=quantile(v2f, 0.95),
            p95_interval=p95_interval([t.v2f_s for t in m.turns_detail]) if m.turns_detail else None,
            measured_turns_per_min=m.turns_per_min, simulated_turns_per_min=sum(rates) / len(rates)))
        stages.append(StageRow(n, {s: sum(r.utilisation[s] for r in reports) / len(reports) for s in STAGES},
                               {s: max(r.replicas_peak[s] for r in reports) for s in STAGES}))
        if m.cpu_per_turn_s:
            cpu_rows.append(cpu_row(n, m.cpu_per_turn_s, cpu))
    return Validation(rows=rows, clips=clip_rows(bench, sc, alone), stages=stages,
                      cpu=cpu_rows if len(cpu_rows) == len(bench.concurrency) else None)


def clip_rows(bench: BenchResult, sc: Scenario, alone: list[dict]) -> list[ClipRow]:
    """Per clip, one session: run.py's turns of it against the simulated ones (`alone`)."""
    one = next((m for m in bench.concurrency if m.sessions == 1 and m.turns_detail), None)
    if not (one and sc.workload.clips):
        return []
    floors = {i.input: i.floor_s for i in bench.per_input}
    out = []
    for k, (item, clip) in enumerate(zip(bench.inputs, sc.workload.clips)):
        floor = floors.get(item.name)
        out.append(ClipRow(
            name=item.name, speech_s=clip.speech_s,
            measured_s=statistics.median(t.v2f_s for t in one.turns_detail if t.input == k),
            simulated_s=statistics.median(r["v2f_s"] for r in alone if r["clip"] is clip),
            floor_measured_s=floor + clip.endpointing_s if floor else float("nan"),
            floor_model_s=alone_floor(sc, clip)))
    return out


def cpu_row(sessions: int, measured: dict[str, float], simulated: dict[str, float]) -> CpuRow:
    """Per stage, the overhead (every group of ours that is not a stage: the ingress, proxy, Ray,
    clients, against the simulated overhead request) and all of it."""
    m = {s: measured.get(NAMES[s], 0.0) for s in STAGES}
    m["overhead"] = sum(measured.get(g, 0.0) for g in OURS if g not in NAMES_INV)
    m["all"] = sum(measured.get(g, 0.0) for g in OURS)
    s = {stage: simulated.get(stage, 0.0) for stage in STAGES}
    s["overhead"] = simulated.get("overhead", 0.0)
    s["all"] = sum(simulated.values())
    return CpuRow(sessions, m, s)


def validate_pooled(benches: list[BenchResult], scenarios: list[Scenario], seeds: range) -> list[ValidationRow]:
    """Several runs of run.py, their turns pooled per number of sessions, each run simulated with its
    own costs and clips and the simulated turns pooled the same way: a p95 over 48 turns rather
    than 16, and a machine whose speed drifts between runs seen as it was in each. Every run needs
    its turns (`turns_detail`)."""
    rows = []
    for n in sorted({m.sessions for b in benches for m in b.concurrency}):
        real, sim_v2f, real_rate, sim_rate = [], [], [], []
        for bench, sc in zip(benches, scenarios):
            m = next((m for m in bench.concurrency if m.sessions == n), None)
            if m is None:
                continue
            real += [t.v2f_s for t in m.turns_detail]
            real_rate.append(m.turns_per_min)
            for sim in protocol_runs(sc, m, seeds):
                sim_v2f += [r["v2f_s"] for r in sim.results]
                sim_rate.append(turns_per_min(sim))
        rows.append(ValidationRow(
            sessions=n, turns=len(real), measured_p50_s=quantile(real, 0.5), simulated_p50_s=quantile(sim_v2f, 0.5),
            measured_p95_s=quantile(real, 0.95), p95_interval=p95_interval(real),
            simulated_p95_s=quantile(sim_v2f, 0.95), measured_turns_per_min=statistics.fmean(real_rate),
            simulated_turns_per_min=statistics.fmean(sim_rate)))
    return rows
