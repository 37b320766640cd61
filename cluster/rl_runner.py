"""`hsp rl` on the cluster side: the metrics endpoint, Ray ranks when rl.num_workers > 1,
the run itself (hsp.rl.trainer) and its reward curve."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from cluster import checkpoint
from cluster.config import RLRunConfig
from cluster.metrics import Metrics


def run_rl(config: RLRunConfig, *, progress: bool = True) -> dict:
    """Run `config`; returns the summary (also in run_dir/summary.json) and draws
    run_dir/reward_curve.png."""
    from cluster.plots import plot_rl_rewards
    from hsp.rl.tasks import get_task
    from hsp.rl.trainer import train
    from hsp.rl.warmup import model_config

    cfg = config.rl
    metrics = Metrics()
    server = metrics.serve_config(config.metrics)  # before SFT: a taken port fails now, not minutes later
    make_parallel = None
    if cfg.num_workers > 1:
        from cluster.launch import parallel_factory

        make_parallel = parallel_factory(config.cluster.address, config.cluster.cpus_per_worker)
    try:
        summary = train(cfg, config.run_dir, progress=progress, on_step=None if server is None else recorder(metrics),
                        make_parallel=make_parallel)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    # what `hsp export` reads: it refuses this bidirectional model with the reason
    checkpoint.write_model_info(config.run_dir, model=model_config(cfg, get_task(cfg.task)).to_dict(), tokenizer=None)
    title = f"{cfg.task} {cfg.algo} n_t={cfg.mc_samples} seed={cfg.seed}"
    plot_rl_rewards(summary["history"], Path(config.run_dir) / "reward_curve.png", title=title)
    return summary


def recorder(metrics: Metrics) -> Callable[[dict], None]:
    """on_step callback: one RL step's record into the Prometheus series."""

    def on_step(record: dict) -> None:
        metrics["hsp_rl_reward"].set(record["reward"])
        metrics["hsp_steps_total"].inc()
        metrics["hsp_step_duration_seconds"].observe(record["step_s"])
        metrics["hsp_loss"].set(record["loss"])
        metrics["hsp_last_step_timestamp_seconds"].set_to_current_time()

    return on_step
