"""Capacity planner: how many L4 nodes, and which autoscaling settings, for a voice-to-face target.

    python benchmarks/capacity.py validate --bench results.json   # the model against this machine
    python benchmarks/capacity.py validate --bench a.json b.json   # several runs, their turns pooled
    python benchmarks/capacity.py simulate --sessions 8           # one run of the L4 cluster
    python benchmarks/capacity.py size --p95 2.5                  # nodes and sessions per L4
    python benchmarks/capacity.py autoscale --p95 2.5             # autoscaling settings compared

It runs the discrete-event model in `capacity_model.py` (see its docstring for what it models).
Inputs: the deployments as configured (`clusters/gcp-l4/serve_config.yaml` and `cluster.yaml` for
the L4 cluster, `serve_config.yaml` for this machine) and per-request costs: entered L4 figures with
their sources (`benchmarks/costs/l4.yaml`), or the costs `benchmarks/run.py --json` measured here.
Prints markdown tables. Deterministic for a given `--seed`.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

from capacity.engine import (
    STAGES,
    Autoscaling,
    Clip,
    NodeType,
    Scenario,
    Sim,
    StageCost,
    StageSpec,
    TurnConfig,
    Workload,
    percentile,
)

L4_COSTS = HERE / "costs" / "l4.yaml"
GPU_SERVE = ROOT / "clusters" / "gcp-l4" / "serve_config.yaml"
CLUSTER_YAML = ROOT / "clusters" / "gcp-l4" / "cluster.yaml"
LOCAL_SERVE = ROOT / "serve_config.yaml"
NAMES = {"asr": "ASR", "llm": "LLM", "tts": "TTS", "animator": "Animator"}
NAMES_INV = {v: k for k, v in NAMES.items()}


# ---- inputs -------------------------------------------------------------------------------------


def value(x):
    """A figure is a number, or {value, source, estimate}: its number (lists become ranges)."""
    if isinstance(x, dict) and "value" in x:
        x = x["value"]
    if isinstance(x, dict):
        return {k: value(v) for k, v in x.items()}
    return tuple(x) if isinstance(x, list) else x


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def deployments(serve: dict) -> dict[str, dict]:
    """Each stage's Serve options, the LLM's from `args.llm` when Ray's vLLM server is the LLM."""
    (app,) = serve["applications"]
    out = {NAMES_INV[d["name"]]: d for d in app["deployments"] if d["name"] in NAMES_INV}
    llm = app["args"].get("llm", {})
    if "deployment_config" in llm:  # ray.serve.llm: options in LLMConfig, the whole GPU in the bundle
        (bundle,) = llm["placement_group_config"]["bundles"]
        d = copy.deepcopy(llm["deployment_config"])
        d["ray_actor_options"] = {"num_gpus": bundle.get("GPU", 0), "num_cpus": bundle.get("CPU", 1),
                                  "resources": {k: v for k, v in bundle.items() if k not in ("GPU", "CPU")}}
        out["llm"] = d
    return out


def stage_specs(serve: dict, fixed: dict[str, int] | None = None) -> dict[str, StageSpec]:
    specs = {}
    for stage, d in deployments(serve).items():
        opts = d.get("ray_actor_options", {})
        role = next((k for k in opts.get("resources", {}) if k.startswith("avatar_")), None)
        scaling = Autoscaling.of(d.get("autoscaling_config"), d.get("num_replicas"))
        if fixed and stage in fixed:
            scaling = replace(scaling, min_replicas=fixed[stage], max_replicas=fixed[stage])
        specs[stage] = StageSpec(max_ongoing=d.get("max_ongoing_requests", 5), scaling=scaling,
                                 num_gpus=opts.get("num_gpus", 0), num_cpus=opts.get("num_cpus", 1), role=role)
    return specs


def l4_inputs(path: Path = L4_COSTS) -> dict:
    raw = load_yaml(path)
    costs, starts = {}, {}
    for stage, c in raw["stages"].items():
        c = value(c)
        starts[stage] = c.pop("replica_start_s", 30.0)
        if "tokens_per_s" in c:
            c["tokens_per_s"] = {int(k): float(v) for k, v in c["tokens_per_s"].items()}
        costs[stage] = StageCost(**c)
    return {"costs": costs, "replica_start_s": starts, "node_start_s": value(raw["nodes"]["start_s"]),
            "turn": TurnConfig(**value(raw["turn"])), "workload": Workload(**value(raw["workload"]))}


