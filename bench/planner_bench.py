"""Planner benchmark: every strategy on Wikipedia and long-tailed synthetic workloads at
N = 64 / 256 / 1,024 ranks (GPT-7B, max length 192K, 8 sequences per rank), one core.

Times are cost-model predictions of the plans (the planners' own objective); solve times
are CPU seconds of one plan() call (the planner's thread, what a loaded machine does not
inflate) and wall seconds, with fast's LP (PuLP build + HiGHS solve) separately. One
table: per workload and N, every strategy with its speedup over the strongest baseline
(the fastest of static, batch-ada, dcp-greedy, static-bfd, batch-ada-bfd on that
setting), its gap to the proven lower bound and, where the flexsp MILP ran (N = 64), to
the MILP's proven bound. Checks the issue's targets (PASS/MISS) and writes
bench/results/planner[-quick].{md,json} with the machine, command, date and load average.

    python bench/planner_bench.py --data /path/to/wikipedia_lengths.txt   # full, ~30 min
    python bench/planner_bench.py --quick                                 # a few minutes
"""

from __future__ import annotations

import os

# one core, one BLAS thread: set before numpy is imported so solve times are single-core
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from planner_report import check_targets, machine_info, render_markdown  # noqa: E402 (bench/ is on sys.path)
from solver import BASELINES  # noqa: E402
from solver.cost import load_preset, preset_cluster  # noqa: E402
from solver.plan import PlanError  # noqa: E402
from solver.simulate import StrategyRun, plan_and_check, summarize_runs, workload_static_degree  # noqa: E402
from solver.workloads import BatchSampler, FileSource, get_workload  # noqa: E402

DEFAULT_DATA = os.environ.get("HSP_WIKIPEDIA_LENGTHS") or str(ROOT.parent / "shared" / "data" / "wikipedia_lengths.txt")
SYNTHETIC = ("synthetic-pareto", "synthetic-pareto-heavy", "synthetic-lognormal", "synthetic-longdoc",
             "synthetic-bimodal", "synthetic-all-long", "synthetic-short")
PER_RANK = 8
"""Sequences per rank in a global batch: 512 at N=64, 8,192 at N=1,024."""
MAX_LEN = 192_000
MODEL = "gpt-7b"


