"""Gradient signal-to-noise of the default RL recipe at each seed's SFT start.

Why a seed learns less than another is a question about its gradient, not about the
final number: this draws K independent rollout batches (the run's own first K steps:
same prompts, same sampler streams) from one SFT checkpoint, without updating, and
measures the BGPO n_t=4 gradient of each batch, the same with advantages shuffled
within groups (same update size, no signal: its expected gradient is zero, so its
"signal" row is the estimator's floor), and the SFT gradient (masked-diffusion loss on
the reference answers of the same prompts: the direction toward right answers).

Per seed and arm: mean batch-gradient norm, the norm of the mean over batches, noise =
sum_k ‖g_k - g_mean‖² / (K - 1) (one batch's variance), the unbiased signal
‖E g‖² = ‖g_mean‖² - noise / K, SNR = signal / noise (one batch), and the cosine
between the mean RL gradient and the mean SFT gradient. The KL penalty is left out: its
gradient is exactly zero at the reference (tested), which is where these are measured.

    .venv/bin/python bench/rl_gradient_snr.py --sft-dirs 'runs/sft-{seed}'   # bench/results/rl_gradient_snr.{md,json}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hsp.rl.config import RLConfig  # noqa: E402
from hsp.rl.rollout import group_diagnostics, rollout, shuffle_within_groups  # noqa: E402
from hsp.rl.step import measure_sample_bytes  # noqa: E402
from hsp.rl.update import PolicyUpdate, Rollouts  # noqa: E402
from hsp.rl.warmup import build_model, load_sft, sft_loss, task_splits  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def flat_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.detach().flatten().double() if p.grad is not None else torch.zeros(p.numel(), dtype=torch.float64)
                      for p in model.parameters()])


def rl_grad(model, cfg: RLConfig, batch: Rollouts, rows, shared: torch.Generator, sample_bytes: int) -> torch.Tensor:
    gen = torch.Generator().set_state(shared.get_state())  # the run's masks for this step
    update = PolicyUpdate(model, "bgpo", batch, num_samples=cfg.mc_samples, elbo_form=cfg.elbo_form, generator=gen, min_t=cfg.min_t,
                          global_rows=rows, temperature=cfg.temperature)
    model.zero_grad(set_to_none=True)
    update.backward(cfg.act_budget_bytes, sample_bytes)
    return flat_grad(model)


def stats(grads: list[torch.Tensor], sft_mean: torch.Tensor) -> dict:
    g = torch.stack(grads)
    k = len(grads)
    mean = g.mean(0)
    noise = float(((g - mean) ** 2).sum() / (k - 1))
    signal = float(mean.pow(2).sum()) - noise / k
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))  # noqa: E731
    even, odd = g[0::2].mean(0), g[1::2].mean(0)
    return {"norm_mean_batch": float(g.norm(dim=1).mean()), "norm_of_mean": float(mean.norm()), "noise": noise, "signal": signal,
            "snr": signal / noise, "cos_to_sft": cos(mean, sft_mean), "cos_halves_to_sft": [cos(even, sft_mean), cos(odd, sft_mean)],
            "cos_between_halves": cos(even, odd)}


def measure(seed: int, sft_path: str, batches: int) -> dict:
    cfg = RLConfig(seed=seed, sft_checkpoint=sft_path, num_threads=1)
    torch.set_num_threads(1)
    task, train, _ = task_splits(cfg)
    model = build_model(cfg, task)
    load_sft(model, cfg)
    sample_bytes = measure_sample_bytes(model, task, train, cfg)
    grads: dict[str, list[torch.Tensor]] = {"bgpo": [], "shuffled": [], "sft": []}
    tied, group_std = [], []
    for step in range(batches):
        batch, rewards, rows, shared = rollout(model, task, train, cfg, step)
        diag = group_diagnostics(rewards, cfg.group_size)
        tied.append(diag["tied_groups"] / cfg.prompts_per_step)
        group_std.append(diag["group_std"] / cfg.prompts_per_step)
        grads["bgpo"].append(rl_grad(model, cfg, batch, rows, shared, sample_bytes))
        shuffled = shuffle_within_groups(batch.advantages.view(-1, cfg.group_size), torch.Generator().manual_seed(10_000 + step)).flatten()
        grads["shuffled"].append(rl_grad(model, cfg, dataclasses.replace(batch, advantages=shuffled), rows, shared, sample_bytes))
        prompts = batch.prompts[:: cfg.group_size]  # the step's prompts, once each
        answers = train.answers[[train_index(train, p) for p in prompts]]
        model.zero_grad(set_to_none=True)
        sft_loss(model, prompts, answers, torch.Generator().manual_seed(step), cfg.min_t).backward()
        grads["sft"].append(flat_grad(model))
    sft_mean = torch.stack(grads["sft"]).mean(0)
    return {"seed": seed, "batches": batches, "tied_group_share": sum(tied) / batches, "group_reward_std": sum(group_std) / batches,
            **{arm: stats(grads[arm], sft_mean) for arm in ("bgpo", "shuffled", "sft")}}


def train_index(train, prompt: torch.Tensor) -> int:
    hits = (train.prompts == prompt).all(dim=1).nonzero()
    return int(hits[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--batches", type=int, default=8, help="K rollout batches per seed (the run's first K steps)")
    p.add_argument("--sft-dirs", required=True, metavar="PATTERN", help="sft.pt of default `hsp rl` runs, e.g. runs/sft-{seed}")
    p.add_argument("--out", default=str(RESULTS / "rl_gradient_snr"))
    args = p.parse_args()
    t0 = time.perf_counter()
    rows = [measure(int(s), str(Path(args.sft_dirs.format(seed=s)) / "sft.pt"), args.batches) for s in args.seeds.split(",")]
    wall = time.perf_counter() - t0
    lines = ["| seed | tied groups | group reward std | arm | mean batch-gradient norm | norm of the mean | signal ‖E g‖² | "
             "noise (one batch) | SNR (one batch) | cos(mean, SFT mean) | same, even / odd batches | cos(even mean, odd mean) |",
             "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for arm in ("bgpo", "shuffled", "sft"):
            s = r[arm]
            lines.append(f"| {r['seed']} | {r['tied_group_share']:.3f} | {r['group_reward_std']:.3f} | {arm} | {s['norm_mean_batch']:.4f} | "
                         f"{s['norm_of_mean']:.4f} | {s['signal']:.2e} | {s['noise']:.2e} | {s['snr']:.3f} | {s['cos_to_sft']:+.3f} | "
                         f"{s['cos_halves_to_sft'][0]:+.3f} / {s['cos_halves_to_sft'][1]:+.3f} | {s['cos_between_halves']:+.3f} |")
    command = f"python bench/rl_gradient_snr.py --seeds {args.seeds} --batches {args.batches} --sft-dirs '{args.sft_dirs}'"
    md = ["# Gradient signal-to-noise at the SFT start (Sudoku 4x4, default recipe)", "",
          f"Command: `{command}`  ", f"Machine: `{' '.join(platform.uname())}`, torch {torch.__version__}, 1 thread; {wall:.0f} s", "",
          "Each batch = one RL step of the default recipe (64 prompts x G=8, BGPO n_t=4), no update in between. "
          "The shuffled arm's signal is the estimator's floor (its expected gradient is zero); the SFT arm is "
          "the masked-diffusion loss on the reference answers of the same prompts. The even / odd columns split the K batches "
          "in two independent halves: a direction that is signal shows in both, noise does not.", "", *lines]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    Path(args.out + ".json").write_text(json.dumps({"command": command, "wall_s": wall, "seeds": rows}, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
