"""Every PNG hsp draws (matplotlib, Agg backend: no display needed).

- `plot_plan_gantt`: one step plan, ranks against predicted time (`hsp plan --plot`, a run's first step).
- `plot_strategy_step_times`: mean predicted step time per strategy (`hsp simulate --plot`).
- `plot_training_loss`, `plot_step_times`: a training run's loss and predicted vs measured step time.
- `plot_rl_rewards`: an RL run's rollout reward and test accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from solver.plan import StepPlan
from solver.simulate import StrategyStats


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, dpi: int) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)


def plot_plan_gantt(step_plan: StepPlan, lengths: np.ndarray, path: str | Path, title: str) -> None:
    """Ranks on the y axis, micro-batches left to right in time, one bar per group."""
    plt = _pyplot()
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
    _save(fig, path, dpi=120)


def plot_strategy_step_times(stats: dict[str, StrategyStats], path: str | Path, title: str) -> None:
    """Mean predicted step seconds per strategy, annotated with the speedup over static."""
    plt = _pyplot()
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
    _save(fig, path, dpi=120)


def plot_training_loss(history: list[dict], path: str | Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history])
    ax.set(xlabel="step", ylabel="loss (next-token, nats)", title="training loss")
    _save(fig, path, dpi=110)


def plot_step_times(history: list[dict], path: str | Path) -> None:
    """Measured against predicted step milliseconds, with the online rescale."""
    plt = _pyplot()
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [1e3 * h["measured_s"] for h in history], label="measured (slowest rank)")
    ax.plot(steps, [1e3 * h["predicted_s"] for h in history], label="predicted (cost model)")
    ax.plot(steps, [1e3 * h["calibrated_predicted_s"] for h in history], label="predicted x online rescale", ls="--")
    ax.set(xlabel="step", ylabel="ms", title="step time: predicted vs measured")
    ax.legend()
    _save(fig, path, dpi=110)


def plot_rl_rewards(history: list[dict], path: str | Path, title: str = "") -> None:
    """Mean rollout reward per RL step (and its running mean) plus test accuracy."""
    plt = _pyplot()
    steps = [h["step"] for h in history]
    rewards = [h["reward"] for h in history]
    window = max(1, len(rewards) // 10)
    smooth = [float(np.mean(rewards[max(0, i - window + 1): i + 1])) for i in range(len(rewards))]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, rewards, alpha=0.35, label="mean rollout reward")
    ax.plot(steps, smooth, label=f"running mean ({window})")
    ax.plot(steps, [h["test_accuracy"] for h in history], "--", label="test accuracy (greedy)")
    ax.set_xlabel("RL step")
    ax.set_ylabel("reward / accuracy")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path, dpi=100)
