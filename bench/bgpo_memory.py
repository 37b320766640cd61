"""Peak memory of one RL update vs the number of MC samples n_t: BGPO vs the full-graph baseline.

For n_t in {1, 2, 4, ..., 64} and each algorithm, one policy update of a batch of
rollouts (random tokens: memory does not depend on content) is run with the shared
accumulation helper, and two peaks are measured:

(a) bytes saved for backward (torch.autograd.graph.saved_tensors_hooks, distinct
    non-parameter storages alive at once), peak over the whole update, in-process;
(b) peak RSS of a fresh process that runs only that update: VmHWM after the update,
    and its growth over the VmHWM reached before the update.

Budget: BGPO packs (response, sample) units into chunks of at most `--budget-units`
samples' bytes. The full-graph baseline's unit is a response with all n_t samples, so
it gets the same budget or, when one response alone exceeds it, exactly one response
per chunk (its minimum).

    .venv/bin/python bench/bgpo_memory.py            # writes bench/results/bgpo_memory.{md,json}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hsp.model.config import ModelConfig  # noqa: E402
from hsp.rl.diffusion import DiffusionLM  # noqa: E402
from hsp.engine.memory import SavedBytesMeter  # noqa: E402
from hsp.rl.tasks import BASE_VOCAB_SIZE, MASK  # noqa: E402
from hsp.rl.update import PolicyUpdate, Rollouts  # noqa: E402

NUM_SAMPLES = (1, 2, 4, 8, 16, 32, 64)
RESULTS = Path(__file__).resolve().parent / "results"


def setup(args: argparse.Namespace) -> tuple[DiffusionLM, Rollouts]:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=BASE_VOCAB_SIZE, num_layers=args.num_layers, hidden_size=args.hidden_size, num_heads=4,
                      num_kv_heads=2, intermediate_size=args.hidden_size * 11 // 4, max_seq_len=2 * args.seq_len,
                      bidirectional=True)
    model = DiffusionLM(cfg, mask_id=MASK)
    g = torch.Generator().manual_seed(0)
    n = args.num_responses
    prompts = torch.randint(0, MASK, (n, args.seq_len), generator=g)
    responses = torch.randint(0, MASK, (n, args.seq_len), generator=g)
    return model, Rollouts(prompts, responses, torch.randn(n, generator=g, dtype=torch.float64))


def budget_for(algo: str, num_samples: int, sample_bytes: int, budget_units: int) -> int:
    units = budget_units if algo == "bgpo" else max(budget_units, num_samples)
    return units * sample_bytes


def one_update(model: DiffusionLM, rollouts: Rollouts, algo: str, num_samples: int, budget_units: int) -> dict:
    update = PolicyUpdate(model, algo, rollouts, num_samples=num_samples, elbo_form="discrete", generator=torch.Generator().manual_seed(1))
    sample_bytes = update.sample_bytes()
    budget = budget_for(algo, num_samples, sample_bytes, budget_units)
    meter = SavedBytesMeter(model.parameters())
    t = time.perf_counter()
    with meter:
        update.backward(budget, sample_bytes)
    return {"saved_peak_bytes": meter.peak_bytes, "sample_bytes": sample_bytes, "budget_bytes": budget, "update_s": time.perf_counter() - t}


def vm_hwm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def child(args: argparse.Namespace) -> None:
    """Fresh process: one update, print its RSS high-water marks as JSON."""
    torch.set_num_threads(args.threads)
    model, rollouts = setup(args)
    before = vm_hwm_bytes()
    result = one_update(model, rollouts, args.algo, args.num_samples, args.budget_units)
    result.update(rss_peak_bytes=vm_hwm_bytes(), rss_before_bytes=before)
    print(json.dumps(result))


def rss_point(args: argparse.Namespace, algo: str, num_samples: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--algo", algo, "--num-samples", str(num_samples)] + common_flags(args)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def common_flags(args: argparse.Namespace) -> list[str]:
    return ["--num-responses", str(args.num_responses), "--seq-len", str(args.seq_len), "--hidden-size", str(args.hidden_size),
            "--num-layers", str(args.num_layers), "--budget-units", str(args.budget_units), "--threads", str(args.threads)]


def mib(x: float) -> str:
    return f"{x / 2**20:.1f}"


def table(rows: list[dict]) -> str:
    base = {a: next(r for r in rows if r["algo"] == a and r["num_samples"] == 1) for a in ("bgpo", "full-elbo")}
    lines = ["| n_t | BGPO saved MiB (x n_t=1) | full-graph saved MiB (x n_t=1) | BGPO RSS peak MiB (+growth) | full-graph RSS peak MiB (+growth) |",
             "|---:|---:|---:|---:|---:|"]
    for n in NUM_SAMPLES:
        cells = []
        for a in ("bgpo", "full-elbo"):
            r = next(r for r in rows if r["algo"] == a and r["num_samples"] == n)
            cells.append(f"{mib(r['saved_peak_bytes'])} ({r['saved_peak_bytes'] / base[a]['saved_peak_bytes']:.2f}x)")
        for a in ("bgpo", "full-elbo"):
            r = next(r for r in rows if r["algo"] == a and r["num_samples"] == n)
            cells.append(f"{mib(r['rss_peak_bytes'])} (+{mib(r['rss_peak_bytes'] - r['rss_before_bytes'])})")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-responses", type=int, default=8, help="responses in the update batch (one group of G=8, as in the paper)")
    p.add_argument("--seq-len", type=int, default=64, help="prompt length = response length")
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--budget-units", type=int, default=8, help="activation budget in units of one sample's saved bytes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "bgpo_memory"), help="output path without suffix (.md and .json)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--algo", default="bgpo", help=argparse.SUPPRESS)
    p.add_argument("--num-samples", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--rewrite", action="store_true", help="re-render the .md from the existing .json (no measuring)")
    args = p.parse_args()
    if args.rewrite:
        return write(args, json.loads(Path(args.out + ".json").read_text())["rows"])
    if args.child:
        return child(args)
    torch.set_num_threads(args.threads)
    model, rollouts = setup(args)
    rows = []
    for algo in ("bgpo", "full-elbo"):
        for n in NUM_SAMPLES:
            row = {"algo": algo, "num_samples": n, **one_update(model, rollouts, algo, n, args.budget_units)}
            row.update({k: v for k, v in rss_point(args, algo, n).items() if k.startswith("rss")})
            rows.append(row)
            print(f"{algo:9s} n_t={n:3d} saved={mib(row['saved_peak_bytes'])} MiB rss={mib(row['rss_peak_bytes'])} MiB "
                  f"(+{mib(row['rss_peak_bytes'] - row['rss_before_bytes'])}) {row['update_s']:.1f}s", flush=True)
    write(args, rows)


def write(args: argparse.Namespace, rows: list[dict]) -> None:
    b = {n: next(r for r in rows if r["algo"] == "bgpo" and r["num_samples"] == n) for n in (1, 64)}
    f = {n: next(r for r in rows if r["algo"] == "full-elbo" and r["num_samples"] == n) for n in (1, 64)}
    ratio_b = b[64]["saved_peak_bytes"] / b[1]["saved_peak_bytes"]
    ratio_f = f[64]["saved_peak_bytes"] / f[1]["saved_peak_bytes"]
    command = "python bench/bgpo_memory.py " + " ".join(common_flags(args))
    machine = f"{platform.uname().system} {platform.uname().release} {platform.uname().machine}, nproc={os.cpu_count()}, torch {torch.__version__}"
    md = [
        "# BGPO memory vs n_t", "",
        f"Command: `{command}`  ",
        f"Machine: `{' '.join(platform.uname())}`, nproc={os.cpu_count()}, torch {torch.__version__}  ",
        f"Setup: {args.num_responses} responses, prompt = response = {args.seq_len} tokens, decoder {args.num_layers}x{args.hidden_size}, "
        f"one sample saves {mib(rows[0]['sample_bytes'])} MiB; budget {args.budget_units} samples "
        "(the full-graph baseline gets one whole response per chunk when that exceeds it).", "",
        table(rows), "",
        f"Saved-for-backward peak at n_t=64 vs n_t=1: BGPO {ratio_b:.2f}x (target <= 1.1x: {'met' if ratio_b <= 1.1 else 'NOT met'}), "
        f"full-graph baseline {ratio_f:.2f}x.  ",
        f"Peak RSS at n_t=64 vs n_t=1 (fresh process per point): BGPO {b[64]['rss_peak_bytes'] / b[1]['rss_peak_bytes']:.3f}x, "
        f"full-graph baseline {f[64]['rss_peak_bytes'] / f[1]['rss_peak_bytes']:.3f}x "
        f"(growth during the update: BGPO +{mib(b[64]['rss_peak_bytes'] - b[64]['rss_before_bytes'])} MiB, "
        f"baseline +{mib(f[64]['rss_peak_bytes'] - f[64]['rss_before_bytes'])} MiB).",
    ]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    Path(args.out + ".json").write_text(json.dumps({"command": command, "machine": machine, "rows": rows}, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
