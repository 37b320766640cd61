"""Execution benchmark: real training steps on this machine, three planners side by side.

For each world size N (4 gloo ranks, then 2):

1. profile the tiny decoder on this machine with `hsp profile`'s code, in the configuration
   the steps use (same model, same N ranks, same pinning, one torch thread per rank),
   right before the steps, so the prediction error measures the cost model rather than a
   load change between profile and steps;
2. draw global batches from the Wikipedia length shape scaled down, under a per-rank
   token budget of `budget_factor * max_len / N`, so the longest sequences need SP=N
   (`static` is then one SP=N group, DeepSpeed-Ulysses with SP = world size) while most
   sequences fit one rank;
3. plan every batch with `static`, `batch-ada` and `fast` (the default) using the
   profiled cost model, and run real steps with the strategies interleaved step by step
   on the same batches (order rotated every step), the static plan twice per step (the
   spread between two runs of one plan is the noise floor);
4. print measured seconds per step, speed-ups against `static` and the cost model's
   prediction error |predicted - measured| / measured, and write the tables to
   bench/results/exec.md (+ .json) with the machine, the command and the load average.

The predicted step time is the plan's (sum over micro-batches of the slowest group) plus
the step's fixed tail (gradient all-reduce, clipping, AdamW), measured on warm-up steps
before the timed ones; the tail is the same for every strategy.

    .venv/bin/python bench/exec_bench.py               # ~2-3 minutes on 2 idle cores
    .venv/bin/python bench/exec_bench.py --quick       # fewer steps, a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hsp.engine import Rank, SupervisedSpec, WorkerConfig  # noqa: E402
from hsp.engine.profile import ProfileConfig, residual_table, run_profile  # noqa: E402
from hsp.model.config import ModelConfig  # noqa: E402
from hsp.engine.spawn import spawn_ranks  # noqa: E402
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
    p.add_argument("--steps", type=int, default=30, help="timed steps per strategy (default 30)")
    p.add_argument("--warmup-steps", type=int, default=3, help="untimed steps that also measure the step tail (default 3)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per global batch (default 64)")
    p.add_argument("--max-len", type=int, default=2048, help="longest sequence after scaling (default 2048)")
    p.add_argument("--scale", type=float, default=1 / 4, help="Wikipedia lengths x this (default 1/4)")
    p.add_argument("--budget-factor", type=float, default=1.5,
                   help="per-rank token budget = this x max-len / N (default 1.5: sequences longer than "
                        "0.75 x max-len need SP=N, so static is one SP=N group)")
    p.add_argument("--num-layers", type=int, default=2, help="decoder blocks (default 2)")
    p.add_argument("--hidden-size", type=int, default=64, help="decoder width (default 64)")
    p.add_argument("--num-heads", type=int, default=4, help="query heads (default 4)")
    p.add_argument("--num-kv-heads", type=int, default=2, help="key/value heads (default 2: degree 4 replicates them)")
    p.add_argument("--cost", action="append", default=[], metavar="N=FILE",
                   help="use this cost model for N ranks instead of profiling (repeatable)")
    p.add_argument("--no-pin", dest="pin_cpus", action="store_false",
                   help="do not pin ranks to CPU slices (profile and steps); by default rank r gets core r*C/N")
    p.add_argument("--settle-s", type=float, default=5.0, help="pause before each world size (default 5 s)")
    p.add_argument("--quick", action="store_true", help="3 steps, short profile: a smoke run")
    p.add_argument("--out", default=str(RESULTS / "exec"), help="results path stem (default bench/results/exec)")
    return p.parse_args(argv)


def model_config(args) -> ModelConfig:
    return ModelConfig(num_layers=args.num_layers, hidden_size=args.hidden_size, num_heads=args.num_heads,
                       num_kv_heads=args.num_kv_heads, intermediate_size=args.hidden_size * 11 // 4, vocab_size=260,
                       max_seq_len=args.max_len)


def bench_rank(rank: int, world_size: int, rendezvous: str, config: WorkerConfig, warmup: list, runs: list) -> dict:
    """Warm-up steps (which measure the step tail), then every (strategy, step) in order."""
    host = Rank()
    host.setup(rank, world_size, rendezvous, SupervisedSpec(worker=config))
    worker = host.program
    out = {"tail_s": [], "runs": []}
    try:
        torch.manual_seed(0)
        for run in warmup:
            torch.distributed.barrier()
            report = worker.run_step(run["plan"], run["batch"])
            # everything after the last micro-batch: all-reduce (incl. waiting for the
            # slowest rank), clipping, AdamW
            out["tail_s"].append(report.step_s - sum(mb["total_s"] for mb in report.micro_batches))
        for run in runs:
            torch.distributed.barrier()  # start every step together
            report = worker.run_step(run["plan"], run["batch"])
            out["runs"].append({"step_s": report.step_s, "mb_total_s": [mb["total_s"] for mb in report.micro_batches],
                                "a2a_s": sum(mb["a2a_s"] for mb in report.micro_batches),
                                "allreduce_s": report.allreduce_s, "peak_memory_bytes": report.peak_memory_bytes})
    finally:
        host.shutdown()
    return out


def spec_for(world_size: int, cost: CostModel, capacity: int, model: ModelConfig) -> ClusterSpec:
    memory = math.ceil(cost.state_bytes_per_rank(world_size) + capacity * cost.act_bytes_per_token)
    return ClusterSpec(num_ranks=world_size, ranks_per_node=world_size, num_heads=model.num_heads,
                       num_kv_heads=model.num_kv_heads, device_memory_bytes=memory)


def profile(world_size: int, args) -> tuple[CostModel, dict]:
    for item in args.cost:
        n, _, path = item.partition("=")
        if int(n) == world_size:
            return CostModel.load(path), {"file": path}
    lengths = (64, 256, 1024, 2048) if args.quick else (64, 128, 256, 512, 1024, 1536, 2048)
    lengths = tuple(s for s in lengths if s <= args.max_len)
    cfg = ProfileConfig(model=model_config(args), num_ranks=world_size, lengths=lengths,
                        num_repeats=2 if args.quick else 5, name=f"bench-cpu-N{world_size}", pin_cpus=args.pin_cpus)
    result = run_profile(cfg)
    print(residual_table(result))
    fit = result.fit
    print(f"profile N={world_size}: median |fit error| {fit.median_rel_error:.1%}, max {fit.max_rel_error:.1%}, "
          f"{result.seconds:.0f}s")
    fit.model.save(f"{args.out}-cost-N{world_size}.json")
    return fit.model, {"seconds": result.seconds, "median_rel_error": fit.median_rel_error,
                       "max_rel_error": fit.max_rel_error, "num_samples": fit.num_samples,
                       "samples": [{"lengths": f"{len(ls)} x {ls[0]}", "degree": d, "measured_s": t,
                                    "fitted_s": fit.model.group_time_s(ls, d)} for ls, d, t in result.samples]}


def make_runs(world_size: int, args, spec: ClusterSpec, cost: CostModel, static_degree: int):
    source = ScaledSource(get_workload("wikipedia"), args.scale)
    sampler = BatchSampler(source, args.batch_size, args.max_len, seed=world_size)
    gen = torch.Generator().manual_seed(0)
    runs, plans = [], {}
    for step in range(-args.warmup_steps, args.steps):  # negative steps: warm-up
        lengths = sampler.batch(step + args.warmup_steps)
        batch = [torch.randint(0, 256, (int(n),), generator=gen) for n in lengths]
        order = [STRATEGIES[(k + step) % len(STRATEGIES)] for k in range(len(STRATEGIES))]  # rotated each step
        for strategy in order:
            plan = make_step_plan(lengths, spec, cost, strategy, static_degree=static_degree)
            plans[(strategy, step)] = plan
            runs.append({"strategy": strategy, "step": step, "plan": plan, "batch": batch})
        # the static plan once more: two runs of one plan measure the noise floor
        runs.append({"strategy": REPEAT, "step": step, "plan": plans[("static", step)], "batch": batch})
    warmup = [r for r in runs if r["step"] < 0 and r["strategy"] != REPEAT]
    return warmup, [r for r in runs if r["step"] >= 0], plans


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its reaped children)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # minus idle and iowait
    own = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy / os.sysconf("SC_CLK_TCK"), sum(r.ru_utime + r.ru_stime for r in own)


def run_world(world_size: int, args) -> dict:
    time.sleep(args.settle_s)  # let the previous world's ranks leave the cores
    load_start = os.getloadavg()
    busy0, own0, wall0 = *cpu_seconds(), time.perf_counter()
    cost, profile_info = profile(world_size, args)
    capacity = int(args.budget_factor * args.max_len / world_size)
    spec = spec_for(world_size, cost, capacity, model_config(args))
    assert cost.token_capacity(spec) >= capacity - 1
    # static: one degree for the whole run, the one the longest allowed sequence needs
    # (DeepSpeed-Ulysses style); batch-ada re-picks a single degree per batch
    static_degree = cost.min_degree(args.max_len, spec)
    if static_degree != world_size:
        print(f"note: with {capacity} tokens per rank the max length {args.max_len} needs SP{static_degree}, "
              f"not SP{world_size}", file=sys.stderr)
    warmup, runs, plans = make_runs(world_size, args, spec, cost, static_degree)
    config = WorkerConfig(model=model_config(args), spec=spec, cost_model=cost, num_threads=1,
                          collective_timeout_s=300.0, pin_cpus=args.pin_cpus)
    started = time.perf_counter()
    reports = spawn_ranks(bench_rank, world_size, (config, warmup, runs), timeout_s=3600)
    tail_s = statistics.median(max(r["tail_s"][k] for r in reports) for k in range(len(warmup)))
    steps = step_table(reports, runs, tail_s)
    busy1, own1 = cpu_seconds()
    # CPU time other processes took while this world size ran (profile + steps): the
    # interference the measurement saw, unlike the load average, which counts our own ranks
    foreign_s = max(0.0, (busy1 - busy0) - (own1 - own0))
    wall_s = time.perf_counter() - wall0
    return {"world_size": world_size, "capacity_tokens": capacity, "static_degree": static_degree,
            "tail_s": tail_s, "rows": summarize(steps), "noise": noise(steps), "steps": steps,
            "seconds": time.perf_counter() - started, "cost": cost.to_dict(), "profile": profile_info,
            "load_start": load_start, "load_end": os.getloadavg(), "wall_s": wall_s,
            "foreign_cpu_s": foreign_s, "foreign_cpu_share": foreign_s / (wall_s * os.cpu_count()),
            "plans": {f"{s}/{k}": p.summary() for (s, k), p in plans.items()}}


def step_table(reports: list[dict], runs: list[dict], tail_s: float) -> list[dict]:
    steps = []
    for k, run in enumerate(runs):
        per_rank = [r["runs"][k] for r in reports]
        plan = run["plan"]
        steps.append({"strategy": run["strategy"], "step": run["step"], "plan": plan.summary(),
                      "step_s": max(r["step_s"] for r in per_rank),  # the step ends with its slowest rank
                      "predicted_s": plan.predicted_s + tail_s,
                      "lower_bound_s": plan.lower_bound_s + tail_s,
                      "mb_predicted_s": [mb.predicted_s for mb in plan.micro_batches],
                      "mb_measured_s": np.max([r["mb_total_s"] for r in per_rank], axis=0).tolist(),
                      "a2a_s": max(r["a2a_s"] for r in per_rank),
                      "allreduce_s": max(r["allreduce_s"] for r in per_rank),
                      "num_micro_batches": len(plan.micro_batches)})
    return steps


def summarize(steps: list[dict]) -> list[dict]:
    by = {s: {st["step"]: st for st in steps if st["strategy"] == s} for s in STRATEGIES}
    base = by["static"]
    rows = []
    for strategy in STRATEGIES:
        mine = list(by[strategy].values())
        measured = [st["step_s"] for st in mine]
        errors = [abs(st["predicted_s"] - st["step_s"]) / st["step_s"] for st in mine]
        mb_errors = [abs(p - m) / m for st in mine for p, m in zip(st["mb_predicted_s"], st["mb_measured_s"])]
        rows.append({"strategy": strategy, "steps": len(mine),
                     "measured_s": statistics.median(measured), "mean_measured_s": statistics.mean(measured),
                     "predicted_s": statistics.median(st["predicted_s"] for st in mine),
                     # throughput ratio (total time of the same batches) and the median paired ratio
                     "speedup_vs_static": sum(b["step_s"] for b in base.values()) / sum(measured),
                     "predicted_speedup": sum(b["predicted_s"] for b in base.values()) / sum(st["predicted_s"] for st in mine),
                     # the planner's lower bound on any plan of these batches: the most any planner could gain
                     "bound_speedup": sum(b["predicted_s"] for b in base.values()) / sum(st["lower_bound_s"] for st in mine),
                     "median_paired_speedup": statistics.median(base[k]["step_s"] / st["step_s"] for k, st in by[strategy].items()),
                     "median_error": statistics.median(errors), "median_mb_error": statistics.median(mb_errors),
                     "a2a_s": statistics.mean(st["a2a_s"] for st in mine),
                     "num_micro_batches": statistics.mean(st["num_micro_batches"] for st in mine)})
    return rows


def noise(steps: list[dict]) -> dict:
    """Spread between the two runs of each step's static plan."""
    a = {st["step"]: st["step_s"] for st in steps if st["strategy"] == "static"}
    b = {st["step"]: st["step_s"] for st in steps if st["strategy"] == REPEAT}
    spread = [abs(a[k] - b[k]) / min(a[k], b[k]) for k in a]
    return {"median_spread": statistics.median(spread), "pairs": len(spread),
            "total_ratio": sum(a.values()) / sum(b.values())}


