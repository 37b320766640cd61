"""`hsp train` end to end: check the config (before Ray starts), start or join Ray,
serve metrics, run the scheduler, write the run directory."""

from __future__ import annotations

import dataclasses
import logging
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cluster import checkpoint, sources
from cluster.config import TrainConfig, check_resume, cluster_spec
from cluster.metrics import Metrics

log = logging.getLogger("hsp.train")

EXIT_RUN_FAILED = 3
"""Exit status of `hsp train` when the workers kept failing (restarts exhausted)."""


class RunFailed(SystemExit):
    """The run stopped after exhausting its restarts; its run directory holds the history
    and summary (with a `failure` section) of the finished steps and the last good
    checkpoint. A SystemExit with status EXIT_RUN_FAILED: the one-line message is printed
    before it is raised, so `hsp train` ends without a traceback."""

    def __init__(self, message: str, summary: dict):
        super().__init__(EXIT_RUN_FAILED)
        self.message, self.summary = message, summary


@dataclass
class Prepared:
    """Everything derived from the config without touching Ray."""

    config: TrainConfig
    spec: object
    cost: object
    data_spec: object
    dataset: object
    cursor: object
    worker_config: object
    tokenizer: object
    exported_model: object
    """The model as `hsp export` writes it (hsp.model.ModelConfig; see cluster.sources.run_model)."""
    warnings: list[str] = field(default_factory=list)


