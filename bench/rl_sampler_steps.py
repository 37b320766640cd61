"""Greedy test accuracy vs the sampler's denoising steps, after an SFT warm-up, per task.

For each (task, sft_steps) and seed: the `hsp rl` SFT warm-up (default model and SFT
settings, --sft-steps as given), then greedy decoding of the held-out test split with
one block and every step count that divides the response length. This is what the
tasks' `default_sample_steps` are chosen from (hsp/rl/tasks.py).

    .venv/bin/python bench/rl_sampler_steps.py   # writes bench/results/rl_sampler_steps.{md,json}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hsp.rl.config import RLConfig  # noqa: E402
from hsp.rl.sampler import SamplerConfig, generate  # noqa: E402
from hsp.rl.warmup import build_model, run_sft, task_splits  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def measure(task_name: str, sft_steps: int, seed: int, test_items: int) -> list[dict]:
    cfg = RLConfig(task=task_name, seed=seed, sft_steps=sft_steps, test_items=test_items)
    task, train, test = task_splits(cfg)
    model = build_model(cfg, task)
    t0 = time.perf_counter()
    run_sft(model, train, cfg, torch.Generator().manual_seed(seed))
    sft_s = time.perf_counter() - t0
    length, rows = task.response_len, []
    for steps in (s for s in range(1, length + 1) if length % s == 0):
        out = generate(model, test.prompts, SamplerConfig(gen_length=length, block_length=length, steps=steps, temperature=0.0), torch.Generator())
        rows.append({"task": task_name, "sft_steps": sft_steps, "seed": seed, "steps": steps, "num_test": len(test.prompts),
                     "accuracy": float(task.reward(test.prompts, out).mean()), "default": steps == task.default_sample_steps,
                     "sft_s": round(sft_s, 1)})
        print(rows[-1], flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| task | SFT steps | sampler steps | accuracy per seed | mean | default |", "|---|---|---|---|---|---|"]
    keys = sorted({(r["task"], r["sft_steps"], r["steps"]) for r in rows})
    for task, sft, steps in keys:
        accs = [r["accuracy"] for r in rows if (r["task"], r["sft_steps"], r["steps"]) == (task, sft, steps)]
        default = any(r["default"] for r in rows if (r["task"], r["steps"]) == (task, steps))
        lines.append(f"| {task} | {sft} | {steps} | {' '.join(f'{a:.3f}' for a in accs)} | {sum(accs) / len(accs):.3f} | {'yes' if default else ''} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", default=["sudoku4:200", "sudoku4:1000", "addition:1000", "countdown:2000"], help="task:sft_steps")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--test-items", type=int, default=512)
    ap.add_argument("--num-threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.num_threads)
    t0, load = time.perf_counter(), os.getloadavg()[0]
    rows = [r for run in args.runs for seed in args.seeds for r in measure(run.split(":")[0], int(run.split(":")[1]), seed, args.test_items)]
    header = (f"Greedy held-out accuracy vs sampler steps (one block) after SFT; machine: {platform.machine()} {os.cpu_count()} CPUs, "
              f"torch {torch.__version__}, {args.num_threads} thread(s), load {load:.2f} at start, {time.perf_counter() - t0:.0f} s total.\n"
              f"Command: `.venv/bin/python bench/rl_sampler_steps.py {' '.join(sys.argv[1:])}`.\n")
    text = f"# Sampler steps vs accuracy\n\n{header}\n{table(rows)}\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rl_sampler_steps.md").write_text(text)
    (RESULTS / "rl_sampler_steps.json").write_text(json.dumps({"command": sys.argv, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
