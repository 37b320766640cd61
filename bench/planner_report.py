"""The planner benchmark's report: the issue's targets (PASS/MISS), the machine, and the
markdown table (bench/planner_bench.py writes it)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from solver import BASELINES


def check_targets(rows: list[dict]) -> list[dict]:
    """The issue's targets, each with the measured value."""
    fast = {(r["workload"], r["num_ranks"]): r for r in rows if r["strategy"] == "fast" and "mean_step_s" in r}
    by = {(r["workload"], r["num_ranks"], r["strategy"]): r for r in rows if "mean_step_s" in r}
    checks: list[dict] = []

    def add(target: str, ok: bool, detail: str) -> None:
        checks.append({"target": target, "result": "PASS" if ok else "MISS", "detail": detail})

    for n, want in ((64, 1.15), (1024, 1.5)):
        r = fast.get(("wikipedia", n))
        if r:
            add(f"fast >= {want}x over the strongest baseline, Wikipedia N={n}", r["speedup_vs_best_baseline"] >= want,
                f"{r['speedup_vs_best_baseline']:.3f}x over {r['best_baseline']}")
    for (w, n), r in fast.items():
        limit = 0.1 if n <= 64 else 1.0 if n >= 1024 else None
        if limit is not None:
            add(f"fast median solve <= {limit:g} s CPU ({w}, N={n})", r["solve_cpu_s_median"] <= limit,
                f"{r['solve_cpu_s_median']:.3f} s CPU (wall {r['solve_s_median']:.3f} s, LP {r['lp_s_median']:.3f} s)")
        gap = 0.05 if n <= 64 else 0.10 if n >= 1024 else None
        if gap is not None:
            add(f"fast gap to the lower bound <= {gap:.0%} ({w}, N={n})", r["lower_bound_gap"] <= gap,
                f"{100 * r['lower_bound_gap']:.1f}%")
        if "vs_flexsp" in r:
            add(f"fast within 2% of the MILP's plan ({w}, N={n})", r["vs_flexsp"] <= 0.02,
                f"{100 * r['vs_flexsp']:+.2f}% vs flexsp (MIP gap median "
                f"{100 * by[(w, n, 'flexsp')]['mip_gap_median']:.2f}%)")
        slower = [b for b in BASELINES if (w, n, b) in by and any(
            f > o * (1 + 1e-9) for f, o in zip(r["step_s"], by[(w, n, b)]["step_s"]))]
        add(f"fast never slower than a baseline on any step ({w}, N={n})", not slower,
            "slower than " + ", ".join(slower) if slower else f"{len(r['step_s'])} steps")
    return checks


def machine_info(cores: list[int]) -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    nproc = subprocess.run(["nproc", "--all"], capture_output=True, text=True).stdout.strip() or str(os.cpu_count())
    return {"uname": " ".join(platform.uname()), "nproc": nproc, "cpu": cpu, "cores_available": cores,
            "python": platform.python_version()}


def render_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Planner benchmark ({report['date_utc']})",
        "",
        f"Cost-model predictions (seconds per global batch) for {report['model']}, max length "
        f"{report['max_len']:,}, {report['per_rank']} sequences per rank, seed {report['seed']}; not GPU measurements.",
        f"Wikipedia: {report['wikipedia']}. Synthetic workloads: `solver/synthetic.py`. flexsp (N=64 only): "
        f"MILP time limit {report['flexsp_time_limit_s']:g} s per micro-batch.",
        f"Machine: `{m['uname']}`; nproc {m['nproc']}; CPU {m['cpu']}; one pinned core, 1 BLAS thread; Python "
        f"{m['python']}; 1-min load average at start/end {m['load_average_start_end']} (shared machine: wall "
        f"times are inflated, CPU times much less). Total wall time {report['wall_s']:.0f} s.",
        f"Command: `{report['command']}`",
        "",
        "`vs best` = the strongest baseline's mean step / this mean step (the strongest baseline of each setting "
        "is named on the fast row). `LB gap` = mean of step / proven lower bound - 1. `vs MILP bound` = mean of "
        "step / the flexsp MILP's proven bound for its own (Blaster) split - 1, where flexsp ran. flexsp plans "
        "only the first steps of each N=64 setting; its row (and fast's `vs flexsp`) compares on those steps. "
        "Solve times are medians of one plan() call; `LP` is fast's PuLP + HiGHS part.",
        "",
        "| workload | N | strategy | vs best | mean step s | LB gap | vs MILP bound | CPU s | CPU p95 s | wall s "
        "| LP s | notes |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        lines.append(_row(r))
    lines += ["", "| target | result | measured |", "|---|---|---|"]
    lines += [f"| {c['target']} | {c['result']} | {c['detail']} |" for c in report["targets"]]
    return "\n".join(lines) + "\n"


def _row(r: dict) -> str:
    head = f"| {r['workload']} | {r['num_ranks']} | {r['strategy']} |"
    if "mean_step_s" not in r:
        return head + " - | - | - | - | - | - | - | - | " + r["note"] + " |"
    notes = [r["note"]] if r["note"] else []
    if r["strategy"] == "fast":
        notes.append(f"best baseline: {r['best_baseline']}")
        if "vs_flexsp" in r:
            notes.append(f"{100 * r['vs_flexsp']:+.2f}% vs flexsp")
    if r.get("mip_gap_median") is not None:
        notes.append(f"MIP gap median {100 * r['mip_gap_median']:.2f}%")
    if r["strategy"] == "flexsp":
        notes.append(f"{r['steps_run']} steps")
    milp = f"{100 * r['milp_bound_gap']:+.1f}%" if "milp_bound_gap" in r else "-"
    lp = f"{r['lp_s_median']:.4f}" if r.get("lp_s_median") is not None else "-"
    return (
        f"{head} {r['speedup_vs_best_baseline']:.3f}x | {r['mean_step_s']:.3f} | {100 * r['lower_bound_gap']:.1f}% "
        f"| {milp} | {r['solve_cpu_s_median']:.4f} | {r['solve_cpu_s_p95']:.4f} | {r['solve_s_median']:.4f} | {lp} "
        f"| {'; '.join(notes)} |"
    )
