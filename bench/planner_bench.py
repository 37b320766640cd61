"""Planner benchmark: the FlexSP paper's setting, in the cost model, on one CPU core.

GPT-7B/13B/30B x max length 192K/384K x the Wikipedia lengths (../shared/data), N = 64
ranks, global batch 512, every strategy planning the same batches; plus a scale run at
N = 1024, batch 8192. Times are cost-model predictions of the plans (the planners' own
objective), solve times are measured wall seconds of one plan() call on one pinned core.
Prints one table, checks the targets (PASS/MISS) and writes markdown + JSON to
bench/results/ with the machine and the command.

    .venv/bin/python bench/planner_bench.py            # full run (tens of minutes: the MILP)
    .venv/bin/python bench/planner_bench.py --quick    # smoke run, about a minute
"""

from __future__ import annotations

import os

# one core, one BLAS thread: set before numpy is imported so solve times are single-core
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from solver.cost import load_preset, preset_cluster  # noqa: E402
from solver.plan import PlanError  # noqa: E402
from solver.simulate import StrategyRun, plan_and_check, summarize_runs, workload_static_degree  # noqa: E402
from solver.workloads import BatchSampler, FileSource, get_workload, parse_length  # noqa: E402

# FlexSP's Wikipedia lengths file: $HSP_WIKIPEDIA_LENGTHS, else a sibling shared/ checkout if present
DEFAULT_DATA = os.environ.get("HSP_WIKIPEDIA_LENGTHS") or str(ROOT.parent / "shared" / "data" / "wikipedia_lengths.txt")
ALL = ("static", "batch-ada", "megatron-dcp", "flexsp", "fast")


def main() -> int:
    args = parse_args()
    cores_before = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cores_before[0] if cores_before else 0})
    source, data_note = load_workload(args.data)
    # other processes on the machine inflate solve times; the load average says how much
    load_start = round(os.getloadavg()[0], 1)
    settings = build_settings(args)
    started = time.perf_counter()
    rows = run_all(settings, source, args, cores_before)
    checks = check_targets(rows, args)
    machine = machine_info(cores_before)
    machine["load_average_start_end"] = [load_start, round(os.getloadavg()[0], 1)]
    report = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine,
        "workload": data_note,
        "flexsp_time_limit_s": args.flexsp_time_limit,
        "jobs": args.jobs,
        "scale_flexsp_step_budget_s": args.scale_flexsp_budget,
        "wall_s": round(time.perf_counter() - started, 1),
        "rows": rows,
        "targets": checks,
    }
    text = render_markdown(report)
    print(text)
    write_results(report, text, args)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="Wikipedia lengths file (built-in summary if absent)")
    parser.add_argument("--steps", type=int, default=10, help="global batches per N=64 setting (default 10)")
    parser.add_argument("--scale-steps", type=int, default=5, help="global batches of the N=1024 run (default 5)")
    # 5 s: on GPT-7B/192K batches, 10 s and 30 s limits improved flexsp's plans by < 0.2%
    parser.add_argument("--flexsp-time-limit", type=float, default=5.0,
                        help="flexsp's MILP time limit per micro-batch, seconds (default 5)")
    parser.add_argument("--scale-flexsp-budget", type=float, default=300.0,
                        help="at N=1024, flexsp is dropped if one global batch takes longer than this (s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: GPT-7B/192K only, 2 steps, small scale run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1,
                        help="run settings in this many processes, each pinned to one core (default 1)")
    parser.add_argument("--out", default=None, help="results basename (default bench/results/planner[-quick])")
    return parser.parse_args()


def load_workload(path: str):
    if Path(path).is_file():
        source = FileSource.from_file(path)
        return source, f"Wikipedia lengths file {path} ({source.lengths.size:,} sequences, sampled with replacement)"
    print(f"note: {path} not found; using the built-in `wikipedia` quantile summary instead", file=sys.stderr)
    return get_workload("wikipedia"), f"built-in `wikipedia` quantile summary ({path} not found)"


def build_settings(args) -> list[dict]:
    if args.quick:
        return [
            dict(model="gpt-7b", max_len="192k", num_ranks=64, batch=512, steps=2, strategies=ALL),
            dict(model="gpt-7b", max_len="192k", num_ranks=1024, batch=8192, steps=1,
                 strategies=("static", "batch-ada", "megatron-dcp", "fast")),
        ]
    out = [
        dict(model=m, max_len=L, num_ranks=64, batch=512, steps=args.steps, strategies=ALL)
        for m in ("gpt-7b", "gpt-13b", "gpt-30b")
        for L in ("192k", "384k")
    ]
    out.append(dict(model="gpt-7b", max_len="192k", num_ranks=1024, batch=8192, steps=args.scale_steps,
                    strategies=ALL))
    return out