def l4_scenario(inputs: dict, serve: dict | None = None, fixed: dict[str, int] | None = None,
                nodes: dict[str, int] | None = None, gpu_sharing: str = "time-sliced") -> Scenario:
    """The L4 cluster as configured. `fixed`: replicas per stage instead of autoscaling; `nodes`:
    that many nodes of each role, all up from the start."""
    serve = serve or load_yaml(GPU_SERVE)
    cluster = load_yaml(CLUSTER_YAML)
    idle = cluster.get("idle_timeout_minutes", 5) * 60.0
    types = []
    for name, t in cluster["available_node_types"].items():
        if name == cluster["head_node_type"]:
            continue
        res = t["resources"]
        role = next(k for k in res if k.startswith("avatar_"))
        lo, hi = t.get("min_workers", 0), t.get("max_workers", 1)
        if nodes is not None:
            lo = hi = nodes.get(role, 0)
        types.append(NodeType(name, role, gpus=res.get("GPU", 1), cpus=res.get("CPU", 8), capacity=1.0,
                              min_nodes=lo, max_nodes=hi, start_s=inputs["node_start_s"], idle_timeout_s=idle))
    costs = inputs["costs"]
    if gpu_sharing == "free":
        costs = {k: replace(c, demand=0.0) for k, c in costs.items()}
    specs = stage_specs(serve, fixed)
    for stage, spec in specs.items():
        spec.start_s = inputs["replica_start_s"].get(stage)
    turn = replace(inputs["turn"], max_turns=serve["applications"][0]["args"].get("admission", {}).get("max_turns"))
    return Scenario(costs=costs, stages=specs, node_types=types, workload=inputs["workload"], turn=turn,
                    autoscale=fixed is None)


def local_scenario(bench: dict, cores: float = 2.0, start_load: bool = True, overhead: bool = True,
                   interference: dict | None = None, jitter: float | None = None) -> Scenario:
    """This machine as `benchmarks/run.py` ran it: the root serve_config.yaml's deployments on one
    node of `cores` cores, with the costs it measured in-process (one call at a time), each request
    keeping as many cores busy as its backend runs threads; with `interference`
    (`benchmarks/interference.py --json`), what each stage's calls cost beside the others and what a
    replica's load costs; `jitter`: how much calls of one size vary (None: as one session's repeated
    ASR calls did, `call_spread`)."""
    serve = load_yaml(LOCAL_SERVE)
    args = serve["applications"][0]["args"]
    c = bench["costs"]
    threads = {"asr": args["asr"].get("cpu_threads", 2), "llm": args["llm"].get("n_threads", 2),
               "tts": args["tts"].get("intra_op_threads") or cores, "animator": 1}
    pos = lambda x: max(0.0, float(x))  # noqa: E731 -- a fitted intercept can dip below zero
    costs = {
        "asr": StageCost(fixed_s=pos(c["asr"]["fixed_s"]), per_audio_s=pos(c["asr"]["per_audio_s"]),
                         demand=threads["asr"], max_demand=threads["asr"]),
        "llm": StageCost(ttft_s=pos(c["llm"]["first_token_s"]), tokens_per_s={1: 1 / c["llm"]["per_token_s"]},
                         demand=threads["llm"], max_demand=threads["llm"]),
        "tts": StageCost(fixed_s=pos(c["tts"]["fixed_s"]), per_audio_s=pos(c["tts"]["per_audio_s"]),
                         chunk_s=c["tts"].get("chunk_s"),  # Piper's chunks: a sentence as its phonemizer cuts it
                         demand=threads["tts"], max_demand=threads["tts"]),
        "animator": StageCost(fixed_s=pos(c["animator"]["fixed_s"]), per_audio_s=pos(c["animator"]["per_audio_s"]),
                              demand=threads["animator"]),
    }
    w = c["workload"]
    # the replies of the concurrency turns when run.py reports them, else those of its costs calls
    conc = [x for x in bench.get("concurrency", []) if "reply_speech_s" in x]
    reply_s = float(conc[0]["reply_speech_s"] if conc else w["reply_speech_s"])
    sentences = max(1, round(conc[0].get("reply_sentences", w["reply_sentences"]) if conc else w["reply_sentences"]))
    # the clips the clients speak in turn (each until its last voiced sample), else their median
    clips = [float(i["speech_end_s"]) for i in bench.get("inputs", [])] or float(w["utterance_s"])
    # Endpointing is a wait, not work: the measured median when there is one (the server's VAD
    # counts silence from where its hysteresis drops, not from the client's last voiced sample);
    # per clip where run.py measured it, since the turn model waits longer after some phrases.
    ep = c.get("endpointing", {}).get("end_silence_s", args.get("endpointing", {}).get("end_silence_s", 0.7)) + 0.016
    ep = bench.get("v2f_parts_p50_s", {}).get("endpointing", ep)
    measured, gap = measured_clips(bench)
    workload = Workload(
        utterance_s=clips, clips=measured, in_order=True, gap_s=gap, think_s=0.0, sentences=sentences, reply_s=reply_s,
        first_sentence_s=float(w.get("first_sentence_speech_s") or reply_s / sentences),
        # the rate the LLM writes per second of speech made, from the costs' own replies (the
        # concurrency replies' speech with the costs' token counts would mix two sets of replies)
        tokens_per_speech_s=float(c["llm"].get("tokens_per_speech_s") or w["reply_tokens"] / w["reply_speech_s"]),
        wait_for_playback=False,
    )
    turn = TurnConfig(endpointing_s=float(ep),
                      first_fragment_s=args["animator"].get("first_fragment_s", 0.4),
                      fragment_s=args["animator"].get("fragment_s", 1.0))
    node = NodeType("local", None, gpus=0, cpus=cores, capacity=cores, min_nodes=1, max_nodes=1, start_s=0)
    specs = stage_specs(serve)
    for spec in specs.values():
        spec.role, spec.num_gpus = None, 0.0
    # A replica Serve adds loads its model on the same cores: what a fresh process spends loading the
    # stage where interference.py measured it, else 5 s of one core each (the whole graph's five
    # replicas load and warm up in about 12 s on these 2 cores, README "Quick start").
    if interference:  # the stages it measured
        for stage, spec in specs.items():
            if stage in interference["alone"]:
                spec.start_s = interference["alone"][stage]["load_cpu_s"]
                costs[stage].interference = dict(interference["ratio"][stage])
    sc = Scenario(costs=costs, stages=specs, node_types=[node], workload=workload, turn=turn,
                  replica_start_s=5.0, start_demand=1.0 if start_load else 0.0,
                  jitter=call_spread(bench) if jitter is None else jitter)
    sc.overhead = overhead_cost(bench, sc) if overhead else None
    return sc


