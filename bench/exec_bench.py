"""Execution benchmark: real training steps on this machine, three planners side by side.

For each world size (4 gloo ranks, then 2) it profiles the tiny GPT on this machine
(`hsp profile`'s code), draws global batches from the Wikipedia length shape scaled down
so the longest sequences need SP degree >= 2 under the per-rank token budget, plans
every batch with `static`, `batch-ada` and `fast` (the default) using the profiled cost
model, then runs real steps, interleaving the strategies step by step (so a load
change hits all of them alike). It prints measured seconds per step, ratios against
`static` and the cost model's prediction error |predicted - measured| / measured, and
writes the table to bench/results/exec.md (+ .json) with the machine and command.
Each step's static plan also runs a second time: the spread between the two runs of one
plan is the noise floor of the machine, printed with the table. By default rank r is
pinned to core r*C/N (profile and steps alike) so ranks behave like devices with a fixed
share of the CPU, as the cost model assumes (`--no-pin` to let the OS schedule freely).

    .venv/bin/python bench/exec_bench.py               # ~5-10 minutes on 2 cores
    .venv/bin/python bench/exec_bench.py --quick       # fewer steps, a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hsp.engine import Worker, WorkerConfig  # noqa: E402
from hsp.engine.profile import ProfileConfig, residual_table, run_profile  # noqa: E402
from hsp.model.gpt import GPTConfig  # noqa: E402
from hsp.testing import run_ranks  # noqa: E402
from solver.cost import CostModel  # noqa: E402
from solver.planner import plan as make_step_plan  # noqa: E402
from solver.spec import ClusterSpec  # noqa: E402
from solver.workloads import BatchSampler, ScaledSource, get_workload  # noqa: E402

STRATEGIES = ("static", "batch-ada", "fast")
REPEAT = "static#2"
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world-sizes", default="4,2", help="comma-separated rank counts (default 4,2)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per strategy (default 10)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per global batch (default 64)")
    p.add_argument("--max-len", type=int, default=2048, help="longest sequence after scaling (default 2048)")
    p.add_argument("--scale", type=float, default=1 / 4, help="Wikipedia lengths x this (default 1/4)")
    p.add_argument("--capacity-fraction", type=float, default=0.75,
                   help="per-rank token budget as a fraction of --max-len (default 0.75: the longest need SP2)")
    p.add_argument("--cost", action="append", default=[], metavar="N=FILE",
                   help="use this cost model for N ranks instead of profiling (repeatable)")
    p.add_argument("--no-pin", dest="pin_cpus", action="store_false",
                   help="do not pin ranks to CPU slices (profile and steps); by default rank r gets core r*C/N")
    p.add_argument("--quick", action="store_true", help="2 steps, short profile: a smoke run")
    p.add_argument("--out", default=str(RESULTS / "exec"), help="results path stem (default bench/results/exec)")
    return p.parse_args(argv)


MODEL = GPTConfig(num_layers=2, hidden_size=64, num_heads=4, vocab_size=260, max_seq_len=2048)


def bench_rank(rank: int, world_size: int, rendezvous: str, config: WorkerConfig, runs: list) -> list[dict]:
    """Run every (strategy, step) in the given order; return each step's report."""
    worker = Worker()
    worker.setup(rank, world_size, rendezvous, config)
    out = []
    try:
        torch.manual_seed(0)
        warm = runs[0]
        worker.run_step(warm["plan"], warm["batch"])  # allocator/kernel warm-up
        for run in runs:
            torch.distributed.barrier()  # start every step together
            report = worker.run_step(run["plan"], run["batch"])
            out.append({"strategy": run["strategy"], "step": run["step"], "step_s": report.step_s,
                        "mb_total_s": [mb["total_s"] for mb in report.micro_batches],
                        "a2a_s": sum(mb["a2a_s"] for mb in report.micro_batches),
                        "allreduce_s": report.allreduce_s, "peak_memory_bytes": report.peak_memory_bytes})
    finally:
        worker.shutdown()
    return out


