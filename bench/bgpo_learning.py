"""Sudoku 4x4 held-out accuracy during RL: BGPO vs diffu-GRPO vs the full-graph ELBO,
against the within-group shuffled-advantage control (same update size, no signal).

Per seed: one SFT warm-up (the `hsp rl` default: stopped at a weak start), shared by
all arms of that seed; each arm then runs the default recipe (`hsp rl` defaults:
prompts x G = 8, AdamW, KL to the SFT policy) from those weights under the same
activation budget (`--budget-samples` x the saved bytes of one (response, MC sample)
unit), evaluated every --eval-every steps (greedy, >= 512 test items, and the fixed
training prompts):

- bgpo n_t = 4, bgpo n_t = 16      (chunks of budget-samples units: fit the budget)
- diffu-grpo                       (one forward per response)
- full-elbo at the largest n_t whose one-response unit (n_t samples) fits the budget
- bgpo n_t = 4, shuffled advantages (the control)

Plus rollout throughput (response tokens / rollout second) of short default runs with
--num-workers 1 and 2 (Ray), from one SFT checkpoint.

    .venv/bin/python bench/bgpo_learning.py --steps 100   # bench/results/bgpo_learning.{md,json,png}
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
    return json.loads((Path(run_dir) / "summary.json").read_text())


def largest_fitting(budget_samples: int) -> int:
    n = 1
    while 2 * n <= budget_samples:
        n *= 2
    return n


def arms(budget_samples: int) -> list[tuple[str, dict]]:
    """(name, RLConfig overrides)."""
    full_nt = largest_fitting(budget_samples)
    return [
        ("bgpo n_t=4", dict(algo="bgpo", mc_samples=4)),
        ("bgpo n_t=16", dict(algo="bgpo", mc_samples=16)),
        ("diffu-grpo", dict(algo="diffu-grpo", mc_samples=1)),
        (f"full-elbo n_t={full_nt} (largest in budget)", dict(algo="full-elbo", mc_samples=full_nt)),
        ("bgpo n_t=4, shuffled advantages (control)", dict(algo="bgpo", mc_samples=4, advantage_control="shuffle")),
    ]


def curve(summary: dict) -> list[tuple[int, float, float]]:
    """(step, test accuracy, fixed-train reward) at step 0 and at every evaluation."""
    points = [(0, summary["test_accuracy_before"], summary["test_before"]["train_reward"])]
    every = summary["config"]["eval_every"]
    for h in summary["history"]:
        if (every and h["step"] % every == 0) or h is summary["history"][-1]:
            points.append((h["step"], h["test_accuracy"], h["train_reward"]))
    return points


def diagnostics(summary: dict) -> dict:
    hist = summary["history"]
    mean = lambda key: statistics.mean(h[key] for h in hist)  # noqa: E731
    return {"tied_group_share": mean("tied_group_share"), "group_reward_std": mean("group_reward_std"),
            "entropy_first": hist[0]["entropy"], "entropy_last": hist[-1]["entropy"], "kl_last": hist[-1]["kl"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=100, help="RL steps per arm")
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--budget-samples", type=int, default=16, help="activation budget in units of one sample's saved bytes")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (1 torch thread each)")
    p.add_argument("--arms", default="all", help="comma-separated arm indices (0-4) or all")
    p.add_argument("--throughput-steps", type=int, default=3, help="RL steps of the 1- and 2-worker throughput runs (0 = skip)")
    p.add_argument("--prompts-per-step", type=int, default=None, help="unset = the hsp rl default")
    p.add_argument("--sft-dirs", default=None, metavar="PATTERN",
                   help="reuse sft.pt + summary.json of earlier default `hsp rl` runs, e.g. runs/rl-{seed} (their SFT is this bench's)")
    p.add_argument("--work-dir", default="runs/bgpo_learning")
    p.add_argument("--out", default=str(RESULTS / "bgpo_learning"))
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = arms(args.budget_samples)
    if args.arms != "all":
        chosen = [chosen[int(i)] for i in args.arms.split(",")]
    work = Path(args.work_dir)
    common = dict(task="sudoku4", steps=args.steps, eval_every=args.eval_every, num_threads=1)
    if args.prompts_per_step:
        common["prompts_per_step"] = args.prompts_per_step
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        # SFT once per seed (steps=0: warm-up, evaluation, sft.pt)
        sft_dir = {s: Path(args.sft_dirs.format(seed=s)) if args.sft_dirs else work / f"sft-{s}" for s in seeds}
        if args.sft_dirs:
            sft = {s: json.loads((sft_dir[s] / "summary.json").read_text()) for s in seeds}
        else:
            sft = {s: pool.submit(run_one, dict(common, seed=s, steps=0), str(sft_dir[s])) for s in seeds}
            sft = {s: f.result() for s, f in sft.items()}
        jobs = {}
        for s in seeds:
            for name, over in chosen:
                cfg = dict(common, seed=s, sft_checkpoint=str(sft_dir[s] / "sft.pt"),
                           act_budget_bytes=args.budget_samples * sft[s]["sample_bytes"], **over)
                jobs[name, s] = pool.submit(run_one, cfg, str(work / f"{name.split(' (')[0].replace(' ', '_').replace(',', '')}-{s}"))
        results = {k: f.result() for k, f in jobs.items()}
    wall = time.perf_counter() - t0
    tput = measure_throughput(args, work, sft_dir[seeds[0]], seeds[0]) if args.throughput_steps else {}
    write(args, seeds, chosen, results, tput, wall)


def measure_throughput(args: argparse.Namespace, work: Path, sft_dir: Path, seed: int) -> dict:
    """Rollout tokens/s of `hsp rl` with 1 and 2 workers (one at a time, the same SFT start)."""
    from cluster.cli import main as cli

    out = {}
    for workers in (1, 2):
        run_dir = work / f"throughput-w{workers}"
        size = ["--prompts-per-step", str(args.prompts_per_step)] if args.prompts_per_step else []
        argv = ["rl", *size, "--seed", str(seed), "--steps", str(args.throughput_steps), "--eval-every", "0", "--num-workers", str(workers),
                "--sft-checkpoint", str(sft_dir / "sft.pt"), "--no-progress", "--run-dir", str(run_dir)]
        if cli(argv) != 0:
            raise RuntimeError(f"hsp {' '.join(argv)} failed")
        s = json.loads((run_dir / "summary.json").read_text())
        tokens = s["config"]["prompts_per_step"] * s["config"]["group_size"] * 16  # sudoku4: 16 response tokens
        out[workers] = {"tokens_per_s": tokens * len(s["history"]) / sum(h["rollout_s"] for h in s["history"]),
                        "step_s": statistics.mean(h["step_s"] for h in s["history"]), "argv": argv}
    return out


def mean_std(xs: list[float]) -> str:
    return f"{statistics.mean(xs):+.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}" if xs else "-"


def write(args, seeds, chosen, results, tput, wall_s) -> None:
    lines = ["| arm | peak saved MiB | test acc before | test acc after | after - before (mean ± std) | per seed | "
             "fixed-train reward before -> after | tied groups | group reward std | entropy first -> last | RL s/run |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for name, _ in chosen:
        rs = [results[name, s] for s in seeds]
        deltas = [r["test_accuracy_after"] - r["test_accuracy_before"] for r in rs]
        diag = [diagnostics(r) for r in rs]
        lines.append(
            f"| {name} | {max(r['peak_saved_bytes'] for r in rs) / 2**20:.1f} | "
            f"{statistics.mean(r['test_accuracy_before'] for r in rs):.3f} | {statistics.mean(r['test_accuracy_after'] for r in rs):.3f} | "
            f"{mean_std(deltas)} | {', '.join(f'{d:+.3f}' for d in deltas)} | "
            f"{statistics.mean(r['test_before']['train_reward'] for r in rs):.3f} -> {statistics.mean(r['test_after']['train_reward'] for r in rs):.3f} | "
            f"{statistics.mean(d['tied_group_share'] for d in diag):.2f} | {statistics.mean(d['group_reward_std'] for d in diag):.3f} | "
            f"{statistics.mean(d['entropy_first'] for d in diag):.3f} -> {statistics.mean(d['entropy_last'] for d in diag):.3f} | "
            f"{statistics.mean(r['timings']['rl_s'] for r in rs):.0f} |")
    command = f"python bench/bgpo_learning.py --seeds {args.seeds} --steps {args.steps} --eval-every {args.eval_every} " \
              f"--budget-samples {args.budget_samples} --jobs {args.jobs} --arms {args.arms} --throughput-steps {args.throughput_steps}" \
              + (f" --prompts-per-step {args.prompts_per_step}" if args.prompts_per_step else "") \
              + (f" --sft-dirs {args.sft_dirs}" if args.sft_dirs else "")
    any_run = next(iter(results.values()))
    cfg = any_run["config"]
    md = ["# BGPO learning benchmark (Sudoku 4x4, CPU)", "",
          f"Command: `{command}`  ",
          f"Machine: `{' '.join(platform.uname())}`, nproc={os.cpu_count()}, shared with other jobs; total wall {wall_s / 60:.1f} min "
          f"({args.jobs} runs in parallel, 1 torch thread each)  ",
          f"Seeds {seeds}; SFT (shared per seed) up to {cfg['sft_steps']} steps, stopped at fixed-train accuracy >= {cfg['sft_stop_accuracy']}; "
          f"{args.steps} RL steps x {cfg['prompts_per_step']} prompts x G={cfg['group_size']}, lr {cfg['lr']}, kl_coef {cfg['kl_coef']}, "
          f"T={cfg['temperature']}; test accuracy = mean fraction of blank cells right (greedy, {any_run['num_test_items']} held-out puzzles).", "",
          *lines, ""]
    if tput:
        md += ["| rollout workers | rollout tokens/s | s/step |", "|---:|---:|---:|",
               *[f"| {w} | {t['tokens_per_s']:.0f} | {t['step_s']:.1f} |" for w, t in tput.items()], "",
               f"Throughput: `hsp {' '.join(tput[1]['argv'])}` (and `--num-workers 2`), {args.throughput_steps} steps each, one at a time."]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    flat = [{"arm": k[0], "seed": k[1], "curve": curve(v), "diagnostics": diagnostics(v),
             **{key: v[key] for key in ("test_accuracy_before", "test_accuracy_after", "peak_saved_bytes", "timings", "sft_steps_run")}}
            for k, v in results.items()]
    Path(args.out + ".json").write_text(json.dumps({"command": command, "wall_s": wall_s, "runs": flat, "throughput": tput}, indent=1))
    plot(chosen, seeds, results, args.out + ".png")
    print("\n".join(md))


def plot(chosen, seeds, results, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, _ in chosen:
        curves = [curve(results[name, s]) for s in seeds]
        steps = [c[0] for c in curves[0]]
        acc = np.array([[c[1] for c in cv] for cv in curves])
        line, = ax.plot(steps, acc.mean(0), marker="o", label=name)
        ax.fill_between(steps, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("RL step")
    ax.set_ylabel("held-out greedy accuracy")
    ax.set_title(f"Sudoku 4x4, {len(seeds)} seeds (band = min..max)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
