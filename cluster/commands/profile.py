"""`hsp profile`: measure this machine for a model and write a CostModel JSON.

    hsp profile --out cost.json                      # the default tiny CPU model, 4 gloo ranks
    hsp plan --workload wikipedia --cost cost.json   # plan with it

The file is what `hsp plan/simulate --cost FILE` and `hsp train` (planner.cost_model) read.
"""

from __future__ import annotations

import argparse
import sys
import time

HELP = "measure compute/all-to-all times on this machine and fit a cost model"


def register(subparsers) -> None:
    from cluster.config import PROFILE
    from cluster.configflags import add_command

    parser = add_command(
        subparsers, PROFILE, help=HELP,
        description="Run the engine on this machine (gloo on CPU, NCCL on GPUs) for the given model, "
        "fit the planner's CostModel and write it as JSON.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from cluster.config import PROFILE, check_profile_backend
    from cluster.configflags import load_or_print
    from hsp.engine.profile import residual_table, run_profile

    config = load_or_print(PROFILE, args)
    if config is None:
        return 0
    if not config.out:
        raise ValueError("no output file: pass --out FILE (where the CostModel JSON goes)")
    check_profile_backend(config, torch.cuda.is_available())
    start = time.perf_counter()
    result = run_profile(config.profile)
    fit = result.fit
    fit.model.save(config.out)
    print(residual_table(result))
    print(
        f"fit over {fit.num_samples} samples: rmse {fit.rmse_s * 1e3:.2f} ms, median |error| "
        f"{fit.median_rel_error:.1%}, max |error| {fit.max_rel_error:.1%}"
    )
    m = fit.model
    bw = ", ".join(f"SP{d}: {b / 1e6:.0f} MB/s" for d, b in sorted(m.a2a_bytes_per_s.items()))
    print(
        f"a1 {m.attn_s_per_token2:.3g} s/token^2, a2 {m.linear_s_per_token:.3g} s/token, "
        f"b1 {m.group_fixed_s * 1e3:.2f} ms/group, act {m.act_bytes_per_token:.0f} B/token, fitted all-to-all {bw}"
    )
    print(f"wrote {config.out} in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return 0