def measured_clips(bench: dict) -> tuple[list[Clip] | None, float]:
    """Each input as the one-session run lived it (medians over its turns): its endpointing wait,
    its reply (greedy: the same words each time), the early starts it cancelled, and the client's
    gap between one turn's `done` and the next turn's first audio (a new WebSocket session); and
    what the graph adds to its first segment beyond the stage calls, from run.py's floor phase.
    Older runs without `turns_detail`: the endpointing per input only."""
    inputs = bench.get("inputs", [])
    turns = one_session(bench).get("turns_detail")
    if not turns:
        waits = {i["input"]: i["endpointing_p50_s"] for i in bench.get("v2f_per_input", [])}
        return [Clip(float(i["speech_end_s"]), float(waits[i["name"]])) for i in inputs if i["name"] in waits] or None, 0.0
    med = statistics.median
    clips = []
    for k, item in enumerate(inputs):
        mine = [t for t in turns if t["input"] == k]
        if not mine:
            continue
        counts = [len(t["cancelled_starts"]) for t in mine]
        n = max(set(counts), key=counts.count)  # the usual number of early starts; their median times
        early = [t["cancelled_starts"] for t in mine if len(t["cancelled_starts"]) == n]
        # what the graph added to this clip's first segment beyond its stage calls, in run.py's
        # floor phase (ttfs through the graph against the in-process floor, one turn at a time)
        graph = next((max(0.0, x["ttfs_s"] - x["floor_s"]) for x in bench.get("per_input", [])
                      if x["input"] == item["name"]), 0.0)
        clips.append(Clip(
            float(item["speech_end_s"]), med(t["endpointing_s"] for t in mine), graph_s=graph,
            reply_s=med(t["reply_speech_s"] for t in mine), sentences=round(med(t["reply_sentences"] for t in mine)),
            first_sentence_s=med(t["first_sentence_speech_s"] for t in mine),
            early=tuple((med(e[j][0] for e in early), med(e[j][1] for e in early)) for j in range(n))))
    by_session: dict[int, list[dict]] = {}
    for t in sorted(turns, key=lambda t: t["began_s"]):
        by_session.setdefault(t["session"], []).append(t)
    gaps = [b["began_s"] + b["streamed_s"] - a["began_s"] - a["done_s"]
            for ts in by_session.values() for a, b in zip(ts, ts[1:])]
    return clips or None, med(gaps) if gaps else 0.0


def one_session(bench: dict) -> dict:
    """run.py's concurrency entry for one session ({} if it has none)."""
    return next((x for x in bench.get("concurrency", []) if x["sessions"] == 1), {})


def call_spread(bench: dict) -> float:
    """How much one call varies from the next of the same size: the coefficient of variation of
    the ASR wait (one call, nothing queued) over one session's repeats of each clip, pooled; 0
    when the run kept no turns or spoke no clip twice."""
    by_clip: dict[int, list[float]] = {}
    for t in one_session(bench).get("turns_detail", []):
        by_clip.setdefault(t["input"], []).append(t["asr_s"])
    cvs = [statistics.variance(xs) / statistics.fmean(xs) ** 2 for xs in by_clip.values() if len(xs) > 1]
    return (sum(cvs) / len(cvs)) ** 0.5 if cvs else 0.0


OURS = ("ASR", "LLM", "TTS", "Animator", "Ingress", "proxy", "ray", "client")


def protocol(sc: Scenario, sessions: int, turns: int, seed: int) -> Sim:
    """Run.py's concurrency protocol, simulated: `sessions` started 0.5 s apart from a cold
    deployment (min replicas), each for `turns` turns, no think time, until all are done."""
    sim, t = Sim(sc, seed=seed).closed(sessions, turns=turns, spacing_s=0.5), 0.0
    while sim.sessions_done < sessions and t < 3600:
        t += 5.0
        sim.loop.run(t)
    return sim


def stage_cpu_per_turn(sim: Sim) -> dict[str, float]:
    """Core-seconds per turn each deployment held in a simulation (its calls, with interference)."""
    return {name: dep.cpu_s / max(1, len(sim.results)) for name, dep in sim.deps.items()}


