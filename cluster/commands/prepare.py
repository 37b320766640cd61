"""`hsp prepare`: tokenize .txt/.jsonl/.parquet files once into a memory-mapped folder.

    hsp prepare corpus/ --out prepared/ --tokenizer tokenizer.json   # then: hsp train --data prepared/

Writes tokens.bin, index.npy and manifest.json (hsp.data.prepared); `hsp train --data`
reads it, checking that its tokenizer is the one the data was prepared with.
"""

from __future__ import annotations

import argparse

HELP = "tokenize text files into a memory-mapped token folder for hsp train --data"


def register(subparsers) -> None:
    from cluster.config import PREPARE
    from cluster.configflags import add_command

    add_command(
        subparsers, PREPARE, help=HELP, run=run, progress=True,
        description="Tokenize .txt (one document per file), .jsonl (one per line) and .parquet (one per row) "
        "files in parallel processes into tokens.bin + index.npy + manifest.json, counting empty and "
        "undecodable documents.",
    )


def run(c, args: argparse.Namespace) -> int:
    """`c`: the command's hsp.data.prepare.PrepareConfig."""
    from cluster.cli import warnings_as_lines
    from hsp.data.prepare import prepare

    if not c.inputs or not c.out:
        raise ValueError("pass the inputs and an output folder: hsp prepare INPUT... --out DIR")
    with warnings_as_lines("prepare"):
        m = prepare(list(c.inputs), c.out, c.tokenizer, text_field=c.text_field, num_workers=c.processes,
                    progress=not args.no_progress, max_undecodable_fraction=c.max_undecodable_fraction)
    print(f"wrote {c.out}: {m.num_docs:,} documents, {m.num_tokens:,} tokens ({m.dtype}), tokenizer "
          f"{m.tokenizer['name']}, {m.num_empty_docs} empty and {m.num_undecodable_docs} undecodable documents, "
          f"{m.seconds:.1f}s ({m.num_tokens / max(m.seconds, 1e-9):,.0f} tokens/s)")
    return 0
