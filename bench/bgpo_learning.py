"""Held-out accuracy during RL: BGPO vs diffu-GRPO vs the full-graph ELBO, against the
within-group shuffled-advantage control (same update size, no signal).

Per seed: one SFT warm-up (the `hsp rl` default: stopped at a weak start), shared by
all arms of that seed; each arm then runs the default recipe (`hsp rl` defaults:
prompts x G = 8, AdamW, KL to the SFT policy) from those weights under the same
activation budget (`--budget-samples` x the saved bytes of one (response, MC sample)
unit), evaluated every --eval-every steps (greedy, >= 512 test items, and the fixed
training prompts):

0 bgpo n_t = 4                     (the default recipe)
1 bgpo n_t = 16                    (chunks of budget-samples units: fit the budget)
2 diffu-grpo, 2.5x the steps       (one forward per response: about half of BGPO n_t=4's
                                    update compute, so it runs 2.5x the steps and is
                                    compared at equal compute seconds as well as at equal steps)
3 full-elbo at the largest n_t whose one-response unit (n_t samples) fits the budget
4 bgpo n_t = 4, shuffled advantages (the control)
5 bgpo n_t = 4 without the KL penalty (does the penalty help?)

Compute seconds = rollout + update seconds of the RL steps (evaluations excluded), all
arms run 2 at a time on the same machine. Plus rollout throughput (response tokens /
rollout second) of short default runs with --num-workers 1 and 2 (Ray).

    .venv/bin/python bench/bgpo_learning.py --steps 100   # bench/results/bgpo_learning.{md,json,png}
    .venv/bin/python bench/bgpo_learning.py --task countdown --sft-steps 2000 --test-items 540 --arms 0,4 --throughput-steps 0 \
        --out bench/results/bgpo_learning_countdown
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


DIFFU_GRPO_STEP_FACTOR = 2.5
"""diffu-GRPO's update is one forward+backward per response against BGPO n_t=4's four:
measured on this machine its step is 1.56 s vs 2.88 s (rollout 1.05 s of both), so 2.5x
the steps covers BGPO n_t=4's compute with room for timing noise, and the comparison
interpolates at equal seconds."""


def arms(budget_samples: int, steps: int) -> list[tuple[str, dict]]:
    """(name, RLConfig overrides)."""
    full_nt = largest_fitting(budget_samples)
    return [
        ("bgpo n_t=4", dict(algo="bgpo", mc_samples=4)),
        ("bgpo n_t=16", dict(algo="bgpo", mc_samples=16)),
        (f"diffu-grpo ({DIFFU_GRPO_STEP_FACTOR}x steps)", dict(algo="diffu-grpo", mc_samples=1, steps=round(DIFFU_GRPO_STEP_FACTOR * steps))),
        (f"full-elbo n_t={full_nt} (largest in budget)", dict(algo="full-elbo", mc_samples=full_nt)),
        ("bgpo n_t=4, shuffled advantages (control)", dict(algo="bgpo", mc_samples=4, advantage_control="shuffle")),
        ("bgpo n_t=4, no KL penalty", dict(algo="bgpo", mc_samples=4, kl_coef=0.0)),
    ]


def est_cost(over: dict, steps: int) -> float:
    """Relative run time (for submitting the longest runs first): rollout ~ one update unit."""
    return over.get("steps", steps) * (1 + over["mc_samples"] / 2)


def curve(summary: dict) -> list[tuple[int, float, float, float]]:
    """(step, test accuracy, fixed-train reward, compute seconds so far) at step 0 and at
    every evaluation; compute = rollout + update seconds (evaluations excluded)."""
    points = [(0, summary["test_accuracy_before"], summary["test_before"]["train_reward"], 0.0)]
    every = summary["config"]["eval_every"]
    spent = 0.0
    for h in summary["history"]:
        spent += h["rollout_s"] + h["update_s"]
        if (every and h["step"] % every == 0) or h is summary["history"][-1]:
            points.append((h["step"], h["test_accuracy"], h["train_reward"], spent))
    return points


def at(points: list[tuple], x: float, key: int, value: int = 1) -> float:
    """Coordinate `value` of a curve (1 = test accuracy, 0 = step) at x along coordinate
    `key` (0 = step, 3 = compute seconds), linear between evaluations; x past the end is
    an error, not an extrapolation."""
    for a, b in zip(points, points[1:]):
        if a[key] <= x <= b[key]:
            w = (x - a[key]) / (b[key] - a[key]) if b[key] > a[key] else 1.0
            return a[value] + w * (b[value] - a[value])
    raise ValueError(f"{x} is past the curve's end {points[-1][key]}")


def diagnostics(summary: dict) -> dict:
    hist = summary["history"]
    mean = lambda key: statistics.mean(h[key] for h in hist)  # noqa: E731
    return {"tied_group_share": mean("tied_group_share"), "group_reward_std": mean("group_reward_std"),
            "entropy_first": hist[0]["entropy"], "entropy_last": hist[-1]["entropy"], "kl_last": hist[-1]["kl"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sudoku4")
    p.add_argument("--sft-steps", type=int, default=None, help="unset = the hsp rl default (Countdown needs ~2000)")
    p.add_argument("--test-items", type=int, default=None,
                   help="test items generated (unset = the hsp rl default); Countdown drops more train overlaps: 540 keeps >= 512")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=100, help="RL steps per arm")
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--budget-samples", type=int, default=8,
                   help="activation budget in units of one sample's saved bytes (8: full-elbo is held to n_t=8, BGPO runs n_t=16 in it)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (1 torch thread each)")
    p.add_argument("--arms", default="all", help="comma-separated arm indices (0-5) or all")
    p.add_argument("--throughput-steps", type=int, default=3, help="RL steps of the 1- and 2-worker throughput runs (0 = skip)")
    p.add_argument("--prompts-per-step", type=int, default=None, help="unset = the hsp rl default")
    p.add_argument("--sft-dirs", default=None, metavar="PATTERN",
                   help="reuse sft.pt + summary.json of earlier default `hsp rl` runs, e.g. runs/rl-{seed} (their SFT is this bench's)")
    p.add_argument("--work-dir", default="runs/bgpo_learning")
    p.add_argument("--out", default=str(RESULTS / "bgpo_learning"))
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = arms(args.budget_samples, args.steps)
    if args.arms != "all":
        chosen = [chosen[int(i)] for i in args.arms.split(",")]
    work = Path(args.work_dir)
    common = dict(task=args.task, steps=args.steps, eval_every=args.eval_every, num_threads=1)
    if args.prompts_per_step:
        common["prompts_per_step"] = args.prompts_per_step
    if args.sft_steps is not None:
        common["sft_steps"] = args.sft_steps
    if args.test_items is not None:
        common["test_items"] = args.test_items
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
        for name, over in sorted(chosen, key=lambda arm: -est_cost(arm[1], args.steps)):  # longest first: the pool stays busy
            for s in seeds:
                cfg = {**common, "seed": s, "sft_checkpoint": str(sft_dir[s] / "sft.pt"),
                       "act_budget_bytes": args.budget_samples * sft[s]["sample_bytes"], **over}
                jobs[name, s] = pool.submit(run_one, cfg, str(work / f"{name.split(' (')[0].replace(' ', '_').replace(',', '')}-{s}"))
        results = {k: jobs[k].result() for name, _ in chosen for k in [(name, s) for s in seeds]}
    wall = time.perf_counter() - t0
    tput = measure_throughput(args, work, sft_dir[seeds[0]], seeds[0]) if args.throughput_steps else {}
    write(args, seeds, chosen, results, tput, wall, [sft[s]["sft_steps_run"] for s in seeds])


def measure_throughput(args: argparse.Namespace, work: Path, sft_dir: Path, seed: int) -> dict:
    """Rollout tokens/s of `hsp rl` with 1 and 2 workers (one at a time, the same SFT start)."""
    from cluster.cli import main as cli

    out = {}
    for workers in (1, 2):
        run_dir = work / f"throughput-w{workers}"
        size = ["--prompts-per-step", str(args.prompts_per_step)] if args.prompts_per_step else []
        argv = ["rl", "--task", args.task, *size, "--seed", str(seed), "--steps", str(args.throughput_steps), "--eval-every", "0", "--num-workers", str(workers),
                "--sft-checkpoint", str(sft_dir / "sft.pt"), "--no-progress", "--run-dir", str(run_dir)]
        if cli(argv) != 0:
            raise RuntimeError(f"hsp {' '.join(argv)} failed")
        s = json.loads((run_dir / "summary.json").read_text())
        from hsp.rl.tasks import get_task

        tokens = s["config"]["prompts_per_step"] * s["config"]["group_size"] * get_task(args.task).response_len
        out[workers] = {"tokens_per_s": tokens * len(s["history"]) / sum(h["rollout_s"] for h in s["history"]),
                        "step_s": statistics.mean(h["step_s"] for h in s["history"]), "argv": argv}
    return out


def mean_std(xs: list[float]) -> str:
    return f"{statistics.mean(xs):+.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}" if xs else "-"


ACCURACY = {"sudoku4": "mean fraction of blank cells right", "addition": "share of sums right",
            "countdown": "share of valid equations that hit the target"}


def write(args, seeds, chosen, results, tput, wall_s, sft_runs) -> None:
    n = args.steps
    lines = [f"| arm | peak saved MiB | test acc before | at step {n} | change at step {n} (mean ± std) | per seed | "
             "fixed-train reward before -> end | tied groups | group reward std | entropy first -> last | kl last | compute s/run | end step: change |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, _ in chosen:
        rs = [results[name, s] for s in seeds]
        curves = [curve(r) for r in rs]
        deltas = [at(c, n, 0) - r["test_accuracy_before"] for c, r in zip(curves, rs)]
        ends = [r["test_accuracy_after"] - r["test_accuracy_before"] for r in rs]
        diag = [diagnostics(r) for r in rs]
        mean = statistics.mean
        lines.append(
            f"| {name} | {max(r['peak_saved_bytes'] for r in rs) / 2**20:.1f} | "
            f"{mean(r['test_accuracy_before'] for r in rs):.3f} | {mean(at(c, n, 0) for c in curves):.3f} | "
            f"{mean_std(deltas)} | {', '.join(f'{d:+.3f}' for d in deltas)} | "
            f"{mean(r['test_before']['train_reward'] for r in rs):.3f} -> {mean(r['test_after']['train_reward'] for r in rs):.3f} | "
            f"{mean(d['tied_group_share'] for d in diag):.2f} | {mean(d['group_reward_std'] for d in diag):.3f} | "
            f"{mean(d['entropy_first'] for d in diag):.3f} -> {mean(d['entropy_last'] for d in diag):.3f} | {mean(d['kl_last'] for d in diag):.2f} | "
            f"{mean(c[-1][3] for c in curves):.0f} | {len(rs[0]['history'])}: {mean_std(ends)} |")
    md_compute = equal_compute(chosen, seeds, results)
    command = f"python bench/bgpo_learning.py --task {args.task} --seeds {args.seeds} --steps {args.steps} --eval-every {args.eval_every} " \
              f"--budget-samples {args.budget_samples} --jobs {args.jobs} --arms {args.arms} --throughput-steps {args.throughput_steps}" \
              + (f" --sft-steps {args.sft_steps}" if args.sft_steps is not None else "") \
              + (f" --test-items {args.test_items}" if args.test_items is not None else "") \
              + (f" --prompts-per-step {args.prompts_per_step}" if args.prompts_per_step else "") \
              + (f" --sft-dirs {args.sft_dirs}" if args.sft_dirs else "")
    any_run = next(iter(results.values()))
    cfg = any_run["config"]
    md = [f"# BGPO learning benchmark ({args.task}, CPU)", "",
          f"Command: `{command}`  ",
          f"Machine: `{' '.join(platform.uname())}`, nproc={os.cpu_count()}, torch {__import__('torch').__version__}; total wall "
          f"{wall_s / 60:.1f} min ({args.jobs} runs in parallel, 1 torch thread each)  ",
          f"Seeds {seeds}; SFT (shared per seed) up to {cfg['sft_steps']} steps, stopped at fixed-train accuracy >= {cfg['sft_stop_accuracy']} "
          f"(ran {', '.join(map(str, sft_runs))} steps per seed); {args.steps} RL steps x {cfg['prompts_per_step']} prompts x G={cfg['group_size']}, lr {cfg['lr']}, "
          f"kl_coef {cfg['kl_coef']} unless the arm says otherwise, T={cfg['temperature']}, activation budget {args.budget_samples} units; "
          f"test accuracy = {ACCURACY.get(args.task, 'reward')} (greedy, {any_run['num_test_items']} held-out items); "
          f"compute s = rollout + update seconds of the RL steps (evaluations excluded). Entropy is each estimator's own masked-token "
          f"entropy (diffu-GRPO masks the whole response, BGPO samples mask rates): compare it within an arm, not across.", "",
          *lines, "", *md_compute]
    if tput:
        md += ["| rollout workers | rollout tokens/s | s/step |", "|---:|---:|---:|",
               *[f"| {w} | {t['tokens_per_s']:.0f} | {t['step_s']:.1f} |" for w, t in tput.items()], "",
               f"Throughput: `hsp {' '.join(tput[1]['argv'])}` (and `--num-workers 2`), {args.throughput_steps} steps each, one at a time."]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    flat = [{"arm": k[0], "seed": k[1], "curve": curve(v), "diagnostics": diagnostics(v),
             "history": [{key: h[key] for key in ("step", "reward", "tied_group_share", "group_reward_std", "entropy", "kl", "rollout_s", "update_s")}
                         for h in v["history"]],
             **{key: v[key] for key in ("test_accuracy_before", "test_accuracy_after", "peak_saved_bytes", "timings", "sft_steps_run")}}
            for k, v in results.items()]
    Path(args.out + ".json").write_text(json.dumps({"command": command, "wall_s": wall_s, "runs": flat, "throughput": tput}, indent=1))
    plot(args.task, chosen, seeds, results, args.out + ".png")
    print("\n".join(md))


def equal_compute(chosen, seeds, results) -> list[str]:
    """BGPO n_t=4 at its end vs diffu-GRPO at the same compute seconds (per seed)."""
    names = [name for name, _ in chosen]
    dg = next((nm for nm in names if nm.startswith("diffu-grpo")), None)
    if "bgpo n_t=4" not in names or dg is None:
        return []
    rows = ["| seed | BGPO n_t=4 compute s | BGPO n_t=4 acc | diffu-GRPO acc at the same compute s (its step) | BGPO - diffu-GRPO |",
            "|---:|---:|---:|---:|---:|"]
    diffs = []
    for s in seeds:
        b, d = curve(results["bgpo n_t=4", s]), curve(results[dg, s])
        sec = b[-1][3]
        if sec > d[-1][3]:
            rows.append(f"| {s} | {sec:.0f} | {b[-1][1]:.3f} | diffu-GRPO ran only {d[-1][3]:.0f} s | - |")
            continue
        acc = at(d, sec, 3)
        step = at(d, sec, 3, value=0)  # the step diffu-GRPO had reached at that second
        diffs.append(b[-1][1] - acc)
        rows.append(f"| {s} | {sec:.0f} | {b[-1][1]:.3f} | {acc:.3f} (~{step:.0f}) | {b[-1][1] - acc:+.3f} |")
    return ["Equal compute (accuracy interpolated linearly between diffu-GRPO's evaluations):", "", *rows,
            f"| mean | | | | {mean_std(diffs)} |", ""]


def plot(task: str, chosen, seeds, results, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for name, _ in chosen:
        curves = [curve(results[name, s]) for s in seeds]
        steps = [c[0] for c in curves[0]]
        acc = np.array([[c[1] for c in cv] for cv in curves])
        secs = np.array([[c[3] for c in cv] for cv in curves]).mean(0)
        line, = ax.plot(steps, acc.mean(0), marker="o", label=name)
        ax.fill_between(steps, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.15)
        bx.plot(secs, acc.mean(0), marker="o", color=line.get_color())
        bx.fill_between(secs, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("RL step")
    ax.set_ylabel("held-out greedy accuracy")
    bx.set_xlabel("compute seconds (rollout + update, mean over seeds)")
    fig.suptitle(f"{task}, {len(seeds)} seeds (line = mean, band = min..max)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
