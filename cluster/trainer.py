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
    cost = config.planner.load_cost()
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
        max_grad_norm=opt.clip_norm,
        seed=config.train.seed,
        backend=config.cluster.backend,
        act_budget_bytes=int(capacity * cost.act_bytes_per_token),
        collective_timeout_s=engine.collective_timeout_s,
        dtype=engine.dtype,
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
        warnings=[str(w.message) for w in caught],
    )


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
        num_steps=t.steps, checkpoint_every=ck.every_steps, run_dir=t.run_dir, resume=ck.resume,
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
    from cluster.scheduler import Scheduler

    prepared = prepare(config)
    for message in prepared.warnings:
        log.warning("%s", message)
    metrics = Metrics()
    server = metrics.serve_config(config.metrics)
    if server is not None:
        print(f"hsp train: metrics on http://{config.metrics.host}:{config.metrics.port}/metrics", file=sys.stderr)
    session = None
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
        state = scheduler.run(progress_factory=_progress_bar(config) if progress else None)
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
    report.write_run_dir(config.train.run_dir, history=state.history, summary=summary, first_plan=state.first_plan)
    print(report.format_table(summary), file=out)
    return summary


def _progress_bar(config: TrainConfig):
    from tqdm import tqdm

    def make(first_step: int):
        return tqdm(
            total=config.train.steps, initial=first_step, desc="hsp train", unit="step",
            dynamic_ncols=True, file=sys.stderr,
        )

    return make