def run_all(settings: list[dict], source, args, cores: list[int]) -> list[dict]:
    """Settings one after another, or in `--jobs` processes each pinned to one core."""
    if args.jobs <= 1:
        return [row for setting in settings for row in run_setting(setting, source, args)]
    import multiprocessing

    tasks = [(s, source, args, cores[i % len(cores)] if cores else None) for i, s in enumerate(settings)]
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        return [row for rows in pool.starmap(_pinned_setting, tasks, chunksize=1) for row in rows]


def _pinned_setting(setting: dict, source, args, core: int | None) -> list[dict]:
    if core is not None:
        os.sched_setaffinity(0, {core})
    return run_setting(setting, source, args)


def run_setting(setting: dict, source, args) -> list[dict]:
    max_len = parse_length(setting["max_len"])
    spec = preset_cluster(setting["model"], setting["num_ranks"])
    cost = load_preset(setting["model"], max_len)
    sampler = BatchSampler(source, setting["batch"], max_len, args.seed)
    static_degree = workload_static_degree(source, max_len, spec, cost)
    name = f"{setting['model']}/{setting['max_len'].upper()}/N={spec.num_ranks}/B={setting['batch']}"
    scale = spec.num_ranks > 64
    runs, notes = {}, {}
    for strategy in setting["strategies"]:
        options = {"static_degree": static_degree} if strategy == "static" else {}
        if strategy == "flexsp":
            options["solve_time_limit_s"] = args.flexsp_time_limit
        budget = args.scale_flexsp_budget if (scale and strategy == "flexsp") else None
        print(f"[{name}] {strategy} ...", file=sys.stderr, flush=True)
        run, note = run_strategy(sampler, spec, cost, strategy, options, setting["steps"], budget)
        if run is None:
            notes[strategy] = note
            continue
        runs[strategy], notes[strategy] = run, note
    stats = summarize_runs(runs)
    rows = []
    for strategy in setting["strategies"]:
        row = {"setting": name, "model": setting["model"], "max_len": max_len, "num_ranks": spec.num_ranks,
               "batch": setting["batch"], "strategy": strategy, "note": notes.get(strategy, "")}
        if strategy == "static":
            row["note"] = f"SP{static_degree}" + (f"; {row['note']}" if row["note"] else "")
        if strategy in stats:
            row.update(stats[strategy].to_dict())
        rows.append(row)
    return rows


def run_strategy(sampler, spec, cost, strategy, options, num_steps, budget_s):
    """(StrategyRun, note), or (None, why) when a step ran past `budget_s` seconds."""
    run = StrategyRun(strategy)
    for step in range(num_steps):
        try:
            step_plan, wall_s = plan_and_check(sampler.batch(step), spec, cost, strategy, options)
        except PlanError as err:  # a planner bug must show in the table, not abort the whole run
            return None, f"INVALID plan at step {step}: {err.violations[0]} ({len(err.violations)} violations)"
        if budget_s is not None and wall_s > budget_s:
            return None, f"not run: step {step} took {wall_s:.0f} s > budget {budget_s:.0f} s"
        run.add(step_plan, wall_s)
    note = []
    if sum(run.time_limited):
        note.append(f"{sum(run.time_limited)}/{num_steps} hit the time limit")
    if sum(run.optimal):
        note.append(f"{sum(run.optimal)}/{num_steps} proven optimal")
    return run, "; ".join(note)


