"""`hsp profile`: measure this machine for a model and write a CostModel JSON.

    hsp profile --out cost.json                      # the default tiny CPU model, 4 gloo ranks
    hsp plan --workload wikipedia --cost cost.json   # plan with it

The file is what `hsp plan/simulate --cost FILE` and `hsp train` (planner.cost_model) read.
"""

from __future__ import annotations

import argparse
import sys
import time


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="measure compute/all-to-all times on this machine and fit a cost model",
        description="Run the engine on this machine (gloo on CPU, NCCL on GPUs) for the given model, "
        "fit the planner's CostModel and write it as JSON.",
    )
    parser.add_argument("--out", metavar="FILE", required=True, help="where to write the CostModel JSON")
    parser.add_argument("--num-ranks", type=int, default=4, help="ranks (processes) to profile with (default 4)")
    parser.add_argument("--num-layers", type=int, default=2, help="transformer blocks (default 2)")
    parser.add_argument("--hidden-size", type=int, default=64, help="model width (default 64)")
    parser.add_argument("--num-heads", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument("--vocab-size", type=int, default=260, help="vocabulary (default 260, the byte tokenizer)")
    parser.add_argument("--max-seq-len", type=int, default=2048, help="position table size (default 2048)")
    parser.add_argument(
        "--lengths", default="64,128,256,512,768,1024,1536,2048",
        help="comma-separated sequence lengths to measure (default up to 2048)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per length (default 5)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float64"))
    parser.add_argument("--backend", default="auto", choices=("auto", "gloo", "nccl"))
    parser.add_argument("--pin-cpus", action="store_true",
                        help="pin rank r to its slice of the CPUs (profile the way you will train)")
    parser.add_argument("--name", default=None, help="name stored in the cost model (default: derived from the model)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hsp.engine.profile import ProfileConfig, residual_table, run_profile
    from hsp.model.gpt import GPTConfig

    try:
        lengths = tuple(int(x) for x in args.lengths.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--lengths must be comma-separated integers, got {args.lengths!r}") from None
    model = GPTConfig(
        vocab_size=args.vocab_size, num_layers=args.num_layers, hidden_size=args.hidden_size,
        num_heads=args.num_heads, max_seq_len=args.max_seq_len,
    )
    name = args.name or f"profiled-L{args.num_layers}-H{args.hidden_size}-A{args.num_heads}-N{args.num_ranks}"
    cfg = ProfileConfig(
        model=model, num_ranks=args.num_ranks, lengths=lengths, num_repeats=args.repeats,
        dtype=args.dtype, backend=args.backend, name=name, pin_cpus=args.pin_cpus,
    )
    start = time.perf_counter()
    result = run_profile(cfg)
    fit = result.fit
    fit.model.save(args.out)
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
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return 0