def overhead_cost(bench: dict, sc: Scenario, seeds: int = 5) -> StageCost | None:
    """What one session's turns cost the graph's processes (run.py's CPU accounting, one session at a
    time) beyond what the model's stage calls cost in the same protocol simulated, spread evenly
    over a turn as one session lived it (from the first word to the next turn's): most of it is the
    ingress and Serve's proxy reading 50 audio messages a second while the user talks and relaying
    fragments while the avatar does. None when the run has no CPU accounting."""
    one = next((x for x in bench.get("concurrency", []) if x["sessions"] == 1 and "cpu_per_turn_s" in x), None)
    if one is None:
        return None
    bare = replace(sc, overhead=None)
    modelled = sum(sum(stage_cpu_per_turn(protocol(bare, 1, one["turns"], seed)).values())
                   for seed in range(seeds)) / seeds
    extra = max(0.0, sum(one["cpu_per_turn_s"].get(g, 0.0) for g in OURS) - modelled)
    turn_s = 60.0 / one["turns_per_min"]
    return StageCost(fixed_s=turn_s, demand=extra / turn_s)


# ---- commands -----------------------------------------------------------------------------------


def pct(sim: float, measured: float) -> float:
    return (sim - measured) / measured * 100


def p95_interval(xs: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 5th and 95th percentiles of the p95 of `xs` resampled with replacement: with 16 or 32
    turns a measured p95 rests on the slowest one or two."""
    rng = random.Random(seed)
    p95s = sorted(percentile(rng.choices(xs, k=len(xs)), 0.95) for _ in range(draws))
    return percentile(p95s, 0.05), percentile(p95s, 0.95)


def protocol_runs(sc: Scenario, m: dict, args) -> list[Sim]:
    """`protocol` once per seed, for a `concurrency` entry of run.py: its sessions, each for its
    share of the measured turns."""
    n = m["sessions"]
    return [protocol(sc, n, max(1, round(m["turns"] / n)), seed) for seed in range(args.seed, args.seed + args.seeds)]


def turns_per_min(sim: Sim) -> float:
    return len(sim.results) / max(r["done"] for r in sim.results) * 60


VALIDATION_HEADER = ("| sessions | turns measured | measured p50 | simulated p50 | error | measured p95 | simulated p95 "
                     "| error | turns/min measured | simulated |\n|---|---|---|---|---|---|---|---|---|---|")


def validate(args) -> int:
    """Run.py's protocol, simulated: n sessions started 0.5 s apart from a cold deployment (one
    replica a stage), each for its share of the measured turns, no think time; many seeds pooled."""
    if len(args.bench) > 1:
        return validate_pooled(args)
    path = args.bench[0]
    bench = json.loads(Path(path).read_text())
    inter = json.loads(Path(args.interference).read_text()) if args.interference else None
    sc = local_scenario(bench, args.cores, not args.free_start, not args.no_overhead, inter, args.jitter)
    w = sc.workload
    if w.clips:
        print(f"Clips in run.py's order ({'measured per clip' if w.clips[0].reply_s else 'endpointing per clip'}), "
              f"the client's gap between turns {w.gap_s:.2f} s, calls varying by {sc.jitter:.0%} (lognormal):\n")
        print("| speech (s) | endpointing (s) | reply (s of speech, sentences, first) | early starts (s into the clip) "
              "| graph beyond the stage calls (s) |")
        print("|---|---|---|---|---|")
        for c in w.clips:
            reply = f"{c.reply_s:.1f}, {c.sentences}, {c.first_sentence_s:.1f}" if c.reply_s else "the median"
            early = ", ".join(f"{a:.2f}–{b:.2f}" for a, b in c.early) or "none"
            print(f"| {c.speech_s:.2f} | {c.endpointing_s:.2f} | {reply} | {early} | {c.graph_s:.2f} |")
        print()
    if sc.overhead is not None:
        o = sc.overhead
        print(f"CPU per turn outside the modelled stage calls (one session, measured): {o.fixed_s * o.demand:.2f} s, "
              f"modelled as {o.demand:.2f} cores over {o.fixed_s:.1f} s from the first word\n")
    rows, worst = [], 0.0
    machine = bench.get("machine", {})
    print(f"Simulated against measured (`{path}`, {machine.get('date', '')}, commit {machine.get('commit', '?')}):\n")
    print(VALIDATION_HEADER)
    alone: list[dict] = []  # the one-session turns simulated
    for m in bench["concurrency"]:
        n = m["sessions"]
        runs = protocol_runs(sc, m, args)
        turns = [r for sim in runs for r in sim.results]
        v2f, rates = [r["v2f_s"] for r in turns], [turns_per_min(sim) for sim in runs]
        cpu: dict[str, float] = {}
        for sim in runs:
            for name, v in stage_cpu_per_turn(sim).items():
                cpu[name] = cpu.get(name, 0.0) + v / args.seeds
        sims = [sim.run(sim.loop.now) for sim in runs]
        p50, p95 = percentile(v2f, 0.5), percentile(v2f, 0.95)
        e50, e95 = pct(p50, m["v2f_p50_s"]), pct(p95, m["v2f_p95_s"])
        worst = max(worst, abs(e50), abs(e95))
        rows.append((n, sims, cpu, m.get("cpu_per_turn_s")))
        if n == 1:
            alone = turns
        spread = p95_interval([t["v2f_s"] for t in m["turns_detail"]]) if m.get("turns_detail") else None
        spread = f" ({spread[0]:.2f}–{spread[1]:.2f})" if spread else ""
        print(f"| {n} | {m['turns']} | {m['v2f_p50_s']:.2f} | {p50:.2f} | {e50:+.0f} % | {m['v2f_p95_s']:.2f}{spread} | "
              f"{p95:.2f} | {e95:+.0f} % | {m['turns_per_min']:.1f} | {sum(rates) / len(rates):.1f} |")
    print(f"\nworst error {worst:.0f} % ({'within' if worst <= 20 else 'outside'} 20 %); simulated: "
          f"{args.seeds} seeds pooled; in brackets, where run.py kept each turn, the measured p95's 90 % "
          "bootstrap interval (how far another run of as many turns could put it)")
    one = next((m for m in bench["concurrency"] if m["sessions"] == 1 and m.get("turns_detail")), None)
    if one and sc.workload.clips:
        floors = {i["input"]: i["floor_s"] for i in bench.get("per_input", [])}
        print("\nOne session, per clip: voice to face measured (median) against simulated, and run.py's in-process "
              "floor (its stage calls one at a time) plus the clip's endpointing wait, against the model's:\n")
        print("| clip | speech (s) | measured | simulated | floor + endpointing, measured | model's |")
        print("|---|---|---|---|---|---|")
        for k, (item, clip) in enumerate(zip(bench["inputs"], sc.workload.clips)):
            real = [t["v2f_s"] for t in one["turns_detail"] if t["input"] == k]
            model = [r["v2f_s"] for r in alone if r["clip"] is clip]
            floor = floors.get(item["name"])
            print(f"| {item['name']} | {clip.speech_s:.2f} | {statistics.median(real):.2f} | "
                  f"{statistics.median(model):.2f} | {floor + clip.endpointing_s if floor else float('nan'):.2f} | "
                  f"{alone_floor(sc, clip):.2f} |")
    print("\nSimulated: busy share of replica time, and peak replicas:\n")
    print("| sessions | " + " | ".join(STAGES) + " |")
    print("|---|" + "---|" * len(STAGES))
    for n, reports, _, _ in rows:
        print(f"| {n} | " + " | ".join(
            f"{sum(r.utilisation[s] for r in reports) / len(reports):.2f}, {max(r.replicas_peak[s] for r in reports)}"
            for s in STAGES) + " |")
    if all(measured for *_, measured in rows):
        print("\nCPU seconds per turn, measured / simulated (the overhead: everything else we run, "
              "against the ingress, proxy, Ray and clients measured):\n")
        print("| sessions | " + " | ".join(NAMES[s] for s in STAGES) + " | overhead | all |")
        print("|---|" + "---|" * (len(STAGES) + 2))
        for n, _, cpu, measured in rows:
            rest = sum(measured.get(g, 0.0) for g in OURS if g not in NAMES_INV)
            cells = [f"{measured.get(NAMES[s], 0.0):.2f} / {cpu.get(s, 0.0):.2f}" for s in STAGES]
            cells.append(f"{rest:.2f} / {cpu.get('overhead', 0.0):.2f}")
            cells.append(f"{sum(measured.get(g, 0.0) for g in OURS):.2f} / {sum(cpu.values()):.2f}")
            print(f"| {n} | " + " | ".join(cells) + " |")
    return 0 if worst <= 20 else 1


def validate_pooled(args) -> int:
    """Several runs of run.py, their turns pooled per number of sessions, each run simulated with its
    own costs and clips and the simulated turns pooled the same way: a p95 over 48 turns rather
    than 16, and a machine whose speed drifts between runs seen as it was in each."""
    benches = [json.loads(Path(b).read_text()) for b in args.bench]
    for bench in benches:
        if not all(m.get("turns_detail") for m in bench["concurrency"]):
            raise SystemExit(f"{bench['machine'].get('date')}: pooling needs run.py's turns_detail")
    inter = json.loads(Path(args.interference).read_text()) if args.interference else None
    scenarios = [local_scenario(b, args.cores, not args.free_start, not args.no_overhead, inter, args.jitter)
                 for b in benches]
    print(f"Simulated against measured, {len(benches)} runs pooled: "
          + ", ".join(f"{b['machine'].get('date', '')} ({b['machine'].get('commit', '?')})" for b in benches) + "\n")
    print(VALIDATION_HEADER)
    worst = 0.0
    for n in sorted({m["sessions"] for b in benches for m in b["concurrency"]}):
        real, sim_v2f, real_rate, sim_rate = [], [], [], []
        for bench, sc in zip(benches, scenarios):
            m = next((m for m in bench["concurrency"] if m["sessions"] == n), None)
            if m is None:
                continue
            real += [t["v2f_s"] for t in m["turns_detail"]]
            real_rate.append(m["turns_per_min"])
            for sim in protocol_runs(sc, m, args):
                sim_v2f += [r["v2f_s"] for r in sim.results]
                sim_rate.append(turns_per_min(sim))
        m50, m95, p50, p95 = (percentile(real, 0.5), percentile(real, 0.95),
                              percentile(sim_v2f, 0.5), percentile(sim_v2f, 0.95))
        e50, e95 = pct(p50, m50), pct(p95, m95)
        worst = max(worst, abs(e50), abs(e95))
        lo, hi = p95_interval(real)
        print(f"| {n} | {len(real)} | {m50:.2f} | {p50:.2f} | {e50:+.0f} % | {m95:.2f} ({lo:.2f}–{hi:.2f}) | {p95:.2f} | "
              f"{e95:+.0f} % | {statistics.fmean(real_rate):.1f} | {statistics.fmean(sim_rate):.1f} |")
    print(f"\nworst error {worst:.0f} % ({'within' if worst <= 20 else 'outside'} 20 %); simulated: {args.seeds} seeds "
          "per run; in brackets, the measured p95's 90 % bootstrap interval")
    return 0 if worst <= 20 else 1


def alone_floor(sc: Scenario, clip: Clip) -> float:
    """The model's floor for a clip: its endpointing wait, then each stage's fitted cost alone, as
    run.py's floor takes them (ASR, the LLM to the first sentence, TTS of it, the first fragment)."""
    c, w = sc.costs, sc.workload
    first = clip.first_sentence_s or w.first_sentence_s
    llm = c["llm"].ttft_s + c["llm"].fixed_s + (w.first_sentence_tokens or first * w.tokens_per_speech_s) / c["llm"].tokens_at(1)
    return (clip.endpointing_s + c["asr"].fixed_s + c["asr"].per_audio_s * clip.speech_s + llm
            + c["tts"].fixed_s + c["tts"].per_audio_s * (c["tts"].chunk_s or first)
            + c["animator"].fixed_s + c["animator"].per_audio_s * sc.turn.first_fragment_s)


