"""`hsp export`: the trained weights of an `hsp train` run as a Hugging Face folder.

    hsp export runs/train --out exported/     # transformers: AutoModelForCausalLM.from_pretrained("exported/")
"""

from __future__ import annotations

import argparse

HELP = "write a training run's weights as a Hugging Face folder (config.json + safetensors)"


def register(subparsers) -> None:
    from cluster.config import EXPORT
    from cluster.configflags import add_command

    add_command(
        subparsers, EXPORT, help=HELP, run=run,
        description="Read the latest checkpoint of an hsp train run directory and write config.json, "
        "model.safetensors (or shards + index) and the run's tokenizer.json, loadable by transformers' "
        "from_pretrained (Llama, or Qwen2 when q/k/v have biases). Bidirectional models (hsp rl) are refused.",
    )


def run(config, args: argparse.Namespace) -> int:
    """`config`: the command's cluster.export.ExportConfig."""
    from cluster.cli import warnings_as_lines
    from cluster.export import export

    with warnings_as_lines("export"):
        out = export(config)
    print(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0
