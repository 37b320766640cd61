"""Model-state benchmark: bytes each rank holds against the cost model, and step time of
sharded (zero3, FSDP2) against replicated ranks, on this machine's CPUs.

For two Decoder sizes (hsp.model: GQA, SwiGLU) and world sizes 1, 2 and 4 (gloo ranks, one torch thread each), every
configuration runs real SFT steps (`hsp.engine.sft`, the `fast` plan of one fixed batch)
and reports:

- the model-state bytes a rank holds after a step (storages of its parameters, gradients
  and AdamW states: `StepReport.model_state_bytes`, max over ranks) against the cost
  model's `state_bytes_per_rank(N)` = 16 B/param x P / N (zero3) or x P (replicated),
  with P the model's parameter count (target: within 10%, shrinking as 1/N);
- the median step time over the timed steps, sharded vs replicated (report, no target).

Layouts: zero3 float32 and zero3 bfloat16 (fp32 master weights, gradient shards and AdamW
states, so also 16 B/param), replicated float32.

    .venv/bin/python bench/state_bench.py            # ~15 minutes on one loaded core
    .venv/bin/python bench/state_bench.py --quick    # one model, fewer steps
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hsp.engine import Rank, SupervisedSpec, WorkerConfig  # noqa: E402
from hsp.engine.spawn import spawn_ranks  # noqa: E402
from hsp.model import Decoder, ModelConfig  # noqa: E402
from solver.cost import CostModel  # noqa: E402
from solver.planner import plan as make_step_plan  # noqa: E402
from solver.spec import ClusterSpec  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COST = Path(__file__).resolve().parents[1] / "cluster" / "configs" / "cost-cpu-tiny.json"
MODELS = {
    "small": ModelConfig(max_seq_len=1024),  # the default hsp train model
    "medium": ModelConfig(num_layers=4, hidden_size=256, num_heads=8, num_kv_heads=4, intermediate_size=688,
                          max_seq_len=1024),
}
LAYOUTS = (("zero3", "float32"), ("zero3", "bfloat16"), ("replicated", "float32"))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world-sizes", default="1,2,4", help="comma-separated rank counts (default 1,2,4)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per configuration (default 4)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step (default 16)")
    p.add_argument("--max-len", type=int, default=512, help="longest sequence (default 512)")
    p.add_argument("--quick", action="store_true", help="the small model only, 2 timed steps")
    return p.parse_args(argv)


def cost_model(model: ModelConfig, sharding: str) -> CostModel:
    """The shipped CPU profile with this model's shape, parameter count and state layout."""
    base = CostModel.load(COST)
    return replace(base, name=f"bench-{sharding}", num_params=float(Decoder(model).num_params()),
                   num_layers=model.num_layers, hidden_size=model.hidden_size, num_heads=model.num_heads,
                   num_kv_heads=model.num_kv_heads, state_sharding=sharding)


def batch(args: argparse.Namespace, vocab: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(120), 0.9, size=args.batch_size).astype(int), 8, args.max_len)
    lengths[0] = args.max_len
    return [torch.from_numpy(rng.integers(0, vocab, size=int(n))) for n in lengths]


def _rank(rank: int, world_size: int, rendezvous: str, config: WorkerConfig, seqs: list, steps: int) -> dict:
    host = Rank()
    host.setup(rank, world_size, rendezvous, SupervisedSpec(worker=config))
    plan = make_step_plan(np.asarray([len(s) for s in seqs]), config.spec, config.cost_model)
    reports = [host.program.run_step(plan, seqs) for _ in range(steps + 1)]  # the first warms up
    host.shutdown()
    return {"step_s": [r.step_s for r in reports[1:]], "state_bytes": reports[-1].model_state_bytes,
            "activation_peak_bytes": reports[-1].activation_peak_bytes, "plan": plan.summary()}