def report_row(label: str, r) -> str:
    util = " / ".join(f"{r.utilisation[s]:.2f}" for s in STAGES)
    reps = " / ".join(str(r.replicas_peak[s]) for s in STAGES)
    nodes = " + ".join(f"{v}" for v in r.nodes_peak.values())
    return (f"| {label} | {r.turns} | {r.v2f_p50_s:.2f} | {r.v2f_p95_s:.2f} | {r.underruns}/{r.fragments} | "
            f"{util} | {reps} | {nodes} |")


HEADER = ("| run | turns | v2f p50 s | v2f p95 s | underruns/fragments | utilisation asr/llm/tts/anim | "
          "peak replicas | peak nodes media + llm |\n|---|---|---|---|---|---|---|---|")


def simulate(args) -> int:
    inputs = l4_inputs(args.costs)
    sc = l4_scenario(inputs, gpu_sharing=args.gpu_sharing)
    r = Sim(sc, seed=args.seed).closed(args.sessions).run(args.minutes * 60, warmup_s=60)
    print(HEADER)
    print(report_row(f"{args.sessions} sessions", r))
    if r.rejected:
        print(f"\n{r.rejected} turns refused by admission (max_turns {sc.turn.max_turns})")
    return 0


def media_stages() -> list[str]:
    return ["asr", "tts", "animator"]


