"""`hsp plan`: plan one global batch and show it (summary, JSON or a Gantt chart).

The cluster/cost and strategy flags are defined here and shared with `hsp simulate`;
what they load and how options reach strategies lives in cluster/planning.py.
"""

from __future__ import annotations

import argparse
import sys

HELP = "plan one global batch (cost-model prediction)"
DEFAULT_MAX_LEN = "192k"


def register(subparsers) -> None:
    from solver import STRATEGIES

    parser = subparsers.add_parser(
        "plan", help=HELP,
        description="Plan one global batch: micro-batches, SP groups and predicted seconds from the cost model.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--lengths", metavar="FILE", help="the batch: one sequence length per line")
    source.add_argument("--workload", metavar="NAME", help="sample the batch from a workload (name or lengths file)")
    parser.add_argument("--batch-size", type=int, default=512, help="sequences per global batch (with --workload)")
    parser.add_argument("--step", type=int, default=0, help="which batch of the seeded stream (with --workload)")
    add_model_args(parser)
    add_strategy_args(parser)
    parser.add_argument("--strategy", default="fast", help=f"one of {', '.join(STRATEGIES)} (default fast)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON instead of the summary")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw a Gantt chart of the plan")
    parser.set_defaults(func=run)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared with `hsp simulate`: cost model, cluster and the batch stream."""
    from solver.cost import preset_names

    parser.add_argument(
        "--max-len", default=None,
        help="drop sampled sequences longer than this, e.g. 192k = 192,000 (default 192k); also picks the preset's "
        "parameter count (192K/384K). A --lengths file is never filtered",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch stream")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model", default=None, help=f"cost-model preset: {', '.join(preset_names())} (default gpt-7b)")
    model.add_argument("--cost", metavar="FILE", help="cost-model JSON (e.g. written by `hsp profile`)")
    parser.add_argument("--num-ranks", type=int, default=64, help="ranks (devices) N")
    parser.add_argument("--ranks-per-node", type=int, default=None, help="override the preset's ranks per node (8)")
    parser.add_argument(
        "--memory-gib", type=float, default=None, help="memory budget per rank (presets 28 GiB; 28 with --cost)"
    )
    parser.add_argument("--num-heads", type=int, default=None, help="override the model's attention head count")


def add_strategy_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--static-degree", type=int, default=None, help="SP degree of the `static` strategy")
    parser.add_argument("--time-limit", type=float, default=None, help="MILP time limit per micro-batch (flexsp), s")


OPTION_FLAGS = {"static_degree": "--static-degree", "solve_time_limit_s": "--time-limit"}
"""Planner option name -> the flag that sets it."""


def planner_options(args: argparse.Namespace) -> dict[str, object]:
    """The planner options given as flags (None = not given); warns about options that no
    chosen strategy takes."""
    if args.time_limit is not None and not args.time_limit > 0:
        raise ValueError(f"--time-limit must be positive seconds, got {args.time_limit}")
    return {"static_degree": args.static_degree, "solve_time_limit_s": args.time_limit}


def warn_unused(args: argparse.Namespace, options: dict[str, object], strategies: list[str]) -> None:
    from cluster.planning import unused_options

    for name, owners in unused_options(options, strategies).items():
        which = ", ".join(map(repr, owners))
        print(f"hsp {args.command}: warning: {OPTION_FLAGS[name]} only applies to the {which} "
              f"strateg{'y' if len(owners) == 1 else 'ies'}; ignored", file=sys.stderr)


def cluster_from_args(args: argparse.Namespace, max_len: int):
    from cluster.planning import load_cluster

    return load_cluster(preset=args.model, cost_file=args.cost, num_ranks=args.num_ranks,
                        ranks_per_node=args.ranks_per_node, memory_gib=args.memory_gib, num_heads=args.num_heads,
                        max_len=max_len)


def run(args: argparse.Namespace) -> int:
    from cluster.planning import check_strategy, checked_plan, format_plan_summary, positive, route_options
    from cluster.plots import plot_plan_gantt
    from solver.simulate import workload_static_degree
    from solver.workloads import BatchSampler, get_workload, load_lengths, parse_length

    strategy = check_strategy(args.strategy)
    options = planner_options(args)
    warn_unused(args, options, [strategy])
    if args.lengths:
        # the file is the batch itself: nothing is dropped; --max-len only picks the preset size
        lengths = load_lengths(args.lengths)
        max_len = parse_length(args.max_len) if args.max_len else int(lengths.max())
        where, source = f"lengths from {args.lengths}", None
    else:
        max_len = parse_length(args.max_len or DEFAULT_MAX_LEN)
        source = get_workload(args.workload)
        lengths = BatchSampler(source, positive("--batch-size", args.batch_size), max_len, args.seed).batch(args.step)
        where = f"workload {source.name}, step {args.step}, seed {args.seed}, max length {max_len:,}"
    spec, cost, label = cluster_from_args(args, max_len)
    chosen = route_options(options, [strategy])[strategy]
    if strategy in ("static", "static-bfd") and "static_degree" not in chosen and source is not None:
        chosen["static_degree"] = workload_static_degree(source, max_len, spec, cost)
    step_plan, _ = checked_plan(lengths, spec, cost, strategy, chosen)
    if args.json:
        print(step_plan.to_json())
    else:
        print(format_plan_summary(step_plan, lengths, spec, f"{label}; {where}"))
    if args.plot:
        plot_plan_gantt(step_plan, lengths, args.plot, title=f"{strategy} plan, {label}, N={spec.num_ranks}")
        print(f"wrote {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return 0