def check_targets(rows: list[dict], args) -> list[dict]:
    by = {(r["setting"], r["strategy"]): r for r in rows if "mean_step_s" in r}
    settings = sorted({r["setting"] for r in rows}, key=[r["setting"] for r in rows].index)
    checks = []

    def add(target: str, ok: bool, detail: str) -> None:
        checks.append({"target": target, "result": "PASS" if ok else "MISS", "detail": detail})

    key = next((s for s in settings if s.startswith("gpt-7b/192K/N=64/")), None)
    if key and (key, "fast") in by:
        sp = by[(key, "fast")]["speedup_vs_static"]
        add("fast >= 1.7x over static on GPT-7B/192K/Wikipedia, N=64", sp >= 1.7, f"{sp:.2f}x")
    for s in settings:
        fast, flex = by.get((s, "fast")), by.get((s, "flexsp"))
        failed = next((r["note"] for r in rows if r["setting"] == s and r["strategy"] == "fast" and not fast), None)
        if failed is not None:
            add(f"fast produces valid plans ({s})", False, failed)
        if fast and flex:
            add(f"fast mean step <= flexsp ({s})", fast["mean_step_s"] <= flex["mean_step_s"] * (1 + 1e-9),
                f"{fast['mean_step_s']:.3f} s vs {flex['mean_step_s']:.3f} s")
            ratio = flex["solve_s_median"] / max(fast["solve_s_median"], 1e-9)
            add(f"fast solves >= 100x faster than flexsp ({s})", ratio >= 100,
                f"median {fast['solve_s_median']:.4f} s vs {flex['solve_s_median']:.3f} s = {ratio:.0f}x")
        elif fast and any(r["setting"] == s and r["strategy"] == "flexsp" for r in rows):
            dropped = next(r["note"] for r in rows if r["setting"] == s and r["strategy"] == "flexsp")
            add(f"fast mean step <= flexsp ({s})", False, f"flexsp did not finish: {dropped}")
        if fast:
            limit = 0.1 if fast["num_ranks"] <= 64 else 1.0
            add(f"fast median solve <= {limit:g} s ({s})", fast["solve_s_median"] <= limit,
                f"{fast['solve_s_median']:.4f} s (p95 {fast['solve_s_p95']:.4f} s)")
    return checks


def machine_info(cores_before: list[int]) -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    nproc = subprocess.run(["nproc", "--all"], capture_output=True, text=True).stdout.strip() or str(os.cpu_count())
    return {"uname": " ".join(platform.uname()), "nproc": nproc, "cpu": cpu,
            "pinned_to_core": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "cores_used": cores_before,
            "cores_available": len(cores_before), "python": platform.python_version()}


def render_markdown(report: dict) -> str:
    m = report["machine"]
    pinning = f"solves pinned to core {m['pinned_to_core']}"
    if report["jobs"] > 1:
        pinning = f"{report['jobs']} settings at a time, each process pinned to one of cores {m['cores_used']}"
    lines = [
        f"# Planner benchmark ({report['date_utc']})",
        "",
        "Cost-model predictions (seconds per global batch), not measurements on GPUs.",
        f"Workload: {report['workload']}. flexsp MILP time limit: {report['flexsp_time_limit_s']:g} s per "
        f"micro-batch; at N=1024 flexsp is dropped if one batch takes > {report['scale_flexsp_step_budget_s']:g} s.",
        f"Machine: `{m['uname']}`; nproc {m['nproc']}; CPU {m['cpu']}; {pinning} with 1 BLAS thread; "
        f"Python {m['python']}; 1-min load average at start/end "
        f"{m['load_average_start_end']} (other jobs shared the cores). Total wall time {report['wall_s']:.0f} s.",
        f"Command: `{report['command']}`",
        "",
        "| setting | strategy | mean step s | vs static | vs batch-ada | solve median s | solve p95 s | LB gap "
        "| notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        if "mean_step_s" not in r:
            lines.append(f"| {r['setting']} | {r['strategy']} | - | - | - | - | - | - | {r['note']} |")
            continue
        lines.append(
            f"| {r['setting']} | {r['strategy']} | {r['mean_step_s']:.2f} | {_x(r['speedup_vs_static'])} | "
            f"{_x(r['speedup_vs_batch_ada'])} | {r['solve_s_median']:.4f} | {r['solve_s_p95']:.4f} | "
            f"{100 * r['lower_bound_gap']:.1f}% | {r['note']} |"
        )
    lines += ["", "| target | result | measured |", "|---|---|---|"]
    lines += [f"| {c['target']} | {c['result']} | {c['detail']} |" for c in report["targets"]]
    return "\n".join(lines) + "\n"


def _x(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def write_results(report: dict, text: str, args) -> None:
    base = Path(args.out) if args.out else ROOT / "bench" / "results" / ("planner-quick" if args.quick else "planner")
    base.parent.mkdir(parents=True, exist_ok=True)
    base.with_suffix(".md").write_text(text)
    base.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {base.with_suffix('.md')} and {base.with_suffix('.json')}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
