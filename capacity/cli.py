"""Capacity planner: how many L4 nodes, and which autoscaling settings, for a voice-to-face target.

    avatar-capacity validate --bench results.json   # the model against this machine
    avatar-capacity validate --bench a.json b.json  # several runs, their turns pooled
    avatar-capacity simulate --sessions 8           # one run of the L4 cluster
    avatar-capacity size --p95 2.5                  # nodes and sessions per L4
    avatar-capacity autoscale --p95 2.5             # autoscaling settings compared

(`python -m capacity ...` is the same.) It runs the discrete-event model of the `capacity` package
(see its docstring for what it models). Inputs: the deployments as configured
(`clusters/gcp-l4/serve_config.yaml` and `cluster.yaml` for the L4 cluster, `serve_config.yaml` for
this machine) and per-request costs: entered L4 figures with their sources (`capacity/costs/l4.yaml`),
or the costs `python -m benchmarks.run --json` measured here. Prints markdown tables. Deterministic
for a given `--seed`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from capacity import front_door, report
from capacity.inputs import L4_COSTS, l4_inputs, load_bench, load_interference, with_animator_rtf
from capacity.planning import Busy, Sizing, autoscale_rows, best_size, choose, size_rows
from capacity.scenarios import l4_scenario, local_scenario
from capacity.sim import Sim
from capacity.validation import AIM, validate_pooled, worst_error
from capacity.validation import validate as validate_run


def l4_costs(args):
    """The L4 costs file, with Ditto at --animator-rtf if given."""
    return with_animator_rtf(l4_inputs(args.costs), getattr(args, "animator_rtf", None))


def simulate(args) -> int:
    sc = l4_scenario(l4_costs(args), gpu_sharing=args.gpu_sharing)
    r = Sim(sc, seed=args.seed).closed(args.sessions).run(args.minutes * 60, warmup_s=60)
    print(report.simulation(f"{args.sessions} sessions", r, sc))
    return 0


def validate(args) -> int:
    """Run.py's protocol simulated against what it measured: 0 when every p50 and p95 is within AIM %."""
    seeds = range(args.seed, args.seed + args.seeds)
    inter = load_interference(args.interference)
    scenario = lambda b: local_scenario(b, args.cores, not args.free_start, not args.no_overhead,  # noqa: E731
                                        inter, args.jitter)
    if len(args.bench) > 1:
        benches = [load_bench(b) for b in args.bench]
        for bench in benches:
            if not all(m.turns_detail for m in bench.concurrency):
                raise SystemExit(f"{bench.machine.date}: pooling needs run.py's turns_detail")
        rows = validate_pooled(benches, [scenario(b) for b in benches], seeds)
        print(report.pooled(rows, benches, args.seeds))
    else:
        bench = load_bench(args.bench[0])
        sc = scenario(bench)
        if text := report.clips_modelled(sc):
            print(text)
        v = validate_run(bench, sc, seeds)
        print(report.validation(v, bench, str(args.bench[0]), args.seeds))
        rows = v.rows
    return 0 if worst_error(rows) <= AIM else 1


def front(args) -> front_door.FrontDoorCost | None:
    """The front door's measured costs named by --front-door (none: left out)."""
    if args.front_door == "none":
        return None
    costs = front_door.load_costs(args.front_door_costs)
    if args.front_door not in costs:
        raise SystemExit(f"--front-door {args.front_door!r}: {args.front_door_costs} has {', '.join(costs)}")
    return costs[args.front_door]


def size(args) -> int:
    how = Sizing(seed=args.seed, minutes=args.minutes, gpu_sharing=args.gpu_sharing, fragment_s=args.fragment_s,
                 underruns=args.underruns, hold_s=args.hold, front=front(args))
    print(report.size_intro(args.p95, args.minutes, args.gpu_sharing, how))
    rows = []
    for row in size_rows(l4_costs(args), args.sessions, args.p95, how):
        print(report.size_row(row))
        rows.append(row)
    if best := best_size(rows):
        print(report.best_size(best, args.p95))
    else:
        print(report.no_size(args.p95))
    return 0


def autoscale(args) -> int:
    inputs = l4_costs(args)
    busy = Busy(p95=args.p95, peak=args.peak, minutes=args.minutes, seeds=range(args.seed, args.seed + args.seeds),
                gpu_sharing=args.gpu_sharing, max_replicas=args.max_replicas, max_nodes=args.max_nodes,
                max_turns=args.max_turns, underruns=args.underruns, hold_s=args.hold, front=front(args))
    print(report.autoscale_intro(busy, inputs.node_start_s))
    rows = []
    for row in autoscale_rows(inputs, busy, args.upscale, args.downscale, args.targets):
        print(report.autoscale_row(row))
        rows.append(row)
    print(report.autoscale_choice(rows, choose(rows)))
    return 0


def stage_ints(text: str) -> dict[str, int]:
    """'animator=4,tts=4' -> {'animator': 4, 'tts': 4}"""
    out = {}
    for part in filter(None, text.split(",")):
        k, v = part.split("=")
        out[k.strip()] = int(v)
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avatar-capacity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=int, default=1)
    common.add_argument("--costs", type=Path, default=L4_COSTS)
    common.add_argument("--gpu-sharing", choices=("time-sliced", "free"), default="time-sliced",
                        help="time-sliced: requests on one L4 slow each other; free: no interference")
    common.add_argument("--animator-rtf", type=float, default=None,
                        help="Ditto's real-time factor instead of the costs file's (its fixed_s scales with it)")
    plan = argparse.ArgumentParser(add_help=False)  # what a plan must hold (size, autoscale)
    plan.add_argument("--underruns", type=lambda t: None if t == "any" else float(t), default=0.0,
                      help="the most underruns a plan may have, as a share of fragments (0.001: 0.1 %%; "
                           "'any': p95 alone)")
    plan.add_argument("--hold", type=lambda t: None if t == "adaptive" else float(t), default=0.0,
                      help="the client starts a reply's speech this many seconds after its first fragment (0: at "
                           "once, as the page does; 'adaptive': a jitter buffer of the largest need of the "
                           "session's last 5 turns, at most 1 s); voice to face counts to the first frame shown")
    plan.add_argument("--front-door", default="haproxy-100ms-lean",
                      help="the front door's measured costs by name in --front-door-costs (default: what the GCP "
                           "cluster runs; 'none': left out)")
    plan.add_argument("--front-door-costs", type=Path, default=front_door.FRONT_DOOR_COSTS)
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
    z = sub.add_parser("size", parents=[common, plan], help="fewest L4 nodes per number of sessions")
    z.add_argument("--p95", type=float, default=2.5)
    z.add_argument("--sessions", type=lambda t: [int(x) for x in t.split(",")], default=[4, 8, 16, 32])
    z.add_argument("--minutes", type=float, default=60.0)
    z.add_argument("--fragment-s", type=float, default=None,
                   help="the animator's later fragments (default: the config's)")
    a = sub.add_parser("autoscale", parents=[common, plan], help="autoscaling settings over a busy period")
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return {"validate": validate, "simulate": simulate, "size": size, "autoscale": autoscale}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
