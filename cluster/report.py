"""What a finished `hsp train` run leaves behind: summary table, summary.json,
history.jsonl and PNG plots in the run directory."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from cluster import plots
from solver.plan import StepPlan


def summarize(history: list[dict], *, restarts: int, recoveries: list[dict], drift: float, extra: dict) -> dict:
    """Plain-value summary of a run's history (all steps, including resumed ones)."""
    if not history:
        return {"steps": 0, **extra}
    losses = [h["loss"] for h in history]
    wall = sum(h["wall_s"] for h in history)
    tokens = sum(h["num_tokens"] for h in history)
    step_time = sum(h["wall_s"] + h["plan_wait_s"] for h in history)
    k = max(1, min(10, len(losses) // 4))
    return {
        "steps": len(history),
        "first_step": history[0]["step"],
        "last_step": history[-1]["step"],
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_first_mean": float(np.mean(losses[:k])),
        "loss_last_mean": float(np.mean(losses[-k:])),
        "tokens": tokens,
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "step_s_median": statistics.median(h["wall_s"] for h in history),
        "predicted_s_median": statistics.median(h["predicted_s"] for h in history),
        "measured_s_median": statistics.median(h["measured_s"] for h in history),
        "measured_over_predicted": drift,
        "solve_ms_median": 1e3 * statistics.median(h["solve_s"] for h in history),
        "planner_fallbacks": sum(bool(h["fallback"]) for h in history),
        "overhead_share": sum(h["overhead_s"] for h in history) / step_time if step_time > 0 else 0.0,
        "imbalance_median": statistics.median(h["imbalance"] for h in history),
        "peak_memory_bytes_max": max(max(h["peak_memory_bytes"]) for h in history),
        "mfu_median": statistics.median(h.get("mfu", 0.0) for h in history),
        "peak_flops_per_s": statistics.median(h.get("peak_flops_per_s", 0.0) for h in history),
        "mfu_basis": "model FLOPs (6 P_matmul s + 6 L H hd s^2 per causal sequence, hsp.engine.flops: P_matmul "
                     "counts the GQA Q/K/V, output, 3 SwiGLU and vocabulary projections) / (step wall s x the ranks' "
                     "summed peak, measured with a 512^3 matmul in the compute dtype at start-up)",
        "memory": {
            "model_state_bytes_per_rank": max(h.get("model_state_bytes", 0) for h in history),
            "activation_peak_bytes_per_rank": max(h.get("activation_peak_bytes", 0) for h in history),
        },
        "worker_restarts": restarts,
        "recoveries": recoveries,
        **extra,
    }


def format_table(summary: dict) -> str:
    if not summary.get("steps"):
        return "no steps run"
    rows = [
        ("steps", f"{summary['first_step']}..{summary['last_step']} ({summary['steps']})"),
        ("loss (first -> last)", f"{summary['loss_first']:.4f} -> {summary['loss_last']:.4f}"),
        (f"loss (mean of first / last steps)", f"{summary['loss_first_mean']:.4f} -> {summary['loss_last_mean']:.4f}"),
        ("tokens", f"{summary['tokens']:,} ({summary['tokens_per_s']:,.0f} tok/s)"),
        ("step wall s (median)", f"{summary['step_s_median']:.3f}"),
        ("predicted / measured step s (median)", f"{summary['predicted_s_median']:.3f} / {summary['measured_s_median']:.3f}"),
        ("measured / predicted (online rescale)", f"{summary['measured_over_predicted']:.2f}"),
        ("solver ms (median)", f"{summary['solve_ms_median']:.1f} ({summary['planner_fallbacks']} fallbacks)"),
        ("time outside worker steps", f"{100 * summary['overhead_share']:.1f}% (planning wait, Ray, data)"),
        ("imbalance (median)", f"{summary['imbalance_median']:.2f}"),
        ("MFU (median)", f"{100 * summary['mfu_median']:.2f}% of a measured matmul peak of "
                         f"{summary['peak_flops_per_s'] / 1e9:.1f} GFLOP/s (all ranks)"),
        ("peak memory per rank", f"{summary['peak_memory_bytes_max'] / 2**20:.0f} MiB (process RSS)"),
        ("model states per rank (measured / predicted)", _state_bytes(summary)),
        ("worker restarts", str(summary["worker_restarts"])),
        ("run dir", str(summary.get("run_dir", ""))),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _state_bytes(summary: dict) -> str:
    memory = summary.get("memory", {})
    measured, predicted = memory.get("model_state_bytes_per_rank", 0), memory.get("predicted_model_state_bytes_per_rank")
    text = f"{measured / 2**20:.2f} MiB"
    return text + (f" / {predicted / 2**20:.2f} MiB" if predicted else "")


def write_run_dir(run_dir: str | Path, *, history: list[dict], summary: dict, first_plan: dict | None) -> list[Path]:
    """summary.json, history.jsonl and the plots; returns the files written."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(run_dir / "history.jsonl", "w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    written = [run_dir / "summary.json", run_dir / "history.jsonl"]
    if history:
        written += _plots(run_dir, history, first_plan)
    return written


def _plots(run_dir: Path, history: list[dict], first_plan: dict | None) -> list[Path]:
    out = [run_dir / "loss.png", run_dir / "step_time.png"]
    plots.plot_training_loss(history, out[0])
    plots.plot_step_times(history, out[1])
    if first_plan is not None:
        out.append(run_dir / "plan_gantt.png")
        plan = StepPlan.from_dict(first_plan["plan"])
        plots.plot_plan_gantt(plan, np.asarray(first_plan["lengths"]), out[-1], title=f"step {first_plan['step']} plan")
    return out