def table(result: dict) -> str:
    n = result["world_size"]
    lines = [f"**{n} gloo ranks**, per-rank budget {result['capacity_tokens']} tokens (static = SP{result['static_degree']}), "
             f"step tail (all-reduce + AdamW) {result['tail_s'] * 1e3:.1f} ms; 1-min load average {result['load_start'][0]:.2f} "
             f"before, {result['load_end'][0]:.2f} after (includes the {n} ranks); other processes used "
             f"{result['foreign_cpu_s']:.1f} CPU-s of {result['wall_s'] * os.cpu_count():.0f} "
             f"({result['foreign_cpu_share']:.1%}) during profile + steps",
             "", "| strategy | measured s/step (median) | predicted s/step (median) | speed-up vs static (total) "
                 "| speed-up (median per step) | median pred. error (step) | median pred. error (micro-batch) "
                 "| a2a s/step | micro-batches |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['strategy']} | {r['measured_s']:.3f} | {r['predicted_s']:.3f} | {r['speedup_vs_static']:.2f}x | "
                     f"{r['median_paired_speedup']:.2f}x | {r['median_error']:.1%} | {r['median_mb_error']:.1%} | "
                     f"{r['a2a_s']:.3f} | {r['num_micro_batches']:.1f} |")
    rows = {r["strategy"]: r for r in result["rows"]}
    st, fa = rows["static"], rows["fast"]
    lines.append(f"\nCost model's view of the same batches: `fast` predicted {fa['predicted_speedup']:.2f}x faster than "
                 f"`static`; no plan can be more than {fa['bound_speedup']:.2f}x faster (static predicted / the planner's "
                 f"lower bound). `static` spends {st['a2a_s'] / st['mean_measured_s']:.0%} of its step in all-to-alls; "
                 f"step minus all-to-all: static {st['mean_measured_s'] - st['a2a_s']:.3f} s, fast "
                 f"{fa['mean_measured_s'] - fa['a2a_s']:.3f} s (means).")
    nz = result["noise"]
    lines.append(f"Noise floor: each step's static plan ran twice; the two runs differ by {nz['median_spread']:.1%} "
                 f"(median over {nz['pairs']} steps), total time ratio {nz['total_ratio']:.3f}.")
    if result["foreign_cpu_share"] > 0.05:
        lines.append(f"**Disturbed:** other processes took {result['foreign_cpu_share']:.0%} of the CPU during this run; "
                     f"rerun on an idle machine.")
    if "median_rel_error" in result["profile"]:
        p = result["profile"]
        lines.append(f"Profile ({p['num_samples']} samples, {p['seconds']:.0f} s): median fit error "
                     f"{p['median_rel_error']:.1%}, max {p['max_rel_error']:.1%}.")
    return "\n".join(lines)


