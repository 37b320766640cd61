"""`hsp rl`: SFT warm-up + RL (BGPO or a baseline) of a masked-diffusion LM on a verifiable task.

Example (a few minutes on 2 CPU cores):

    hsp rl --task sudoku4 --algo bgpo --mc-samples 16 --group-size 8 --steps 30 --run-dir runs/rl

Data-parallel on Ray workers (an embedded local Ray, or --address to join a cluster):

    hsp rl --num-workers 2 --prompts-per-step 4 --run-dir runs/rl-dp
"""

from __future__ import annotations

import argparse
import dataclasses

DEFAULT_RUN_DIR = "runs/rl"


def register(subparsers) -> None:
    from hsp.rl.config import RLConfig  # torch-free: keeps `hsp --help` fast
    from hsp.rl.names import ALGOS, ELBO_FORMS, TASK_NAMES

    choices = {"task": TASK_NAMES, "algo": ALGOS, "elbo_form": ELBO_FORMS}

    p = subparsers.add_parser("rl", help="RL (BGPO) of a masked-diffusion LM on sudoku4/addition, on CPU")
    docs = _field_docs(RLConfig)
    defaults = RLConfig()
    for f in dataclasses.fields(RLConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        kind = _arg_type(f)
        help_text = docs.get(f.name, "").replace("%", "%%")  # argparse formats help with %
        if f.name == "mc_samples":
            p.add_argument(flag, type=int, default=None, help=f"{help_text} Default: 16, or 1 for diffu-grpo.")
        else:
            p.add_argument(flag, type=kind, default=default, choices=choices.get(f.name), help=f"{help_text} Default: {default}.")
    p.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help=f"Output directory (summary.json, reward_curve.png, sft.pt). Default: {DEFAULT_RUN_DIR}.")
    p.add_argument("--address", default="", help="With --num-workers > 1: join this Ray cluster ('auto' or host:port) instead of starting an embedded local one.")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="With --num-workers > 1: Ray CPUs reserved per rank. Default: 1.")
    p.add_argument("--no-progress", action="store_true", help="Disable the progress bar.")
    p.add_argument("--metrics-port", type=int, default=None, help="Serve Prometheus metrics (hsp_rl_reward, hsp_steps_total, ...) on this port.")
    p.set_defaults(func=run)


def _arg_type(field: dataclasses.Field):
    text = str(field.type)
    if "int" in text:
        return int
    if "float" in text:
        return float
    return str


def _field_docs(cls) -> dict[str, str]:
    """Field docstrings (the string literal under each field) from the class source."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for prev, node in zip(body, body[1:]):
        if isinstance(prev, ast.AnnAssign) and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            docs[prev.target.id] = str(node.value.value)
    return docs


def run(args: argparse.Namespace) -> int:
    import json

    from hsp.rl.config import RLConfig
    from hsp.rl.trainer import train

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(RLConfig)}
    if values["mc_samples"] is None:
        values["mc_samples"] = 1 if values["algo"] == "diffu-grpo" else 16
    cfg = RLConfig(**values)
    if args.cpus_per_worker <= 0:
        raise ValueError(f"--cpus-per-worker must be > 0, got {args.cpus_per_worker}")
    on_step = _metrics_callback(args.metrics_port) if args.metrics_port else None
    make_parallel = None
    if cfg.num_workers > 1:
        from cluster.launch import parallel_factory

        make_parallel = parallel_factory(args.address, args.cpus_per_worker)
    summary = train(cfg, args.run_dir, progress=not args.no_progress, on_step=on_step, make_parallel=make_parallel)
    brief = {k: summary[k] for k in ("num_workers", "test_accuracy_before", "test_accuracy_after", "sample_bytes", "peak_saved_bytes")}
    brief["timings"] = {k: round(v, 1) for k, v in summary["timings"].items()}
    print(json.dumps(brief))
    print(f"wrote {args.run_dir}/summary.json and {args.run_dir}/reward_curve.png")
    return 0


def _metrics_callback(port: int):
    from cluster.metrics import Metrics

    metrics = Metrics()
    metrics.serve(port)

    def on_step(record: dict) -> None:
        metrics["hsp_rl_reward"].set(record["reward"])
        metrics["hsp_steps_total"].inc()
        metrics["hsp_step_duration_seconds"].observe(record["step_s"])
        metrics["hsp_loss"].set(record["loss"])
        metrics["hsp_last_step_timestamp_seconds"].set_to_current_time()

    return on_step
