"""`hsp train`: distributed training with per-step sequence-parallel planning on Ray."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.toml"

# flag -> dotted config key; a flag left unset keeps the file's value
OVERRIDES = {
    "steps": "train.steps",
    "num_workers": "cluster.num_workers",
    "address": "cluster.address",
    "metrics_port": "metrics.port",
    "metrics_host": "metrics.host",
    "run_dir": "train.run_dir",
    "resume": "train.resume",
    "checkpoint_every": "train.checkpoint_every",
    "data_dir": "data.data_dir",
    "seed": "train.seed",
    "strategy": "planner.strategy",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train on Ray with per-step sequence-parallel planning",
        description=(
            "Train a GPT on Ray workers (one actor per rank, torch.distributed), planning each step's "
            "sequence-parallel groups while the previous step runs. With no arguments: an embedded local "
            "Ray cluster, 2 workers, a tiny model, 100 steps."
        ),
    )
    parser.add_argument("--config", metavar="FILE", help="TOML or YAML config (default: cluster/configs/default.toml)")
    parser.add_argument("--steps", type=int, help="train up to this step")
    parser.add_argument("--num-workers", type=int, help="ranks (Ray actors)")
    parser.add_argument("--address", help="join an existing Ray cluster ('auto' or host:port)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus /metrics port on the driver (0 = off; default 9400)")
    parser.add_argument("--metrics-host", help="address the metrics server binds (default 127.0.0.1)")
    parser.add_argument("--run-dir", help="run directory (summary, history, plots, checkpoints)")
    parser.add_argument("--resume", action="store_true", default=None, help="continue from the run dir's checkpoint")
    parser.add_argument("--checkpoint-every", type=int, metavar="K", help="checkpoint every K steps (0 = at the end)")
    parser.add_argument("--data-dir", help="train on a folder of .txt/.jsonl files instead of the synthetic corpus")
    parser.add_argument("--seed", type=int, help="model/RNG seed")
    parser.add_argument("--strategy", help="planner: fast, flexsp, static, batch-ada, megatron-dcp")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def load(args: argparse.Namespace):
    from cluster.config import build_config, read_file

    # no --config: the dataclass defaults, which default.toml spells out (a test keeps them equal)
    data = read_file(args.config) if args.config else {}
    overrides = {key: getattr(args, flag) for flag, key in OVERRIDES.items() if getattr(args, flag) is not None}
    return build_config(data, overrides)


def run(args: argparse.Namespace) -> int:
    from cluster.trainer import run_training

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = load(args)
    run_training(config, progress=not args.no_progress)
    return 0