def machine() -> str:
    return f"`{platform.uname().system} {platform.uname().release} {platform.machine()}`, nproc {os.cpu_count()}, " \
           f"torch {torch.__version__}"


def print_steps(result: dict) -> None:
    for st in result["steps"]:
        print(f"  {st['strategy']:>9} step {st['step']}: measured {st['step_s']:.3f}s predicted {st['predicted_s']:.3f}s "
              f"a2a {st['a2a_s']:.3f}s mb measured {[round(x, 3) for x in st['mb_measured_s']]} "
              f"predicted {[round(x, 3) for x in st['mb_predicted_s']]} {st['plan']}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.steps, args.warmup_steps = 3, 1
    start_load = os.getloadavg()
    results = []
    for ws in (int(x) for x in args.world_sizes.split(",")):
        result = run_world(ws, args)
        print_steps(result)
        print(table(result), flush=True)
        results.append(result)
    end_load = os.getloadavg()
    command = ".venv/bin/python bench/exec_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    m = model_config(args)
    header = (f"Command: `{command.strip()}`  \nMachine: `{uname}`; {machine()}  \n"
              f"Load average (1/5/15 min): {' / '.join(f'{x:.2f}' for x in start_load)} at start, "
              f"{' / '.join(f'{x:.2f}' for x in end_load)} at end  \n"
              f"Model: decoder {m.num_layers} layers, hidden {m.hidden_size}, {m.num_heads}/{m.num_kv_heads} q/kv heads, vocab {m.vocab_size}, "
              f"float32, 1 torch thread per rank, {'rank r pinned to core r*C/N' if args.pin_cpus else 'no pinning'}  \n"
              f"Workload: Wikipedia length shape x {args.scale:g}, max length {args.max_len}, "
              f"{args.batch_size} sequences per step, {args.steps} timed steps per strategy, interleaved.\n")
    text = "\n\n".join(table(r) for r in results)
    Path(args.out + ".md").write_text(header + "\n" + text + "\n")
    Path(args.out + ".json").write_text(json.dumps(
        {"command": command, "uname": uname, "nproc": os.cpu_count(), "load_start": start_load, "load_end": end_load,
         "model": vars(m), "args": vars(args), "results": results}, indent=1))
    print(f"wrote {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