def measure(name: str, model: ModelConfig, n: int, sharding: str, dtype: str, args) -> dict:
    cost = cost_model(model, sharding)
    spec = ClusterSpec(num_ranks=n, ranks_per_node=n, num_heads=model.num_heads, num_kv_heads=model.num_kv_heads,
                       device_memory_bytes=1 << 32)
    config = WorkerConfig(model=model, spec=spec, cost_model=cost, dtype=dtype, state_sharding=sharding,
                          collective_timeout_s=600.0)
    out = spawn_ranks(_rank, n, (config, batch(args, model.vocab_size), args.steps), timeout_s=3600)
    measured = max(r["state_bytes"] for r in out)
    predicted = cost.state_bytes_per_rank(n)
    per_step = [max(r["step_s"][k] for r in out) for k in range(args.steps)]  # a step lasts as long as its slowest rank
    step_s = statistics.median(per_step)
    row = {"model": name, "params": int(cost.num_params), "world_size": n, "sharding": sharding, "dtype": dtype,
           "measured_bytes": measured, "predicted_bytes": predicted, "error": measured / predicted - 1,
           "step_s_median": step_s, "step_s_min": min(per_step), "activation_peak_bytes": max(r["activation_peak_bytes"] for r in out),
           "plan": out[0]["plan"]}
    print(f"{name:>6} N={n} {sharding:>10} {dtype:>8}: {measured / 2**20:8.3f} MiB held vs {predicted / 2**20:8.3f} "
          f"predicted ({row['error']:+.1%}), step {step_s:.3f} s", flush=True)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | params | N | layout | dtype | held / rank (MiB) | predicted (MiB) | error | x of N=1 | step s (median) |",
             "|---|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        base = next((b for b in rows if b["model"] == r["model"] and b["sharding"] == r["sharding"]
                     and b["dtype"] == r["dtype"] and b["world_size"] == 1), None)
        ratio = f"{r['measured_bytes'] / base['measured_bytes']:.3f}" if base else ""
        lines.append(f"| {r['model']} | {r['params']:,} | {r['world_size']} | {r['sharding']} | {r['dtype']} | "
                     f"{r['measured_bytes'] / 2**20:.3f} | {r['predicted_bytes'] / 2**20:.3f} | {r['error']:+.2%} | "
                     f"{ratio} | {r['step_s_median']:.3f} |")
    return "\n".join(lines)


def speed_table(rows: list[dict]) -> str:
    lines = ["| model | N | zero3 step s (median / min) | replicated step s (median / min) | zero3 / replicated (min) |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        if r["sharding"] != "zero3" or r["dtype"] != "float32" or r["world_size"] == 1:
            continue
        rep = next(b for b in rows if b["model"] == r["model"] and b["world_size"] == r["world_size"] and b["sharding"] == "replicated")
        lines.append(f"| {r['model']} | {r['world_size']} | {r['step_s_median']:.3f} / {r['step_s_min']:.3f} | "
                     f"{rep['step_s_median']:.3f} / {rep['step_s_min']:.3f} | {r['step_s_min'] / rep['step_s_min']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.quick:
        args.steps = 2
    models = {"small": MODELS["small"]} if args.quick else MODELS
    world_sizes = [int(x) for x in args.world_sizes.split(",")]
    load_start, start = os.getloadavg(), time.time()
    rows = [measure(name, model, n, sharding, dtype, args)
            for name, model in models.items() for sharding, dtype in LAYOUTS for n in world_sizes]
    meta = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{' '.join(platform.uname())}, nproc={os.cpu_count()}, affinity={len(os.sched_getaffinity(0))} CPUs, "
                       f"torch {torch.__version__}",
            "load_start": load_start, "load_end": os.getloadavg(), "wall_s": time.time() - start,
            "batch": {"sequences": args.batch_size, "max_len": args.max_len, "tokens": sum(len(s) for s in batch(args, 260))}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "state.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    text = "\n".join([
        "# Model states per rank: measured vs the cost model, sharded vs replicated step time", "",
        f"Command: `{meta['command']}`  ", f"Date: {meta['date']}  ", f"Machine: `{meta['machine']}`  ",
        f"Load average at start / end: {meta['load_start'][0]:.2f} / {meta['load_end'][0]:.2f} (shared machine; "
        f"step times are noisy)  ", f"Batch: {meta['batch']['sequences']} sequences, {meta['batch']['tokens']} tokens, "
        f"max length {args.max_len}, the `fast` plan; {args.steps} timed steps after one warm-up, one torch thread per rank", "",
        "Predicted = the cost model's `state_bytes_per_rank(N)`: 16 B/param x P / N for zero3 (FSDP2; with bf16: fp32 "
        "master weights, gradient shards and AdamW moments), 16 B/param x P for replicated float32. Held = storages "
        "of the rank's parameters, gradients and AdamW states after a step (shards include FSDP2's padding), max over "
        "ranks. Transient memory (a block's all-gathered parameters, the root's unsharded parameters during a step) "
        "is not model state and not counted.", "",
        table(rows), "", "## Step time, sharded vs replicated (float32)", "", speed_table(rows), "",
    ])
    (RESULTS / "state.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
