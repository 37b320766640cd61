"""Sudoku 4x4 test accuracy before/after RL: BGPO vs diffu-GRPO vs the full-graph ELBO baseline.

Per seed: one SFT warm-up (shared by all arms of that seed), then each arm runs RL from
those weights under the same activation budget (`--budget-samples` x the saved bytes
of one (response, MC sample) unit):

- bgpo, n_t = 16                      (chunks of budget-samples units: fits the budget)
- diffu-grpo, n_t = 1                 (one forward per response)
- full-elbo at the largest n_t whose one-response unit (n_t samples) fits the budget
- full-elbo, n_t = 16 (control)       (needs 16 samples' memory: over the budget; on fresh
                                       rollouts its gradient equals BGPO's, so it isolates
                                       what the bound costs or gains, not the memory)

    .venv/bin/python bench/bgpo_learning.py        # writes bench/results/bgpo_learning.{md,json}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"


def run_one(kwargs: dict, run_dir: str) -> dict:
    from hsp.rl.config import RLConfig
    from hsp.rl.trainer import train

    train(RLConfig(**kwargs), run_dir, progress=False)
    return load_run(run_dir)


def load_run(run_dir: str) -> dict:
    """The numbers the table needs from a run directory's summary.json."""
    s = json.loads((Path(run_dir) / "summary.json").read_text())
    out = {k: s[k] for k in ("test_accuracy_before", "test_accuracy_after", "sample_bytes", "peak_saved_bytes", "timings", "test_before", "test_after")}
    rewards = [h["reward"] for h in s["history"]]
    out["reward_first10"] = statistics.mean(rewards[:10]) if rewards else float("nan")
    out["reward_last10"] = statistics.mean(rewards[-10:]) if rewards else float("nan")
    return out


def run_name(algo: str, n_t: int, budget: int, seed: int) -> str:
    return f"{algo}-nt{n_t}-b{budget}-{seed}"


def largest_fitting(budget_samples: int) -> int:
    n = 1
    while 2 * n <= budget_samples:
        n *= 2
    return n


def arms(budget_samples: int) -> list[tuple[str, str, int, int]]:
    """(name, algo, n_t, budget in samples)."""
    full_nt = largest_fitting(budget_samples)
    return [
        ("bgpo n_t=16", "bgpo", 16, budget_samples),
        ("diffu-grpo n_t=1", "diffu-grpo", 1, budget_samples),
        (f"full-elbo n_t={full_nt} (largest in budget)", "full-elbo", full_nt, budget_samples),
        ("full-elbo n_t=16 (same-n_t control, 16-sample memory)", "full-elbo", 16, 16),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=40, help="RL steps per arm")
    p.add_argument("--sft-steps", type=int, default=300, help="300: a mid-range start (200 steps gives ~0.40, 400 ~0.9 on seed 0)")
    p.add_argument("--prompts-per-step", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--test-items", type=int, default=512, help="held-out puzzles per evaluation (128 cannot resolve a 0.01 change)")
    p.add_argument("--budget-samples", type=int, default=4, help="activation budget in units of one sample's saved bytes")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (1 torch thread each)")
    p.add_argument("--work-dir", default="runs/bgpo_learning")
    p.add_argument("--out", default=str(RESULTS / "bgpo_learning"))
    p.add_argument("--rewrite", type=float, default=None, metavar="WALL_S",
                   help="re-render the table from the run directories in --work-dir (no training); WALL_S = the original wall time")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.work_dir)
    if args.rewrite is not None:
        results = {(name, s): load_run(str(work / run_name(algo, n_t, budget, s))) for s in seeds for name, algo, n_t, budget in arms(args.budget_samples)}
        return write(args, seeds, results, args.rewrite)
    common = dict(task="sudoku4", steps=args.steps, prompts_per_step=args.prompts_per_step, lr=args.lr, test_items=args.test_items,
                  num_threads=1, eval_every=0)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        # SFT once per seed (steps=0: warm-up, evaluation, sft.pt)
        sft = {s: pool.submit(run_one, dict(common, seed=s, steps=0, sft_steps=args.sft_steps), str(work / f"sft-{s}")) for s in seeds}
        sft = {s: f.result() for s, f in sft.items()}
        jobs = {}
        for s in seeds:
            for name, algo, n_t, budget in arms(args.budget_samples):
                cfg = dict(common, seed=s, algo=algo, mc_samples=n_t, sft_checkpoint=str(work / f"sft-{s}" / "sft.pt"),
                           act_budget_bytes=budget * sft[s]["sample_bytes"])
                jobs[name, s] = pool.submit(run_one, cfg, str(work / run_name(algo, n_t, budget, s)))
        results = {k: f.result() for k, f in jobs.items()}
    write(args, seeds, results, time.perf_counter() - t0)


def mean_std(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}"


def write(args: argparse.Namespace, seeds: list[int], results: dict, wall_s: float) -> None:
    lines = ["| arm | budget (samples) | peak saved MiB | test acc before | test acc after | after - before | solved after | rollout reward, first 10 -> last 10 steps | RL s/run |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, _, _, budget in arms(args.budget_samples):
        rs = [results[name, s] for s in seeds]
        before = [r["test_accuracy_before"] for r in rs]
        after = [r["test_accuracy_after"] for r in rs]
        lines.append(
            f"| {name} | {budget} | {max(r['peak_saved_bytes'] for r in rs) / 2**20:.1f} | {mean_std(before)} | {mean_std(after)} | "
            f"{mean_std([a - b for a, b in zip(after, before)])} | {mean_std([r['test_after']['solved'] for r in rs])} | "
            f"{statistics.mean(r['reward_first10'] for r in rs):.3f} -> {statistics.mean(r['reward_last10'] for r in rs):.3f} | "
            f"{statistics.mean(r['timings']['rl_s'] for r in rs):.0f} |"
        )
    command = (f"python bench/bgpo_learning.py --seeds {args.seeds} --steps {args.steps} --sft-steps {args.sft_steps} "
               f"--prompts-per-step {args.prompts_per_step} --lr {args.lr} --test-items {args.test_items} --budget-samples {args.budget_samples} --jobs {args.jobs}")
    md = [
        "# BGPO learning benchmark (Sudoku 4x4, CPU)", "",
        f"Command: `{command}`  ",
        f"Machine: `{' '.join(platform.uname())}`, nproc={os.cpu_count()}; total wall {wall_s / 60:.1f} min  ",
        f"Seeds {seeds}; per arm: SFT {args.sft_steps} steps (shared per seed), {args.steps} RL steps x "
        f"{args.prompts_per_step} prompts x G=8, lr {args.lr}; test accuracy = mean fraction of blank cells right "
        f"(greedy decoding, {args.test_items} generated test puzzles minus any that occur in the train split), mean ± std over seeds.", "",
        *lines,
    ]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    flat = [{"arm": k[0], "seed": k[1], **v} for k, v in results.items()]
    Path(args.out + ".json").write_text(json.dumps({"command": command, "wall_s": wall_s, "runs": flat}, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