def fit_cluster(inputs: dict, sessions: int, p95: float, args, start: tuple | None = None):
    """The fewest L4s (replicas fixed, no autoscaling) that keep voice-to-face p95 under `p95` for
    `sessions` people talking at once. From one replica of each stage, step by step take whichever
    of these lowers p95 with the fewest nodes: one more replica of a stage (packed onto the nodes as
    the GPU fractions allow), one more media node (the replicas spread out, so fewer share a GPU),
    or both. Returns
    (replicas, nodes per role, report)."""
    serve = load_yaml(GPU_SERVE)
    specs = stage_specs(serve)
    reps, extra = start or ({s: 1 for s in STAGES}, 0)

    def run(reps, extra):
        nodes = nodes_for(reps, specs)
        nodes["avatar_media"] = nodes.get("avatar_media", 0) + extra
        sc = l4_scenario(inputs, serve, fixed=reps, nodes=nodes, gpu_sharing=args.gpu_sharing)
        sc.turn = replace(sc.turn, max_turns=None, fragment_s=args.fragment_s or sc.turn.fragment_s)
        return nodes, Sim(sc, seed=args.seed).closed(sessions).run(args.minutes * 60, warmup_s=60)

    nodes, r = run(reps, extra)
    for _ in range(64):
        if r.v2f_p95_s <= p95:
            break
        options = [({**reps, s: reps[s] + 1}, extra) for s in STAGES] + [(reps, extra + 1)]
        options += [({**reps, s: reps[s] + 1}, extra + 1) for s in media_stages()]  # on a node of its own
        trials = []
        for more, e in options:
            n2, r2 = run(more, e)
            trials.append((r2.v2f_p95_s, sum(n2.values()), more, e, n2, r2))
        better = sorted((t for t in trials if t[0] < r.v2f_p95_s - 0.01), key=lambda t: (t[1], t[0]))
        if not better:  # nothing helps any more
            break
        _, _, reps, extra, nodes, r = better[0]  # the fewest nodes, then the lowest p95
    return (reps, extra), nodes, r


def nodes_for(reps: dict[str, int], specs: dict[str, StageSpec]) -> dict[str, int]:
    """Nodes per role for these replicas, first fit by GPU and CPU fraction, largest first."""
    bins: dict[str, list[list[float]]] = {}
    items = sorted(((specs[s].num_gpus, specs[s].num_cpus, specs[s].role) for s in STAGES for _ in range(reps[s])),
                   reverse=True)
    for g, c, role in items:
        nodes = bins.setdefault(role, [])
        for node in nodes:
            if node[0] + g <= 1 + 1e-9 and node[1] + c <= 8 + 1e-9:
                node[0] += g
                node[1] += c
                break
        else:
            nodes.append([g, c])
    return {role: len(n) for role, n in bins.items()}


