"""`hsp plan`: plan one global batch and show it (summary, JSON or a Gantt chart).

The cluster/cost arguments and their loading live here too; `hsp simulate` reuses them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from solver.cost import CostModel, load_preset, preset_cluster, preset_data, preset_names
from solver.plan import PlanError, StepPlan
from solver.spec import GIB, ClusterSpec
from solver import STRATEGIES
from solver.simulate import plan_and_check, workload_static_degree
from solver.workloads import BatchSampler, get_workload, load_lengths, parse_length

DEFAULT_COST_FILE_MEMORY_GIB = 28.0
DEFAULT_MAX_LEN = "192k"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="plan one global batch (cost-model prediction)",
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


def load_cluster(args: argparse.Namespace, max_len: int) -> tuple[ClusterSpec, CostModel, str]:
    """(spec, cost, label) from --model/--cost and the cluster overrides."""
    if args.cost:
        if not Path(args.cost).is_file():
            raise ValueError(f"cost-model file {args.cost} does not exist")
        cost = CostModel.load(args.cost)
        memory_gib = DEFAULT_COST_FILE_MEMORY_GIB if args.memory_gib is None else args.memory_gib
        spec = ClusterSpec(
            num_ranks=_positive("--num-ranks", args.num_ranks),
            ranks_per_node=args.ranks_per_node or 8,
            num_heads=args.num_heads or cost.num_heads,
            device_memory_bytes=_memory_bytes(memory_gib),
        )
        return spec, cost, f"cost file {args.cost}"
    name = "gpt-7b" if args.model is None else args.model  # '' is an unknown preset, not the default
    preset_data(name)  # unknown preset -> ValueError listing the presets
    cost = load_preset(name, max_len=max_len)
    spec = preset_cluster(name, _positive("--num-ranks", args.num_ranks))
    overrides = {}
    if args.ranks_per_node is not None:
        overrides["ranks_per_node"] = args.ranks_per_node
    if args.memory_gib is not None:
        overrides["device_memory_bytes"] = _memory_bytes(args.memory_gib)
    if args.num_heads is not None:
        overrides["num_heads"] = args.num_heads
    return dataclasses.replace(spec, **overrides), cost, f"preset {name}"


def strategy_options(args: argparse.Namespace, strategy: str) -> dict:
    """Planner options from the CLI flags that apply to `strategy`."""
    options = {}
    if strategy in ("static", "static-bfd") and args.static_degree is not None:
        options["static_degree"] = args.static_degree
    if strategy == "flexsp" and args.time_limit is not None:
        if args.time_limit <= 0:
            raise ValueError(f"--time-limit must be positive seconds, got {args.time_limit}")
        options["solve_time_limit_s"] = args.time_limit
    return options


def warn_unused_flags(args: argparse.Namespace, strategies: list[str]) -> None:
    """A strategy flag given without its strategy has no effect: say so."""
    flags = (("--static-degree", args.static_degree, "static"), ("--time-limit", args.time_limit, "flexsp"))
    for flag, value, owner in flags:
        if value is not None and not any(s == owner or s == f"{owner}-bfd" for s in strategies):
            print(f"hsp {args.command}: warning: {flag} only applies to the {owner!r} strategy; ignored",
                  file=sys.stderr)


def check_strategy(name: str) -> str:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    return name


def run(args: argparse.Namespace) -> int:
    strategy = check_strategy(args.strategy)
    warn_unused_flags(args, [strategy])
    if args.lengths:
        # the file is the batch itself: nothing is dropped; --max-len only picks the preset size
        lengths = load_lengths(args.lengths)
        max_len = parse_length(args.max_len) if args.max_len else int(lengths.max())
        where, source = f"lengths from {args.lengths}", None
    else:
        max_len = parse_length(args.max_len or DEFAULT_MAX_LEN)
        source = get_workload(args.workload)
        lengths = BatchSampler(source, _positive("--batch-size", args.batch_size), max_len, args.seed).batch(args.step)
        where = f"workload {source.name}, step {args.step}, seed {args.seed}, max length {max_len:,}"
    spec, cost, label = load_cluster(args, max_len)
    options = strategy_options(args, strategy)
    if strategy in ("static", "static-bfd") and "static_degree" not in options and source is not None:
        options["static_degree"] = workload_static_degree(source, max_len, spec, cost)
    step_plan, _ = checked_plan(lengths, spec, cost, strategy, options)
    if args.json:
        print(step_plan.to_json())
    else:
        print(format_summary(step_plan, lengths, spec, f"{label}; {where}"))
    if args.plot:
        draw_gantt(step_plan, lengths, args.plot, title=f"{strategy} plan, {label}, N={spec.num_ranks}")
        print(f"wrote {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return 0


def checked_plan(lengths, spec, cost, strategy, options):
    """plan_and_check, with an invalid plan reported as the bug it is (not as bad input)."""
    try:
        return plan_and_check(lengths, spec, cost, strategy, options)
    except PlanError as err:
        message = f"the {strategy!r} planner produced an invalid plan (a bug; please report it): {err}"
        raise RuntimeError(message) from err


def format_summary(step_plan: StepPlan, lengths: np.ndarray, spec: ClusterSpec, where: str) -> str:
    lengths = np.asarray(lengths)
    lines = [
        f"{step_plan.strategy} plan for {len(lengths):,} sequences, {int(lengths.sum()):,} tokens "
        f"(longest {int(lengths.max()):,}) on {spec.num_ranks} ranks ({spec.ranks_per_node} per node, "
        f"{spec.device_memory_bytes / GIB:.1f} GiB each)",
        f"  {where}",
        "  times are cost-model predictions, not measurements",
        "",
        f"{'mb':>3}  {'groups':<40} {'seqs':>6} {'tokens':>11} {'predicted_s':>12}",
    ]
    for i, mb in enumerate(step_plan.micro_batches, start=1):
        ids = [k for g in mb.groups for k in g.seq_ids]
        lines.append(
            f"{i:>3}  {mb.shape():<40} {len(ids):>6} {int(lengths[ids].sum()):>11,} {mb.predicted_s:>12.3f}"
        )
    status = step_plan.status()
    lines += [
        "",
        f"step: predicted {step_plan.predicted_s:.3f} s, lower bound {step_plan.lower_bound_s:.3f} s, "
        f"gap {100 * step_plan.lower_bound_gap:.1f}%",
        f"solve: {step_plan.solve_s:.3f} s ({status})",
    ]
    return "\n".join(lines)


def draw_gantt(step_plan: StepPlan, lengths: np.ndarray, path: str, title: str) -> None:
    """Ranks on the y axis, micro-batches left to right in time, one bar per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    degrees = sorted({g.degree for mb in step_plan.micro_batches for g in mb.groups})
    colours = {d: plt.cm.viridis(i / max(1, len(degrees) - 1)) for i, d in enumerate(degrees)}
    height = min(12.0, 2.0 + 0.08 * step_plan.num_ranks)
    fig, ax = plt.subplots(figsize=(11, height))
    start = 0.0
    for index, mb in enumerate(step_plan.micro_batches, start=1):
        ax.text(start + mb.predicted_s / 2, -0.01 * step_plan.num_ranks, f"mb{index}", ha="center", va="bottom",
                fontsize=8)
        for g in mb.groups:
            ax.broken_barh([(start, g.predicted_s)], (g.first_rank, g.degree), facecolors=colours[g.degree],
                           edgecolors="white", linewidth=0.5)
            if g.predicted_s > 0.04 * step_plan.predicted_s and g.degree >= max(1, step_plan.num_ranks // 32):
                ax.text(start + g.predicted_s / 2, g.first_rank + g.degree / 2, f"SP{g.degree}",
                        ha="center", va="center", fontsize=7, color="white")
        start += mb.predicted_s
        ax.axvline(start, color="black", linewidth=0.8)
    ax.set_xlim(0, max(start, 1e-9))
    ax.set_ylim(step_plan.num_ranks, 0)
    ax.set_xlabel("predicted seconds (cost model); black lines end micro-batches")
    ax.set_ylabel("rank")
    ax.set_title(f"{title}: {step_plan.predicted_s:.2f} s, {len(lengths)} sequences", pad=16)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[d]) for d in degrees]
    ax.legend(handles, [f"SP{d}" for d in degrees], loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _positive(flag: str, value: int) -> int:
    if value <= 0:
        raise ValueError(f"{flag} must be a positive integer, got {value}")
    return value


def _memory_bytes(gib: float) -> int:
    if not gib > 0:
        raise ValueError(f"--memory-gib must be positive, got {gib}")
    return int(gib * GIB)