def spec_for(world_size: int, cost: CostModel, capacity: int) -> ClusterSpec:
    memory = math.ceil(cost.state_bytes_per_rank(world_size) + capacity * cost.act_bytes_per_token)
    return ClusterSpec(num_ranks=world_size, ranks_per_node=world_size, num_heads=MODEL.num_heads,
                       device_memory_bytes=memory)


def profile(world_size: int, args) -> CostModel:
    for item in args.cost:
        n, _, path = item.partition("=")
        if int(n) == world_size:
            return CostModel.load(path)
    lengths = (64, 256, 1024, 2048) if args.quick else (64, 128, 256, 512, 1024, 1536, 2048)
    cfg = ProfileConfig(model=MODEL, num_ranks=world_size, lengths=lengths, num_repeats=2 if args.quick else 7,
                        name=f"bench-cpu-N{world_size}", pin_cpus=args.pin_cpus)
    result = run_profile(cfg)
    print(residual_table(result))
    print(f"profile N={world_size}: median |fit error| {result.fit.median_rel_error:.1%} in {result.seconds:.0f}s")
    result.fit.model.save(f"{args.out}-cost-N{world_size}.json")
    return result.fit.model


def run_world(world_size: int, args) -> dict:
    cost = profile(world_size, args)
    capacity = int(args.capacity_fraction * args.max_len)
    spec = spec_for(world_size, cost, capacity)
    assert cost.token_capacity(spec) >= capacity - 1
    source = ScaledSource(get_workload("wikipedia"), args.scale)
    sampler = BatchSampler(source, args.batch_size, args.max_len, seed=world_size)
    gen = torch.Generator().manual_seed(0)
    # static: one degree for the whole run, the one the longest possible sequence needs
    # (DeepSpeed-Ulysses style); batch-ada re-picks a single degree per batch
    static_degree = cost.min_degree(args.max_len, spec)
    runs, plans = [], {}
    for step in range(args.steps):
        lengths = sampler.batch(step)
        batch = [torch.randint(0, 256, (int(n),), generator=gen) for n in lengths]
        for k in range(len(STRATEGIES)):  # rotate the order every step
            strategy = STRATEGIES[(k + step) % len(STRATEGIES)]
            plan = make_step_plan(lengths, spec, cost, strategy, static_degree=static_degree)
            plans[(strategy, step)] = plan
            runs.append({"strategy": strategy, "step": step, "plan": plan, "batch": batch})
        # the static plan once more: two runs of one plan measure the noise floor
        runs.append({"strategy": REPEAT, "step": step, "plan": plans[("static", step)], "batch": batch})
    config = WorkerConfig(model=MODEL, spec=spec, cost_model=cost, num_threads=1, collective_timeout_s=300.0,
                          pin_cpus=args.pin_cpus)
    started = time.perf_counter()
    reports = run_ranks(bench_rank, world_size, (config, runs), timeout_s=3600)
    rows, steps = summarize(reports, plans)
    return {"world_size": world_size, "capacity_tokens": capacity, "static_degree": static_degree, "rows": rows,
            "steps": steps,
            "seconds": time.perf_counter() - started, "cost": cost.to_dict(),
            "plans": {f"{s}/{k}": p.summary() for (s, k), p in plans.items()}}


