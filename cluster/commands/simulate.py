"""`hsp simulate`: every strategy plans the same sampled batches; compare cost-model step times."""

from __future__ import annotations

import argparse
import json
import sys

from cluster.commands.plan import add_model_args, add_strategy_args, cluster_from_args, planner_options, warn_unused

HELP = "compare planning strategies on sampled batches (cost-model prediction)"
DEFAULT_STRATEGIES = "static,batch-ada,dcp-greedy,static-bfd,batch-ada-bfd,flexsp,fast"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "simulate", help=HELP,
        description="Plan the same sampled global batches with several strategies and compare the "
        "cost model's predicted step times, solve times and gaps to the lower bound.",
    )
    parser.add_argument("--workload", default="wikipedia", help="workload name or lengths file (default wikipedia)")
    parser.add_argument("--batch-size", type=int, default=512, help="sequences per global batch")
    parser.add_argument("--steps", type=int, default=20, help="number of global batches")
    parser.add_argument(
        "--strategies", default=DEFAULT_STRATEGIES, help=f"comma-separated (default {DEFAULT_STRATEGIES})"
    )
    add_model_args(parser)
    add_strategy_args(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object keyed by strategy")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw a bar chart of mean step times")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cluster.planning import check_strategy, route_options
    from cluster.plots import plot_strategy_step_times
    from solver.simulate import format_table, workload_static_degree
    from solver.workloads import BatchSampler, get_workload, parse_length

    strategies = [check_strategy(s.strip()) for s in args.strategies.split(",") if s.strip()]
    if not strategies:
        raise ValueError("--strategies is empty: name at least one strategy")
    given = planner_options(args)
    warn_unused(args, given, strategies)
    if args.steps <= 0 or args.batch_size <= 0:
        raise ValueError(f"--steps and --batch-size must be positive, got {args.steps} and {args.batch_size}")
    max_len = parse_length(args.max_len or "192k")
    source = get_workload(args.workload)
    spec, cost, label = cluster_from_args(args, max_len)
    sampler = BatchSampler(source, args.batch_size, max_len, args.seed)
    options = route_options(given, strategies)
    for name in ("static", "static-bfd"):
        if name in strategies:
            options[name].setdefault("static_degree", workload_static_degree(source, max_len, spec, cost))
    stats = _run_with_progress(sampler, spec, cost, strategies, args, options)
    header = (
        f"cost-model simulation (predicted seconds, not measured): {label}, N={spec.num_ranks} ranks, "
        f"workload {source.name}, batch {args.batch_size}, max length {max_len:,}, {args.steps} steps, seed {args.seed}"
    )
    static = next((s for s in ("static", "static-bfd") if s in strategies), None)
    if static:
        header += f"; static SP degree {options[static]['static_degree']}"
    if args.json:
        print(json.dumps({s: st.to_dict() for s, st in stats.items()}, indent=2))
    else:
        print(header)
        print(format_table(stats))
    if args.plot:
        plot_strategy_step_times(stats, args.plot, title=f"{source.name}, {label}, N={spec.num_ranks}, max {max_len:,}")
        print(f"wrote {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _run_with_progress(sampler, spec, cost, strategies, args, options):
    from tqdm import tqdm

    from solver.plan import PlanError
    from solver.simulate import simulate

    with tqdm(total=args.steps * len(strategies), file=sys.stderr, disable=args.no_progress,
              desc="planning", unit="plan", leave=False) as bar:

        def on_plan(strategy, step, step_plan):
            bar.set_postfix_str(f"done: step {step} {strategy}")
            bar.update(1)

        try:
            return simulate(sampler, spec, cost, strategies, num_steps=args.steps, options=options, on_plan=on_plan)
        except PlanError as err:
            raise RuntimeError(f"a planner produced an invalid plan (a bug, please report it): {err}") from err