def size(args) -> int:
    inputs = l4_inputs(args.costs)
    print(f"Fewest L4 nodes for voice-to-face p95 <= {args.p95} s (replicas fixed, added one at a time "
          f"to a stage and/or a media node added, whichever lowers p95 with the fewest nodes; "
          f"{args.minutes:g} simulated minutes each, GPU sharing: "
          f"{args.gpu_sharing}):\n")
    print("| sessions | replicas asr/llm/tts/anim | media L4 | LLM L4 | v2f p50 s | v2f p95 s | underruns/fragments | "
          "utilisation asr/llm/tts/anim | sessions per L4 |")
    print("|---|---|---|---|---|---|---|---|---|")
    best, state = None, None
    for n in args.sessions:
        state, nodes, r = fit_cluster(inputs, n, args.p95, args, start=state)
        reps = state[0]
        total = sum(nodes.values())
        ok = r.v2f_p95_s <= args.p95
        per = n / total if ok else float("nan")
        if ok and (best is None or per >= best[0]):
            best = (per, n, total)
        print(f"| {n} | {'/'.join(str(reps[s]) for s in STAGES)} | {nodes.get('avatar_media', 0)} | "
              f"{nodes.get('avatar_llm', 0)} | {r.v2f_p50_s:.2f} | {r.v2f_p95_s:.2f}{'' if ok else ' (missed)'} | "
              f"{r.underruns}/{r.fragments} | {' / '.join(f'{r.utilisation[s]:.2f}' for s in STAGES)} | {per:.2f} |")
    if best:
        print(f"\nbest: {best[1]} sessions on {best[2]} L4s = {best[0]:.2f} sessions per L4 at p95 <= {args.p95} s")
    return 0


def profile(peak: int, minutes: float, w: Workload) -> list[tuple[float, float]]:
    """Arrivals for a busy hour: quiet (a tenth of the peak), a ramp to `peak` sessions at once,
    an hour at the peak, back to quiet. Little's law: arrivals = sessions / a session's length."""
    turn_s = (sum(w.utterance_s) / 2 if isinstance(w.utterance_s, tuple) else w.utterance_s) + w.think_s + 3.0 \
        + (sum(w.reply_s) / 2 if isinstance(w.reply_s, tuple) else w.reply_s)
    length = (w.turns or 10) * turn_s
    rate = lambda s: s / length  # noqa: E731
    q = max(1.0, peak / 10)
    t = minutes * 60 / 6
    return [(0, rate(q)), (t, rate(peak / 2)), (1.5 * t, rate(peak)), (4.5 * t, rate(q))]


def autoscale(args) -> int:
    inputs = l4_inputs(args.costs)
    serve = load_yaml(GPU_SERVE)
    seeds = range(args.seed, args.seed + args.seeds)
    print(f"Autoscaling settings over a busy period ({args.minutes:g} simulated minutes: quiet, a ramp to "
          f"{args.peak} sessions at once, an hour at the peak, quiet; new L4 nodes take "
          f"{inputs['node_start_s']:.0f} s; GPU sharing: {args.gpu_sharing}; admission max_turns "
          f"{args.max_turns or 'as configured'}; means over {args.seeds} seeds), p95 target {args.p95} s:\n")
    print("| upscale_delay_s | downscale_delay_s | target_ongoing asr,tts / animator / llm | v2f p50 s | v2f p95 s | "
          "refused turns | L4 node-hours | peak replicas asr/llm/tts/anim | peak nodes media + llm |")
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    for up in args.upscale:
        for down in args.downscale:
            for single, anim, llm in args.targets:
                scaled = {"asr": single, "tts": single, "animator": anim, "llm": llm}
                cfg = with_autoscaling(serve, up, down, scaled, args.max_replicas)
                runs = []
                for seed in seeds:
                    sc = l4_scenario(inputs, cfg, gpu_sharing=args.gpu_sharing)
                    sc.node_types = [replace(t, max_nodes=args.max_nodes.get(t.role, t.max_nodes))
                                     for t in sc.node_types]
                    if args.max_turns:
                        sc.turn = replace(sc.turn, max_turns=args.max_turns)
                    sim = Sim(sc, seed=seed).arrivals(profile(args.peak, args.minutes, inputs["workload"]))
                    runs.append(sim.run(args.minutes * 60))
                mean = lambda f: sum(f(r) for r in runs) / len(runs)  # noqa: E731
                p50, p95 = mean(lambda r: r.v2f_p50_s), mean(lambda r: r.v2f_p95_s)
                refused, hours = mean(lambda r: r.rejected), mean(lambda r: sum(r.node_hours.values()))
                peak_reps = {s: max(r.replicas_peak[s] for r in runs) for s in STAGES}
                peak_nodes = [max(r.nodes_peak[k] for r in runs) for k in runs[0].nodes_peak]
                results.append((p95 <= args.p95 and refused == 0, hours, p95, up, down, (single, anim, llm)))
                print(f"| {up:g} | {down:g} | {single:g} / {anim:g} / {llm:g} | {p50:.2f} | {p95:.2f} | {refused:.0f} | "
                      f"{hours:.1f} | {'/'.join(str(peak_reps[s]) for s in STAGES)} | "
                      f"{' + '.join(str(v) for v in peak_nodes)} |")
    meets = [x for x in results if x[0]]
    if meets:  # the fewest node-hours, counting those within 2 % of it as equal, then the lowest p95
        cheapest = min(x[1] for x in meets)
        _, hours, p95, up, down, t = min((x for x in meets if x[1] <= cheapest * 1.02), key=lambda x: x[2])
        print(f"\nchosen (fewest node-hours meeting the target, within 2 %, then the lowest p95): "
              f"upscale_delay_s {up:g}, downscale_delay_s {down:g}, "
              f"target_ongoing_requests {t[0]:g} (ASR, TTS) / {t[1]:g} (Animator) / {t[2]:g} (LLM): "
              f"p95 {p95:.2f} s, {hours:.1f} L4 node-hours")
    else:
        best = min(results, key=lambda x: x[2])
        print(f"\nno setting met the target; the lowest p95 ({best[2]:.2f} s): upscale_delay_s {best[3]:g}, "
              f"downscale_delay_s {best[4]:g}, targets {best[5]}")
    return 0


