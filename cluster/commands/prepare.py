"""`hsp prepare`: tokenize .txt/.jsonl/.parquet files once into a memory-mapped folder.

    hsp prepare corpus/ --out prepared/ --tokenizer tokenizer.json   # then: hsp train --data prepared/

Writes tokens.bin, index.npy and manifest.json (hsp.data.prepared); `hsp train --data`
reads it, checking that its tokenizer is the one the data was prepared with.
"""

from __future__ import annotations

import argparse
import sys
import warnings

HELP = "tokenize text files into a memory-mapped token folder for hsp train --data"


def register(subparsers) -> None:
    from cluster.config import PREPARE
    from cluster.configflags import add_command

    parser = add_command(
        subparsers, PREPARE, help=HELP,
        description="Tokenize .txt (one document per file), .jsonl (one per line) and .parquet (one per row) "
        "files in parallel processes into tokens.bin + index.npy + manifest.json, counting empty and "
        "undecodable documents.",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cluster.config import PREPARE
    from cluster.configflags import load_or_print
    from hsp.data.prepare import prepare

    config = load_or_print(PREPARE, args)
    if config is None:
        return 0
    c = config.prepare
    if not c.inputs or not c.out:
        raise ValueError("pass the inputs and an output folder: hsp prepare INPUT... --out DIR")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = prepare(list(c.inputs), c.out, c.tokenizer, text_field=c.text_field, num_workers=c.processes,
                    progress=not args.no_progress, max_undecodable_fraction=c.max_undecodable_fraction)
    for w in caught:
        print(f"hsp prepare: warning: {w.message}", file=sys.stderr)
    print(f"wrote {c.out}: {m.num_docs:,} documents, {m.num_tokens:,} tokens ({m.dtype}), tokenizer "
          f"{m.tokenizer['name']}, {m.num_empty_docs} empty and {m.num_undecodable_docs} undecodable documents, "
          f"{m.seconds:.1f}s ({m.num_tokens / max(m.seconds, 1e-9):,.0f} tokens/s)")
    return 0
