"""The two clusters the planner simulates: the L4 cluster as configured, with the entered costs
(`l4_scenario`); and this machine as `benchmarks/run.py` ran it, with what that run measured
(`local_scenario`): its fitted costs, each clip as one session lived it, how much calls varied, and
the CPU a turn costs beyond the stage calls."""

from __future__ import annotations

import statistics
from dataclasses import replace

from avatar_core.config import AnimatorConfig
from capacity.avatar import Clip, TurnConfig, Workload
from capacity.cluster import NodeType
from capacity.engine import StageCost
from capacity.inputs import GPU_SERVE, LOCAL_SERVE, L4Inputs, l4_node_types, load_yaml, stage_specs
from capacity.schema import BenchResult
from capacity.sim import Scenario, Sim

# run.py's CPU groups that are ours (the stages, the ingress, Serve's proxy, Ray, the clients)
OURS = ("ASR", "LLM", "TTS", "Animator", "Ingress", "proxy", "ray", "client")


def _default(field: str):
    """The app's default for an animator setting a serve config leaves out."""
    return AnimatorConfig.model_fields[field].default


def l4_scenario(inputs: L4Inputs, serve: dict | None = None, fixed: dict[str, int] | None = None,
                nodes: dict[str, int] | None = None, gpu_sharing: str = "time-sliced") -> Scenario:
    """The L4 cluster as configured. `fixed`: replicas per stage instead of autoscaling; `nodes`:
    that many nodes of each role, all up from the start; `gpu_sharing` "free": requests on one L4
    do not slow each other."""
    serve = serve or load_yaml(GPU_SERVE)
    types = l4_node_types(inputs.node_start_s, nodes)
    costs = inputs.costs
    if gpu_sharing == "free":
        costs = {k: replace(c, demand=0.0) for k, c in costs.items()}
    specs = stage_specs(serve, fixed)
    for stage, spec in specs.items():
        spec.start_s = inputs.replica_start_s.get(stage)
    turn = replace(inputs.turn, max_turns=serve["applications"][0]["args"].get("admission", {}).get("max_turns"))
    return Scenario(costs=costs, stages=specs, node_types=types, workload=inputs.workload, turn=turn,
                    autoscale=fixed is None)


def local_scenario(bench: BenchResult, cores: float = 2.0, start_load: bool = True, overhead: bool = True,
                   interference: dict | None = None, jitter: float | None = None) -> Scenario:
    """This machine as `benchmarks/run.py` ran it: the root serve_config.yaml's deployments on one
    node of `cores` cores, with the costs it measured in-process (one call at a time), each request
    keeping as many cores busy as its backend runs threads; with `interference`
    (`benchmarks/interference.py --json`), what each stage's calls cost beside the others and what a
    replica's load costs; `jitter`: how much calls of one size vary (None: as one session's repeated
    ASR calls did, `call_spread`)."""
    serve = load_yaml(LOCAL_SERVE)
    args = serve["applications"][0]["args"]
    c = bench.costs
    if c.llm.per_token_s <= 0:
        raise ValueError("the run fitted the LLM over replies of one length (run.py --questions 0): "
                         "it has no per-token cost to simulate with")
    threads = {"asr": args["asr"].get("cpu_threads", 2), "llm": args["llm"].get("n_threads", 2),
               "tts": args["tts"].get("intra_op_threads") or cores, "animator": 1}
    pos = lambda x: max(0.0, float(x))  # noqa: E731 -- a fitted intercept can dip below zero
    costs = {
        "asr": StageCost(fixed_s=pos(c.asr.fixed_s), per_audio_s=pos(c.asr.per_audio_s),
                         demand=threads["asr"], max_demand=threads["asr"]),
        "llm": StageCost(ttft_s=pos(c.llm.first_token_s), tokens_per_s={1: 1 / c.llm.per_token_s},
                         demand=threads["llm"], max_demand=threads["llm"]),
        "tts": StageCost(fixed_s=pos(c.tts.fixed_s), per_audio_s=pos(c.tts.per_audio_s),
                         chunk_s=c.tts.chunk_s,  # Piper's chunks: a sentence as its phonemizer cuts it
                         demand=threads["tts"], max_demand=threads["tts"]),
        "animator": StageCost(fixed_s=pos(c.animator.fixed_s), per_audio_s=pos(c.animator.per_audio_s),
                              demand=threads["animator"]),
    }
    w = c.workload
    # the replies of the concurrency turns when run.py reports them, else those of its costs calls
    conc = [x for x in bench.concurrency if x.reply_speech_s is not None]
    reply_s = float(conc[0].reply_speech_s if conc else w.reply_speech_s)
    first_sentences = conc[0].reply_sentences if conc and conc[0].reply_sentences is not None else w.reply_sentences
    sentences = max(1, round(first_sentences))
    # the clips the clients speak in turn (each until its last voiced sample), else their median
    clips = [float(i.speech_end_s) for i in bench.inputs] or float(w.utterance_s)
    # Endpointing is a wait, not work: the measured median (the server's VAD counts silence from
    # where its hysteresis drops, not from the client's last voiced sample); per clip where run.py
    # measured it (`measured_clips`), since the turn model waits longer after some phrases.
    ep = bench.v2f_parts_p50_s.endpointing
    measured, gap = measured_clips(bench)
    workload = Workload(
        utterance_s=clips, clips=measured, in_order=True, gap_s=gap, think_s=0.0, sentences=sentences, reply_s=reply_s,
        first_sentence_s=float(w.first_sentence_speech_s or reply_s / sentences),
        # the rate the LLM writes per second of speech made, from the costs' own replies (the
        # concurrency replies' speech with the costs' token counts would mix two sets of replies)
        tokens_per_speech_s=float(c.llm.tokens_per_speech_s or w.reply_tokens / w.reply_speech_s),
        wait_for_playback=False,
    )
    turn = TurnConfig(endpointing_s=float(ep),
                      first_fragment_s=args["animator"].get("first_fragment_s", 0.4),
                      fragment_s=args["animator"].get("fragment_s", 1.0),
                      fragment_growth=args["animator"].get("fragment_growth", _default("fragment_growth")))
    node = NodeType("local", None, gpus=0, cpus=cores, capacity=cores, min_nodes=1, max_nodes=1, start_s=0)
    specs = stage_specs(serve)
    for spec in specs.values():
        spec.role, spec.num_gpus = None, 0.0
    # A replica Serve adds loads its model on the same cores: what a fresh process spends loading the
    # stage where interference.py measured it, else 5 s of one core each (the whole graph's five
    # replicas load and warm up in about 12 s on these 2 cores: docs/benchmarks.md, "vLLM on CPU").
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


