"""`hsp simulate`: every strategy plans the same sampled batches; compare cost-model step times."""

from __future__ import annotations

import argparse
import json
import sys

from cluster.commands.plan import (
    add_model_args,
    add_strategy_args,
    check_strategy,
    load_cluster,
    strategy_options,
    warn_unused_flags,
)
from solver.plan import PlanError
from solver.simulate import StrategyStats, format_table, simulate, workload_static_degree
from solver.workloads import BatchSampler, get_workload, parse_length

DEFAULT_STRATEGIES = "static,batch-ada,dcp-greedy,static-bfd,batch-ada-bfd,flexsp,fast"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="compare planning strategies on sampled batches (cost-model prediction)",
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
    strategies = [check_strategy(s.strip()) for s in args.strategies.split(",") if s.strip()]
    if not strategies:
        raise ValueError("--strategies is empty: name at least one strategy")
    warn_unused_flags(args, strategies)
    if args.steps <= 0 or args.batch_size <= 0:
        raise ValueError(f"--steps and --batch-size must be positive, got {args.steps} and {args.batch_size}")
    max_len = parse_length(args.max_len or "192k")
    source = get_workload(args.workload)
    spec, cost, label = load_cluster(args, max_len)
    sampler = BatchSampler(source, args.batch_size, max_len, args.seed)
    options = {s: strategy_options(args, s) for s in strategies}
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
        draw_bars(stats, args.plot, title=f"{source.name}, {label}, N={spec.num_ranks}, max {max_len:,}")
        print(f"wrote {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _run_with_progress(sampler, spec, cost, strategies, args, options) -> dict[str, StrategyStats]:
    from tqdm import tqdm

    with tqdm(total=args.steps * len(strategies), file=sys.stderr, disable=args.no_progress,
              desc="planning", unit="plan", leave=False) as bar:

        def on_plan(strategy, step, step_plan):
            bar.set_postfix_str(f"done: step {step} {strategy}")
            bar.update(1)

        try:
            return simulate(sampler, spec, cost, strategies, num_steps=args.steps, options=options, on_plan=on_plan)
        except PlanError as err:
            raise RuntimeError(f"a planner produced an invalid plan (a bug, please report it): {err}") from err


def draw_bars(stats: dict[str, StrategyStats], path: str, title: str) -> None:
    """Mean predicted step seconds per strategy, annotated with the speedup over static."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(stats)
    means = [stats[s].mean_step_s for s in names]
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(names, means, color=["#4c72b0" if s != "fast" else "#dd8452" for s in names])
    for bar, s in zip(bars, names):
        speedup = stats[s].speedup_vs_static
        label = f"{stats[s].mean_step_s:.1f}s" + ("" if speedup is None else f"\n{speedup:.2f}x")
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), label, ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("mean predicted step seconds (cost model)")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(0, max(means) * 1.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