def main() -> int:
    args = parse_args()
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if hasattr(os, "sched_setaffinity") and args.jobs <= 1:
        os.sched_setaffinity(0, {cores[0] if cores else 0})
    wiki, data_note = load_wikipedia(args.data)
    load_start = round(os.getloadavg()[0], 1)
    started = time.perf_counter()
    rows = run_all(build_settings(args), wiki, args, cores)
    machine = machine_info(cores)
    machine["load_average_start_end"] = [load_start, round(os.getloadavg()[0], 1)]
    report = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine,
        "wikipedia": data_note,
        "model": MODEL, "max_len": MAX_LEN, "per_rank": PER_RANK, "seed": args.seed,
        "flexsp_time_limit_s": args.flexsp_time_limit,
        "wall_s": round(time.perf_counter() - started, 1),
        "rows": rows,
        "targets": check_targets(rows),
    }
    text = render_markdown(report)
    print(text)
    write_results(report, text, args)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA, help="Wikipedia lengths file (built-in summary if absent)")
    parser.add_argument("--steps", type=int, default=10, help="global batches per setting at N=64 (default 10)")
    parser.add_argument("--scale-steps", type=int, default=3, help="global batches at N=256 and 1,024 (default 3)")
    parser.add_argument("--flexsp-steps", type=int, default=3, help="batches flexsp plans at N=64 (default 3)")
    parser.add_argument("--flexsp-time-limit", type=float, default=2.0,
                        help="flexsp's MILP time limit per micro-batch, seconds (default 2)")
    parser.add_argument("--quick", action="store_true", help="a few minutes: fewer steps, N=64 and 1,024 only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="settings in this many processes, one core each")
    parser.add_argument("--out", default=None, help="results basename (default bench/results/planner[-quick])")
    return parser.parse_args()


def load_wikipedia(path: str):
    if Path(path).is_file():
        source = FileSource.from_file(path)
        return source, f"Wikipedia lengths file {path} ({source.lengths.size:,} sequences, sampled with replacement)"
    print(f"note: {path} not found; using the built-in `wikipedia` quantile summary instead", file=sys.stderr)
    return get_workload("wikipedia"), f"built-in `wikipedia` quantile summary ({path} not found)"


def build_settings(args) -> list[dict]:
    names = ("wikipedia", *SYNTHETIC)
    if args.quick:
        out = [dict(workload=w, num_ranks=64, steps=2, flexsp_steps=1 if w == "wikipedia" else 0) for w in names]
        return out + [dict(workload=w, num_ranks=1024, steps=1, flexsp_steps=0)
                      for w in ("wikipedia", "synthetic-longdoc", "synthetic-pareto")]
    out = [dict(workload=w, num_ranks=64, steps=args.steps, flexsp_steps=args.flexsp_steps) for w in names]
    return out + [dict(workload=w, num_ranks=n, steps=args.scale_steps, flexsp_steps=0)
                  for n in (256, 1024) for w in names]


def run_all(settings: list[dict], wiki, args, cores: list[int]) -> list[dict]:
    if args.jobs <= 1:
        return [row for setting in settings for row in run_setting(setting, wiki, args)]
    import multiprocessing

    tasks = [(s, wiki, args, cores[i % len(cores)] if cores else None) for i, s in enumerate(settings)]
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        return [row for rows in pool.starmap(_pinned_setting, tasks, chunksize=1) for row in rows]


def _pinned_setting(setting: dict, wiki, args, core: int | None) -> list[dict]:
    if core is not None:
        os.sched_setaffinity(0, {core})
    return run_setting(setting, wiki, args)


def run_setting(setting: dict, wiki, args) -> list[dict]:
    n = setting["num_ranks"]
    spec, cost = preset_cluster(MODEL, n), load_preset(MODEL, MAX_LEN)
    source = wiki if setting["workload"] == "wikipedia" else get_workload(setting["workload"])
    sampler = BatchSampler(source, PER_RANK * n, MAX_LEN, args.seed)
    static_degree = workload_static_degree(source, MAX_LEN, spec, cost)
    strategies = [*BASELINES, "fast"] + (["flexsp"] if setting["flexsp_steps"] else [])
    runs, notes, milp_bounds = {}, {}, []
    for strategy in strategies:
        options = {"static_degree": static_degree} if strategy.startswith("static") else {}
        if strategy == "flexsp":
            options["solve_time_limit_s"] = args.flexsp_time_limit
        steps = setting["flexsp_steps"] if strategy == "flexsp" else setting["steps"]
        print(f"[{setting['workload']} N={n}] {strategy} x {steps} ...", file=sys.stderr, flush=True)
        run = StrategyRun(strategy)
        for step in range(steps):
            try:
                step_plan, wall_s = plan_and_check(sampler.batch(step), spec, cost, strategy, options)
            except PlanError as err:  # a planner bug must show in the table, not abort the run
                notes[strategy] = f"INVALID plan at step {step}: {err.violations[0]}"
                break
            run.add(step_plan, wall_s)
            if strategy == "flexsp":
                milp_bounds.append(sum(step_plan.info["mip_bound_s"]))
        else:
            runs[strategy] = run
    stats = summarize_runs(runs)
    if "flexsp" in runs:  # flexsp planned only the first k steps: compare it on those
        k = len(runs["flexsp"].step_s)
        stats["flexsp"] = summarize_runs({s: _first(r, k) for s, r in runs.items()})["flexsp"]
    rows = []
    for strategy in strategies:
        row = {"workload": setting["workload"], "num_ranks": n, "batch": PER_RANK * n, "strategy": strategy,
               "note": notes.get(strategy, "")}
        if strategy in stats:
            row.update(stats[strategy].to_dict(per_step=True))
            row["steps_run"] = len(runs[strategy].step_s)
            if strategy.startswith("static"):
                row["note"] = f"SP{static_degree}"
            if milp_bounds and strategy in ("fast", "flexsp"):
                k = len(milp_bounds)  # flexsp ran the first k steps
                row["milp_bound_gap"] = float(np.mean([s / b - 1 for s, b in zip(runs[strategy].step_s[:k], milp_bounds)]))
            if strategy == "fast" and "flexsp" in runs:
                k = len(runs["flexsp"].step_s)
                row["vs_flexsp"] = float(np.mean(runs["fast"].step_s[:k]) / np.mean(runs["flexsp"].step_s) - 1)
        rows.append(row)
    return rows


def _first(run: StrategyRun, k: int) -> StrategyRun:
    """The run's first k steps."""
    return StrategyRun(run.strategy, **{f: getattr(run, f)[:k] for f in
                                        ("step_s", "solve_s", "cpu_s", "lp_s", "gaps", "optimal", "time_limited")},
                       mip_gaps=run.mip_gaps)


def write_results(report: dict, text: str, args) -> None:
    base = Path(args.out) if args.out else ROOT / "bench" / "results" / ("planner-quick" if args.quick else "planner")
    base.parent.mkdir(parents=True, exist_ok=True)
    base.with_suffix(".md").write_text(text)
    base.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {base.with_suffix('.md')} and {base.with_suffix('.json')}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