def measured_clips(bench: BenchResult) -> tuple[list[Clip] | None, float]:
    """Each input as the one-session run lived it (medians over its turns): its endpointing wait,
    its reply (greedy: the same words each time), the early starts it cancelled, and the client's
    gap between one turn's `done` and the next turn's first audio (a new WebSocket session); and
    what the graph adds to its first segment beyond the stage calls, from run.py's floor phase.
    Older runs without `turns_detail`: the endpointing per input only."""
    one = bench.one_session()
    turns = one.turns_detail if one else None
    if not turns:
        waits = {i.input: i.endpointing_p50_s for i in bench.v2f_per_input}
        return [Clip(float(i.speech_end_s), float(waits[i.name])) for i in bench.inputs if i.name in waits] or None, 0.0
    med = statistics.median
    clips = []
    for k, item in enumerate(bench.inputs):
        mine = [t for t in turns if t.input == k]
        if not mine:
            continue
        counts = [len(t.cancelled_starts) for t in mine]
        n = max(set(counts), key=counts.count)  # the usual number of early starts; their median times
        early = [t.cancelled_starts for t in mine if len(t.cancelled_starts) == n]
        # what the graph added to this clip's first segment beyond its stage calls, in run.py's
        # floor phase (ttfs through the graph against the in-process floor, one turn at a time)
        graph = next((max(0.0, x.ttfs_s - x.floor_s) for x in bench.per_input if x.input == item.name), 0.0)
        clips.append(Clip(
            float(item.speech_end_s), med(t.endpointing_s for t in mine), graph_s=graph,
            reply_s=med(t.reply_speech_s for t in mine), sentences=round(med(t.reply_sentences for t in mine)),
            first_sentence_s=med(t.first_sentence_speech_s for t in mine),
            early=tuple((med(e[j][0] for e in early), med(e[j][1] for e in early)) for j in range(n))))
    by_session: dict[int, list] = {}
    for t in sorted(turns, key=lambda t: t.began_s):
        by_session.setdefault(t.session, []).append(t)
    gaps = [b.began_s + b.streamed_s - a.began_s - a.done_s for ts in by_session.values() for a, b in zip(ts, ts[1:])]
    return clips or None, med(gaps) if gaps else 0.0


def call_spread(bench: BenchResult) -> float:
    """How much one call varies from the next of the same size: the coefficient of variation of
    the ASR wait (one call, nothing queued) over one session's repeats of each clip, pooled; 0
    when the run kept no turns or spoke no clip twice."""
    one = bench.one_session()
    by_clip: dict[int, list[float]] = {}
    for t in (one.turns_detail if one else None) or []:
        by_clip.setdefault(t.input, []).append(t.asr_s)
    cvs = [statistics.variance(xs) / statistics.fmean(xs) ** 2 for xs in by_clip.values() if len(xs) > 1]
    return (sum(cvs) / len(cvs)) ** 0.5 if cvs else 0.0


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


def overhead_cost(bench: BenchResult, sc: Scenario, seeds: int = 5) -> StageCost | None:
    """What one session's turns cost the graph's processes (run.py's CPU accounting, one session at a
    time) beyond what the model's stage calls cost in the same protocol simulated, spread evenly
    over a turn as one session lived it (from the first word to the next turn's): most of it is the
    ingress and Serve's proxy reading 50 audio messages a second while the user talks and relaying
    fragments while the avatar does. None when the run has no CPU accounting."""
    one = next((x for x in bench.concurrency if x.sessions == 1 and x.cpu_per_turn_s is not None), None)
    if one is None:
        return None
    bare = replace(sc, overhead=None)
    modelled = sum(sum(stage_cpu_per_turn(protocol(bare, 1, one.turns, seed)).values())
                   for seed in range(seeds)) / seeds
    extra = max(0.0, sum(one.cpu_per_turn_s.get(g, 0.0) for g in OURS) - modelled)
    turn_s = 60.0 / one.turns_per_min
    return StageCost(fixed_s=turn_s, demand=extra / turn_s)