def prepare(config: TrainConfig) -> Prepared:
    """Validate everything that can be validated locally; raises ValueError naming the
    key, the value and the fix."""
    from hsp.data import DataCursor, open_dataset
    from hsp.engine.config import WorkerConfig

    check_resume(config, checkpoint.saved_step(config.train.run_dir))
    cost = _cost_for_engine(config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokenizer = sources.run_tokenizer(config)
        model, exported = sources.run_model(config, tokenizer)
        spec = cluster_spec(dataclasses.replace(config, model=model), cost)
        data_spec = sources.run_data_spec(config, model, tokenizer)
        dataset = open_dataset(data_spec)  # the driver reads lengths only
    capacity = cost.token_capacity(spec)
    opt, engine = config.optimizer, config.engine
    worker_config = WorkerConfig(
        model=model,
        init_from=str(Path(config.init_from).resolve()) if config.init_from else "",
        spec=spec,
        cost_model=cost,
        lr=opt.lr,
        weight_decay=opt.weight_decay,
        warmup_steps=opt.warmup_steps,
        decay_steps=opt.decay_steps,
        min_lr=opt.min_lr,
        max_grad_norm=opt.clip_norm,
        seed=config.train.seed,
        backend=config.cluster.backend,
        act_budget_bytes=int(capacity * cost.act_bytes_per_token),
        collective_timeout_s=engine.collective_timeout_s,
        dtype=engine.dtype,
        state_sharding=engine.state_sharding,
        activation_checkpointing=engine.activation_checkpointing,
        num_threads=max(1, int(config.cluster.cpus_per_worker)),
        pin_cpus=engine.pin_cpus,
        pad_token_id=tokenizer.pad_id,
    )
    cursor = DataCursor(len(dataset.lengths), config.data.num_seqs_per_step, config.data.seed)
    return Prepared(
        config=config,
        spec=spec,
        cost=cost,
        data_spec=data_spec,
        dataset=dataset,
        cursor=cursor,
        worker_config=worker_config,
        tokenizer=tokenizer,
        exported_model=exported,
        warnings=[str(w.message) for w in caught] + _param_mismatch(cost, model),
    )


def _cost_for_engine(config: TrainConfig):
    """planner.cost_model with the ranks' state layout: the layout is arithmetic (bytes per
    rank), but activation bytes per token were measured, with or without checkpointing."""
    cost, engine = config.planner.load_cost(), config.engine
    if cost.activation_checkpointing != engine.activation_checkpointing:
        raise ValueError(
            f"planner.cost_model {cost.name!r} measured activation bytes per token with activation_checkpointing="
            f"{cost.activation_checkpointing} but engine.activation_checkpointing={engine.activation_checkpointing}; "
            "profile the model the way it trains (hsp profile --activation-checkpointing --out FILE, then "
            "--planner.cost_model FILE) or leave engine.activation_checkpointing at the cost model's value"
        )
    return dataclasses.replace(cost, state_sharding=engine.state_sharding)


def _param_mismatch(cost, model) -> list[str]:
    """Plans budget model-state memory from cost.num_params: say when it is not this model's."""
    import torch

    from hsp.model.decoder import Decoder

    with torch.device("meta"):  # shapes only: no weights are made
        actual = Decoder(model).num_params()
    if abs(cost.num_params - actual) <= 0.05 * actual:
        return []
    return [
        f"cost model {cost.name!r} has num_params={cost.num_params:.0f} but the model has {actual} parameters, "
        f"so plans assume {cost.num_params / actual:.2f}x the model-state memory the ranks hold; profile this "
        "model (`hsp profile`) or set num_params in the cost model's JSON"
    ]


def scheduler_config(p: Prepared):
    """The driver loop's typed config (cluster.scheduler.SchedulerConfig) from a prepared run."""
    from cluster.launch import GroupSpec
    from cluster.placement import with_ranks_per_node
    from cluster.scheduler import SchedulerConfig
    from hsp.engine.sft import SupervisedSpec

    t, c, ck = p.config.train, p.config.cluster, p.config.checkpoint
    group = GroupSpec(
        num_workers=c.num_workers,
        rank_spec=SupervisedSpec(worker=p.worker_config, data=p.data_spec),
        cpus_per_worker=c.cpus_per_worker,
        gpus_per_worker=c.gpus_per_worker,
        setup_timeout_s=max(120.0, p.config.engine.collective_timeout_s),
        for_placement=with_ranks_per_node,
    )
    return SchedulerConfig(
        checkpoint=ck, num_steps=t.steps, run_dir=t.run_dir,
        max_restarts=t.max_restarts, step_timeout_s=t.step_timeout_s, group=group,
        strategy=p.config.planner.strategy, deadline_s=p.config.planner.deadline_s, cursor=p.cursor,
    )


def run_training(
    config: TrainConfig,
    *,
    callbacks: tuple[Callable, ...] = (),
    progress: bool = True,
    out=sys.stdout,
) -> dict:
    """Run `config` and return the summary (also written to run_dir/summary.json)."""
    from cluster import report
    from cluster.capacity import RankNeeds
    from cluster.launch import connect
    from cluster.scheduler import RestartsExhausted, Scheduler

    prepared = prepare(config)
    for message in prepared.warnings:
        log.warning("%s", message)
    if config.checkpoint.resume:  # a checkpoint of other data is refused before Ray starts
        checkpoint.check_before_start(config.train.run_dir, fingerprint=prepared.dataset.fingerprint())
    metrics = Metrics()
    server = metrics.serve_config(config.metrics)
    if server is not None:
        print(f"hsp train: metrics on http://{config.metrics.host}:{config.metrics.port}/metrics", file=sys.stderr)
    session, failure = None, None
    try:
        c = config.cluster
        need = RankNeeds.of(c.cpus_per_worker, c.gpus_per_worker, prepared.spec.device_memory_bytes)
        session = connect(c.address, c.num_workers, need)  # checks the machine or cluster can hold the group
        # the run dir comes to be only once the run can start
        checkpoint.write_model_info(config.train.run_dir, model=prepared.exported_model.to_dict(),
                                    tokenizer=prepared.tokenizer.describe(), init_from=prepared.worker_config.init_from)
        scheduler = Scheduler(scheduler_config(prepared), dataset=prepared.dataset, metrics=metrics)
        scheduler.callbacks.extend(callbacks)
        where = f"cluster at {config.cluster.address}" if config.cluster.address else "embedded local cluster on 127.0.0.1"
        print(f"hsp train: Ray {where}; starting {config.cluster.num_workers} workers", file=sys.stderr)
        try:
            state = scheduler.run(progress_factory=_progress_bar(config) if progress else None)
        except RestartsExhausted as err:
            state, failure = scheduler.state, err
    finally:
        if session is not None:
            session.close()
        if server is not None:
            server.shutdown()
            server.server_close()
    extra = {
        "run_dir": str(Path(config.train.run_dir).resolve()),
        "num_workers": config.cluster.num_workers,
        "strategy": config.planner.strategy,
        "cost_model": prepared.cost.name,
        "capacity_tokens_per_rank": prepared.cost.token_capacity(prepared.spec),
        "placement": scheduler.placement.to_dict() if scheduler.placement is not None else None,
        "config": config.to_dict(),
    }
    summary = report.summarize(
        state.history, restarts=state.restarts, recoveries=state.recoveries, drift=state.drift, extra=extra
    )
    _add_state_sections(summary, prepared, state, failure)
    report.write_run_dir(config.train.run_dir, history=state.history, summary=summary, first_plan=state.first_plan)
    print(report.format_table(summary), file=out)
    if failure is not None:
        message = (f"hsp train: error: {failure}. The {len(state.history)} finished steps are in "
                   f"{Path(config.train.run_dir) / 'history.jsonl'} and summary.json; last good checkpoint: "
                   f"{summary['last_checkpoint'] or 'none'}")
        print(message, file=sys.stderr)
        raise RunFailed(message, summary)
    return summary


def _add_state_sections(summary: dict, prepared: Prepared, state, failure) -> None:
    """summary.json's memory (measured vs the cost model), checkpoint and failure sections."""
    summary["memory"] = {
        **summary.get("memory", {}),
        "predicted_model_state_bytes_per_rank": prepared.cost.state_bytes_per_rank(prepared.spec.num_ranks),
        "budget_bytes_per_rank": prepared.spec.device_memory_bytes,
        "state_sharding": prepared.worker_config.state_sharding,
    }
    summary["checkpoint_warnings"] = state.warnings
    newest = checkpoint.committed(prepared.config.train.run_dir)
    summary["last_checkpoint"] = str(newest[0]) if newest else None
    if failure is not None:
        summary["failure"] = {"rank": failure.rank, "cause": failure.cause, "error": failure.error, "at_step": failure.step,
                              "restarts": failure.restarts, "time_s": failure.time_s}


def _progress_bar(config: TrainConfig):
    from tqdm import tqdm

    def make(first_step: int):
        return tqdm(
            total=config.train.steps, initial=first_step, desc="hsp train", unit="step",
            dynamic_ncols=True, file=sys.stderr,
        )

    return make
