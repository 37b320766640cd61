"""`hsp export`: the trained weights of an `hsp train` run as a Hugging Face folder.

    hsp export runs/train --out exported/     # transformers: AutoModelForCausalLM.from_pretrained("exported/")
"""

from __future__ import annotations

import argparse
import sys
import warnings

HELP = "write a training run's weights as a Hugging Face folder (config.json + safetensors)"


def register(subparsers) -> None:
    from cluster.config import EXPORT
    from cluster.configflags import add_command

    parser = add_command(
        subparsers, EXPORT, help=HELP,
        description="Read the latest checkpoint of an hsp train run directory and write config.json, "
        "model.safetensors (or shards + index) and the run's tokenizer.json, loadable by transformers' "
        "from_pretrained (Llama, or Qwen2 when q/k/v have biases). Bidirectional models (hsp rl) are refused.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cluster.config import EXPORT
    from cluster.configflags import load_or_print
    from cluster.export import export

    config = load_or_print(EXPORT, args)
    if config is None:
        return 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = export(config.export)
    for w in caught:
        print(f"hsp export: warning: {w.message}", file=sys.stderr)
    print(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0
