"""`hsp train`: distributed training with per-step sequence-parallel planning on Ray."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "train on Ray with per-step sequence-parallel planning"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.toml"
"""The dataclass defaults, spelled out (`hsp train --print-config`; a test keeps them equal)."""


def register(subparsers) -> None:
    from cluster.config import TRAIN
    from cluster.configflags import add_command

    parser = add_command(
        subparsers, TRAIN, help=HELP,
        description=(
            "Train hsp's Llama-style decoder (or a local Hugging Face checkpoint, --init-from) on Ray workers "
            "(one actor per rank, torch.distributed), planning each step's sequence-parallel groups while the "
            "previous step runs. With no arguments: an embedded local Ray cluster, 2 workers, a tiny model, "
            "100 steps. Every config key is also a flag "
            "(--section.key VALUE); the short flags are aliases."
        ),
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def load(args: argparse.Namespace):
    from cluster.config import TRAIN
    from cluster.configflags import load as load_tree

    return load_tree(TRAIN, args)


def run(args: argparse.Namespace) -> int:
    from cluster.config import TRAIN
    from cluster.configflags import load_or_print
    from cluster.trainer import run_training

    config = load_or_print(TRAIN, args)
    if config is None:
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_training(config, progress=not args.no_progress)
    return 0
