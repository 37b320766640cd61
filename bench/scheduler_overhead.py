"""Scheduler overhead of `hsp train` on the default run (a benchmark, not a test).

Runs the default config (embedded local Ray, 2 workers, tiny model) and splits each
step's driver-side time into the worker's own step and what the scheduler adds:

  step time        = unhidden planning + (dispatch -> gather wall time)
  Ray transport    = dispatch -> gather wall time - slowest rank's time inside its actor
  materialisation  = slowest rank's time turning batch indices into tokens
  scheduler overhead = unhidden planning + Ray transport           (target <= 5%)

and how much planner time was hidden behind execution (planning step t+1 while step
t runs). Step 1 is reported apart: nothing runs while the first plan is made.

    python bench/scheduler_overhead.py               # 100 steps, writes bench/results/scheduler_overhead.{md,json}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SHARE = 0.05


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--config", default=None, help="TOML/YAML config (default: the shipped default.toml)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scheduler_overhead"),
                        help="output path without suffix (.md and .json are written)")
    args = parser.parse_args(argv)

    from cluster.commands.train import DEFAULT_CONFIG
    from cluster.config import build_config, read_file
    from cluster.trainer import run_training

    run_dir = tempfile.mkdtemp(prefix="hsp-bench-")
    overrides = {
        "train.steps": args.steps, "cluster.num_workers": args.num_workers, "metrics.port": 0,
        "train.run_dir": run_dir, "checkpoint.every_steps": 0,
    }
    config = build_config(read_file(args.config or DEFAULT_CONFIG), overrides)
    began = time.time()
    summary = run_training(config, progress=False, out=sys.stderr)
    history = [json.loads(line) for line in open(Path(run_dir) / "history.jsonl")]
    report = {
        "command": " ".join(["python", "bench/scheduler_overhead.py", *sys.argv[1:]]),
        "machine": machine(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(began)),
        "steps": len(history),
        "loss_first_last": [summary["loss_first"], summary["loss_last"]],
        "steady": breakdown(history[1:]),
        "first_step": breakdown(history[:1]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    Path(args.out + ".md").write_text(text)
    print(text)
    return 0


def breakdown(rows: list[dict]) -> dict:
    """Per-step medians (ms) and shares of the total step time (ratio of sums)."""
    def col(f):
        return np.array([f(r) for r in rows], dtype=np.float64)

    parts = {
        "step": col(lambda r: r["plan_wait_s"] + r["wall_s"]),
        "worker_step": col(lambda r: r["measured_s"]),
        "unhidden_planning": col(lambda r: r["plan_wait_s"]),
        "ray_transport": col(lambda r: max(0.0, r["wall_s"] - r["in_actor_s"])),
        "materialisation": col(lambda r: r["materialise_s"]),
        "worker_pre_step": col(lambda r: max(0.0, r["in_actor_s"] - r["measured_s"] - r["materialise_s"])),
    }
    parts["scheduler_overhead"] = parts["unhidden_planning"] + parts["ray_transport"]
    parts["overhead_with_data"] = parts["scheduler_overhead"] + parts["materialisation"] + parts["worker_pre_step"]
    total = parts["step"].sum()
    solve = col(lambda r: r["solve_s"])
    hidden = np.maximum(0.0, solve - parts["unhidden_planning"])
    return {
        "num_steps": len(rows),
        "median_ms": {k: float(np.median(v) * 1e3) for k, v in parts.items()},
        "share": {k: float(v.sum() / total) for k, v in parts.items()},
        "planner_solve_s_total": float(solve.sum()),
        "planner_hidden_s_total": float(hidden.sum()),
        "planner_hidden_share": float(hidden.sum() / solve.sum()) if solve.sum() > 0 else 0.0,
    }


LABELS = {
    "step": "step time (driver view)",
    "worker_step": "worker step (slowest rank, SupervisedStep.run_step)",
    "unhidden_planning": "planning not hidden (driver waited for the plan)",
    "ray_transport": "Ray dispatch + gather (wall - time inside actors)",
    "scheduler_overhead": "**scheduler overhead** (unhidden planning + Ray)",
    "materialisation": "data: indices -> tokens in the actor",
    "worker_pre_step": "worker pre-step checks (validate, pack)",
    "overhead_with_data": "overhead incl. data and pre-step",
}


def markdown(r: dict) -> str:
    s, f = r["steady"], r["first_step"]
    m = r["machine"]
    lines = [
        f"# Scheduler overhead of `hsp train` ({r['date_utc']} UTC)",
        "",
        f"Default run (embedded local Ray, tiny model, synthetic Wikipedia-shaped corpus), {r['steps']} steps; "
        f"loss {r['loss_first_last'][0]:.3f} -> {r['loss_first_last'][1]:.3f}.",
        f"Machine: `{m['uname']}`; nproc {m['nproc']}; load average at start {m['loadavg']}; Python {m['python']}.",
        f"Command: `{r['command']}`",
        "",
        f"Steps 2..{r['steps']} (step 1 is planned before anything runs):",
        "",
        "| per step | median ms | share of step time |",
        "|---|---:|---:|",
    ]
    for key, label in LABELS.items():
        lines.append(f"| {label} | {s['median_ms'][key]:.1f} | {100 * s['share'][key]:.1f}% |")
    verdict = "PASS" if s["share"]["scheduler_overhead"] <= TARGET_SHARE else "MISS"
    lines += [
        "",
        f"Scheduler overhead {100 * s['share']['scheduler_overhead']:.1f}% of step time "
        f"(target <= {100 * TARGET_SHARE:.0f}%: {verdict}).",
        f"Planner: {s['planner_solve_s_total']:.2f} s of solving over {s['num_steps']} steps, "
        f"{s['planner_hidden_s_total']:.2f} s ({100 * s['planner_hidden_share']:.1f}%) hidden behind execution. "
        f"Step 1: {f['median_ms']['unhidden_planning']:.1f} ms of planning not hidden (nothing to overlap with).",
        "",
    ]
    return "\n".join(lines)


def machine() -> dict:
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or str(os.cpu_count())
    return {
        "uname": " ".join(platform.uname()),
        "nproc": nproc,
        "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "python": platform.python_version(),
    }


if __name__ == "__main__":
    sys.exit(main())