def with_autoscaling(serve: dict, up: float, down: float, targets: dict[str, float], max_replicas: dict) -> dict:
    """A copy of the GPU Serve config with these delays and targets on every stage."""
    cfg = copy.deepcopy(serve)
    app = cfg["applications"][0]
    found = {NAMES_INV[d["name"]]: d["autoscaling_config"] for d in app["deployments"] if d["name"] in NAMES_INV}
    found["llm"] = app["args"]["llm"]["deployment_config"]["autoscaling_config"]
    for stage, a in found.items():
        a.update(upscale_delay_s=up, downscale_delay_s=down, target_ongoing_requests=targets[stage])
        a["max_replicas"] = max_replicas.get(stage, a["max_replicas"])
    return cfg


def stage_ints(text: str) -> dict[str, int]:
    """'animator=4,tts=4' -> {'animator': 4, 'tts': 4}"""
    out = {}
    for part in filter(None, text.split(",")):
        k, v = part.split("=")
        out[k.strip()] = int(v)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=int, default=1)
    common.add_argument("--costs", type=Path, default=L4_COSTS)
    common.add_argument("--gpu-sharing", choices=("time-sliced", "free"), default="time-sliced",
                        help="time-sliced: requests on one L4 slow each other; free: no interference")
    v = sub.add_parser("validate", parents=[common], help="simulate this machine against run.py's concurrency")
    v.add_argument("--bench", type=Path, nargs="+", required=True,
                   help="run.py --json output; several: their turns pooled (each needs turns_detail)")
    v.add_argument("--cores", type=float, default=2.0)
    v.add_argument("--seeds", type=int, default=20, help="simulated repetitions of run.py's protocol, pooled")
    v.add_argument("--free-start", action="store_true", help="replicas Serve adds load without using the cores")
    v.add_argument("--no-overhead", action="store_true", help="leave out the CPU per turn beyond the stage costs")
    v.add_argument("--interference", type=Path, help="interference.py --json output: calls beside others, replica loads")
    v.add_argument("--jitter", type=float, default=None,
                   help="coefficient of variation of each call (default: as one session's repeated ASR calls varied)")
    s = sub.add_parser("simulate", parents=[common], help="one run of the L4 cluster as configured")
    s.add_argument("--sessions", type=int, default=8)
    s.add_argument("--minutes", type=float, default=30.0)
    z = sub.add_parser("size", parents=[common], help="fewest L4 nodes per number of sessions")
    z.add_argument("--p95", type=float, default=2.5)
    z.add_argument("--sessions", type=lambda t: [int(x) for x in t.split(",")], default=[4, 8, 16, 32])
    z.add_argument("--minutes", type=float, default=60.0)
    z.add_argument("--fragment-s", type=float, default=None,
                   help="the animator's later fragments (default: the config's)")
    a = sub.add_parser("autoscale", parents=[common], help="autoscaling settings over a busy period")
    a.add_argument("--p95", type=float, default=2.5)
    a.add_argument("--peak", type=int, default=16)
    a.add_argument("--minutes", type=float, default=180.0)
    a.add_argument("--upscale", type=lambda t: [float(x) for x in t.split(",")], default=[5.0, 30.0])
    a.add_argument("--downscale", type=lambda t: [float(x) for x in t.split(",")], default=[60.0, 300.0, 600.0])
    a.add_argument("--targets", type=lambda t: [tuple(float(y) for y in x.split("/")) for x in t.split(",")],
                   default=[(1.0, 1.0, 4.0), (0.7, 1.0, 4.0), (1.0, 1.5, 8.0)],
                   help="single-stream stages / animator / llm, e.g. 1/1/4,0.7/1/4")
    a.add_argument("--max-replicas", type=stage_ints, default={}, help="e.g. animator=8,tts=8")
    a.add_argument("--max-nodes", type=stage_ints, default={}, help="e.g. avatar_media=8")
    a.add_argument("--max-turns", type=int, default=None, help="admission.max_turns (default: the config's)")
    a.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    return {"validate": validate, "simulate": simulate, "size": size, "autoscale": autoscale}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
