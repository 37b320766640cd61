"""`hsp rl`: SFT warm-up + RL (BGPO or a baseline) of a masked-diffusion LM on a verifiable task.

The default recipe (docs/rl.md: SFT to a weak start, 100 BGPO steps of 64 prompts x 8):

    hsp rl --seed 0 --run-dir runs/rl
    hsp rl --seed 0 --advantage-control shuffle --run-dir runs/rl-shuffled   # no-signal control

Data-parallel on Ray workers (an embedded local Ray, or --address to join a cluster):

    hsp rl --num-workers 2 --run-dir runs/rl-dp
"""

from __future__ import annotations

import argparse
import json

HELP = "RL (BGPO) of a masked-diffusion LM on sudoku4/addition, on CPU"


def register(subparsers) -> None:
    from cluster.config import RL
    from cluster.configflags import add_command

    parser = add_command(
        subparsers, RL, help=HELP,
        description="SFT warm-up, then RL steps of a masked-diffusion LM; every rl.* key is also a short flag.",
    )
    parser.add_argument("--no-progress", action="store_true", help="Disable the progress bar.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cluster.config import RL
    from cluster.configflags import load_or_print
    from cluster.rl_runner import run_rl

    config = load_or_print(RL, args)
    if config is None:
        return 0
    summary = run_rl(config, progress=not args.no_progress)
    brief = {k: summary[k] for k in ("num_workers", "test_accuracy_before", "test_accuracy_after", "sample_bytes", "peak_saved_bytes")}
    brief["timings"] = {k: round(v, 1) for k, v in summary["timings"].items()}
    print(json.dumps(brief))
    print(f"wrote {config.run_dir}/summary.json and {config.run_dir}/reward_curve.png")
    return 0