def summarize(reports: list[list[dict]], plans: dict) -> tuple[list[dict], list[dict]]:
    rows, steps = [], []
    for k, entry in enumerate(reports[0]):
        plan = plans[("static" if entry["strategy"] == REPEAT else entry["strategy"], entry["step"])]
        steps.append({"strategy": entry["strategy"], "step": entry["step"], "plan": plan.summary(),
                      "step_s": max(r[k]["step_s"] for r in reports), "predicted_s": plan.predicted_s,
                      "mb_predicted_s": [mb.predicted_s for mb in plan.micro_batches],
                      "mb_measured_s": np.max([r[k]["mb_total_s"] for r in reports], axis=0).tolist(),
                      "allreduce_s": max(r[k]["allreduce_s"] for r in reports)})
    for strategy in STRATEGIES:
        measured, predicted, errors, a2a = [], [], [], []
        for k, entry in enumerate(reports[0]):
            if entry["strategy"] != strategy:
                continue
            step_s = max(r[k]["step_s"] for r in reports)  # the step ends with its slowest rank
            pred = plans[(strategy, entry["step"])].predicted_s
            measured.append(step_s)
            predicted.append(pred)
            errors.append(abs(pred - step_s) / step_s)
            a2a.append(max(r[k]["a2a_s"] for r in reports))
        # medians: other processes share the cores, and one descheduled rank stalls its group
        rows.append({"strategy": strategy, "measured_s": statistics.median(measured), "predicted_s": statistics.median(predicted),
                     "mean_measured_s": statistics.mean(measured),
                     "median_error": statistics.median(errors), "a2a_s": statistics.mean(a2a),
                     "num_micro_batches": statistics.mean(len(plans[(strategy, s)].micro_batches) for s in range(len(measured))),
                     "steps": len(measured)})
    # noise floor: the static plan of each step ran twice
    same = []
    for k in {st["step"] for st in steps}:
        a, b = (next(st for st in steps if st["step"] == k and st["strategy"] == name) for name in ("static", REPEAT))
        same.append(abs(a["step_s"] - b["step_s"]) / min(a["step_s"], b["step_s"]))
    for r in rows:
        r["identical_plan_spread"] = statistics.median(same) if same else None
        r["identical_plan_pairs"] = len(same)
    base = next(r["measured_s"] for r in rows if r["strategy"] == "static")
    for r in rows:
        r["speedup_vs_static"] = base / r["measured_s"]
    return rows, steps


def table(result: dict) -> str:
    lines = [f"**{result['world_size']} gloo ranks**, per-rank budget {result['capacity_tokens']} tokens",
             "", "| strategy | measured s/step (median) | mean | predicted s/step (median) | speed-up vs static | median pred. error | a2a s/step | micro-batches |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['strategy']} | {r['measured_s']:.3f} | {r['mean_measured_s']:.3f} | {r['predicted_s']:.3f} | {r['speedup_vs_static']:.2f}x | "
                     f"{r['median_error']:.1%} | {r['a2a_s']:.3f} | {r['num_micro_batches']:.1f} |")
    r = result["rows"][0]
    if r["identical_plan_pairs"]:
        lines.append(f"\nNoise floor: each step's static plan ran twice; the two measured times differ by "
                     f"{r['identical_plan_spread']:.0%} (median over {r['identical_plan_pairs']} steps).")
    return "\n".join(lines)


def machine() -> str:
    load = os.getloadavg()
    return f"`{platform.uname().system} {platform.uname().release} {platform.machine()}`, nproc {os.cpu_count()}, " \
           f"torch {torch.__version__}, load average at end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.steps = 2
    start_load = os.getloadavg()[0]
    results = []
    for ws in (int(x) for x in args.world_sizes.split(",")):
        result = run_world(ws, args)
        for st in result["steps"]:
            print(f"  {st['strategy']:>9} step {st['step']}: measured {st['step_s']:.3f}s predicted {st['predicted_s']:.3f}s "
                  f"(all-reduce {st['allreduce_s']:.3f}s) mb measured {[round(x, 3) for x in st['mb_measured_s']]} "
                  f"predicted {[round(x, 3) for x in st['mb_predicted_s']]} {st['plan']}")
        print(table(result), flush=True)
        results.append(result)
    command = "python bench/exec_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    text = "\n\n".join(table(r) for r in results)
    header = (f"Command: `{command.strip()}`  \nMachine: `{uname}`; {machine()}; load average at start {start_load:.2f}  \n"
              f"Workload: Wikipedia length shape x {args.scale:g}, max length {args.max_len}, "
              f"{args.batch_size} sequences per step, {args.steps} steps per strategy, interleaved.\n")
    Path(args.out + ".md").write_text(header + "\n" + text + "\n")
    Path(args.out + ".json").write_text(json.dumps({"command": command, "uname": uname, "results": results}, indent=1))
    print(f"wrote {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
