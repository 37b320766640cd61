"""Throughput of `hsp.data.prepare` (a benchmark, not a test).

Writes a synthetic .jsonl corpus (Zipf words, log-normal document lengths), trains a
byte-level BPE on a sample of it, then prepares the corpus with the byte tokenizer and
the BPE, with 1 worker (in-process) and 2 worker processes, and reports tokens/s and
input MB/s per configuration (best of --repeats, start-up of the worker processes
included). Tokenizer threads are off (TOKENIZERS_PARALLELISM=false), so processes are
the only parallelism and 1 worker means one core.

    nice -n 10 python bench/prepare_bench.py          # writes bench/results/prepare.{md,json}
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # before the tokenizers library loads

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scheduler_overhead import machine  # noqa: E402  (one description of the machine for every bench)


def write_corpus(path: Path, num_bytes: int, seed: int = 0) -> int:
    """A .jsonl of documents about `num_bytes` long in total; returns the document count."""
    rng = np.random.default_rng(seed)
    letters = list("etaoinshrdlucmfwypvbgkjqxz")
    words = ["".join(rng.choice(letters, size=int(rng.integers(1, 10)))) for _ in range(2000)]
    freq = 1.0 / np.arange(1, len(words) + 1)
    written = docs = 0
    with open(path, "w") as f:
        while written < num_bytes:
            n = int(np.clip(rng.lognormal(5.5, 1.0), 5, 20_000))  # words per document (median ~245)
            line = json.dumps({"text": " ".join(words[i] for i in rng.choice(len(words), size=n, p=freq / freq.sum()))})
            f.write(line + "\n")
            written += len(line) + 1
            docs += 1
    return docs


def train_bpe(corpus: Path, folder: Path, vocab_size: int) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    sample = [json.loads(line)["text"] for _, line in zip(range(2000), open(corpus))]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(sample, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    return folder


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished children (the pool's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(corpus: Path, tokenizer: str, num_workers: int, repeats: int, scratch: Path) -> dict:
    """Fastest of `repeats` runs: wall seconds, and the CPU seconds of that run (all processes)."""
    from hsp.data import prepare

    best = None
    for r in range(repeats):
        out = scratch / f"out-{num_workers}-{r}"
        start, cpu = time.perf_counter(), _cpu_s()
        manifest = prepare([corpus], out, tokenizer, num_workers=num_workers, chunk_bytes=4 << 20)
        seconds, cpu_s = time.perf_counter() - start, _cpu_s() - cpu
        shutil.rmtree(out)
        if best is None or seconds < best[0]:
            best = (seconds, cpu_s)
    seconds, cpu_s = best
    size = corpus.stat().st_size
    return {"num_workers": num_workers, "seconds": seconds, "cpu_s": cpu_s, "num_tokens": manifest.num_tokens,
            "num_docs": manifest.num_docs, "tokens_per_s": manifest.num_tokens / seconds, "mb_per_s": size / seconds / 1e6,
            "tokens_per_cpu_s": manifest.num_tokens / cpu_s, "tokenizer": manifest.tokenizer["name"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus-mb", type=float, default=32.0, help="size of the synthetic corpus (default 32)")
    parser.add_argument("--bpe-vocab", type=int, default=8192, help="BPE vocabulary size (default 8192)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration; the fastest is kept")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "prepare"),
                        help="output path without suffix (.md and .json are written)")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="hsp-prepare-bench-"))
    try:
        corpus = scratch / "corpus.jsonl"
        num_docs = write_corpus(corpus, int(args.corpus_mb * 1e6))
        corpus_size = corpus.stat().st_size
        bpe = train_bpe(corpus, scratch / "bpe", args.bpe_vocab)
        rows = []
        for name, spec in (("byte", "byte"), (f"BPE {args.bpe_vocab}", str(bpe))):
            for workers in (1, 2):
                row = {"name": name, **measure(corpus, spec, workers, args.repeats, scratch)}
                rows.append(row)
                print(f"{name:>10} x{workers}: {row['tokens_per_s'] / 1e6:6.2f} M tokens/s, {row['mb_per_s']:6.1f} MB/s "
                      f"({row['seconds']:.2f} s wall, {row['cpu_s']:.2f} s CPU)", file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = {
        "command": " ".join(["python", "bench/prepare_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": machine(),
        "corpus": {"bytes": corpus_size, "num_docs": num_docs},
        "rows": rows,
    }
    Path(args.out + ".json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    Path(args.out + ".md").write_text(text)
    print(text)
    return 0


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"# `hsp.data.prepare` throughput ({r['date_utc']} UTC)",
        "",
        f"Synthetic .jsonl corpus, about {r['corpus']['bytes'] / 1e6:.0f} MB, {r['corpus']['num_docs']:,} documents "
        "(Zipf words, log-normal lengths). Best of the repeats; worker start-up included; tokenizer threads off.",
        f"Machine: `{m['uname']}`; nproc {m['nproc']}; load average at start {m['loadavg']}; Python {m['python']}.",
        f"Command: `{r['command']}`",
        "",
        "| tokenizer | workers | wall s | CPU s | tokens | M tokens/s (wall) | input MB/s (wall) | M tokens per CPU-s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        lines.append(f"| {row['name']} | {row['num_workers']} | {row['seconds']:.2f} | {row['cpu_s']:.2f} | "
                     f"{row['num_tokens']:,} | {row['tokens_per_s'] / 1e6:.2f} | {row['mb_per_s']:.1f} | "
                     f"{row['tokens_per_cpu_s'] / 1e6:.2f} |")
    lines += [
        "",
        "CPU s counts every process of the run (parent and workers). On a shared machine (see the load average)",
        "wall throughput with 2 workers needs a second idle core; tokens per CPU-second is the per-core rate.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
