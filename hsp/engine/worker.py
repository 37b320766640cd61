"""One rank's training worker: runs a StepPlan with heterogeneous Ulysses groups.

Per micro-batch the rank finds its group, packs the group's sequences, keeps its
contiguous 1/d shard and runs forward + backward with Ulysses attention, accumulating
gradients. Each rank's loss is a token *sum* divided by the global number of
predicted tokens, so after the final sum all-reduce over all ranks the gradient equals
the single-process full-batch gradient of the mean next-token loss.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from hsp.accumulate import accumulate_backward, split_into_chunks
from hsp.engine.config import MicroBatchReport, StepReport, WorkerConfig
from hsp.engine.memory import peak_bytes, reset_peak
from hsp.engine.pack import IGNORE, pack_shard
from hsp.model.gpt import GPT
from hsp.parallel.comm import CommTimer
from hsp.parallel.grads import all_reduce_grads
from hsp.parallel.groups import GroupCatalogue
from hsp.parallel.ulysses import UlyssesAttention
from solver.plan import StepPlan, validate


class CollectiveError(RuntimeError):
    """A collective failed or timed out: a peer rank crashed, hung, or lost its connection."""


@dataclass
class _GroupWork:
    """This rank's work in one micro-batch: its group and the chunks of sequence ids."""

    first_rank: int
    degree: int
    seq_ids: list[int]
    shares: list[int]
    """Activation bytes per sequence on one rank of the group."""
    num_chunks: int


class Worker:
    def __init__(self) -> None:
        self.rank = -1
        self.world_size = 0
        self.config: WorkerConfig | None = None
        self.model: GPT | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.catalogue: GroupCatalogue | None = None
        self.device = torch.device("cpu")
        self.step = 0

    # ---- lifecycle ------------------------------------------------------------------

    def setup(self, rank: int, world_size: int, rendezvous: str, config: WorkerConfig) -> None:
        """Join the process group at `rendezvous` (tcp://host:port), build model and groups."""
        if config.spec.num_ranks != world_size:
            raise ValueError(
                f"spec.num_ranks={config.spec.num_ranks} but the world has {world_size} ranks; "
                f"build the ClusterSpec with num_ranks={world_size}"
            )
        self.rank, self.world_size, self.config = rank, world_size, config
        if config.num_threads > 0:
            torch.set_num_threads(config.num_threads)
        if config.pin_cpus:
            pin_to_cpus(rank, world_size)
        backend = config.backend
        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            self.device = torch.device("cuda", rank % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
        timeout = timedelta(seconds=config.collective_timeout_s)
        dist.init_process_group(backend, init_method=rendezvous, rank=rank, world_size=world_size, timeout=timeout)
        self.catalogue = GroupCatalogue.create(world_size, config.model.num_heads, config.collective_timeout_s)
        torch.manual_seed(config.seed)
        self.model = GPT(config.model).to(device=self.device, dtype=config.torch_dtype)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def shutdown(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        self.step = int(state["step"])

    # ---- the step -------------------------------------------------------------------

    def run_step(self, plan: StepPlan, batch: Sequence[torch.Tensor]) -> StepReport:
        """One optimizer step over `batch` (token ids per sequence) as `plan` lays it out."""
        work = self._prepare(plan, batch)  # raises identically on every rank, before any collective
        start = time.perf_counter()
        reset_peak(self.device)
        self.optimizer.zero_grad(set_to_none=False)
        num_predicted = sum(max(0, len(seq) - 1) for seq in batch)
        local_loss, rank_tokens, reports = 0.0, 0, []
        for m, group_work in enumerate(work):
            where = f"micro-batch {m} (group ranks {group_work.first_rank}..{group_work.first_rank + group_work.degree - 1})"
            with self._collectives(where):
                loss, tokens, report = self._run_micro_batch(group_work, batch, num_predicted)
            local_loss, rank_tokens = local_loss + loss, rank_tokens + tokens
            reports.append(report.as_dict())
        reduce_start = time.perf_counter()
        with self._collectives("the gradient all-reduce over all ranks"):
            [global_loss] = all_reduce_grads(self.model.parameters(), [local_loss])
        allreduce_s = time.perf_counter() - reduce_start
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.step += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return StepReport(
            rank=self.rank,
            loss=global_loss,
            num_tokens=sum(len(seq) for seq in batch),
            rank_tokens=rank_tokens,
            step_s=time.perf_counter() - start,
            micro_batches=reports,
            allreduce_s=allreduce_s,
            peak_memory_bytes=peak_bytes(self.device),
        )

    @contextmanager
    def _collectives(self, where: str):
        try:
            yield
        except RuntimeError as err:
            if isinstance(err, CollectiveError) or not _is_comm_error(err):
                raise
            raise CollectiveError(
                f"rank {self.rank}: a collective in {where} failed after at most "
                f"{self.config.collective_timeout_s:g}s (collective_timeout_s): a peer rank crashed or is stuck; "
                f"check the other ranks' logs. Cause: {err}"
            ) from err

    def _prepare(self, plan: StepPlan, batch: Sequence[torch.Tensor]) -> list[_GroupWork]:
        """Validate plan and batch and derive this rank's chunks; only local computation."""
        if self.model is None:
            raise RuntimeError("Worker.setup must be called before run_step")
        lengths = [int(seq.numel()) for seq in batch]
        validate(plan, lengths, self.config.spec, self.config.cost_model)
        vocab = self.config.model.vocab_size
        for i, seq in enumerate(batch):
            if seq.dim() != 1 or seq.numel() == 0:
                raise ValueError(f"sequence {i} must be a non-empty 1-D tensor of token ids, got shape {tuple(seq.shape)}")
            if seq.numel() > self.config.model.max_seq_len:
                raise ValueError(f"sequence {i} has {seq.numel()} tokens > model max_seq_len={self.config.model.max_seq_len}")
            if int(seq.min()) < 0 or int(seq.max()) >= vocab:
                raise ValueError(f"sequence {i} has token ids outside 0..{vocab - 1}")
        work = []
        for mb in plan.micro_batches:
            mine = None
            for group in mb.groups:  # every group is checked, so all ranks fail alike
                ids = list(group.seq_ids)
                shares = self._shares(lengths, ids, group.degree)
                chunks = split_into_chunks(shares, self._budget(shares)) if ids else []
                if self.rank in group.ranks:
                    mine = _GroupWork(group.first_rank, group.degree, ids, shares, len(chunks))
            assert mine is not None, "validate() guarantees the groups tile all ranks"
            work.append(mine)
        return work

    def _shares(self, lengths: list[int], ids: list[int], degree: int) -> list[int]:
        """Activation bytes each sequence puts on one rank of a degree-`degree` group."""
        per_token = self.config.act_bytes_per_token or self.config.cost_model.act_bytes_per_token
        return [int(math.ceil(math.ceil(lengths[i] / degree) * per_token)) for i in ids]

    def _budget(self, shares: list[int]) -> int:
        # no budget: one chunk holding the whole group share
        return self.config.act_budget_bytes or max(sum(shares), 1)

    def _run_micro_batch(
        self, work: _GroupWork, batch: Sequence[torch.Tensor], num_predicted: int
    ) -> tuple[float, int, MicroBatchReport]:
        start = time.perf_counter()
        timer = CommTimer()
        group = self.catalogue.get(work.first_rank, work.degree)
        attention = UlyssesAttention(group, work.degree, timer)
        index = self.rank - work.first_rank
        tokens = 0

        def chunk_loss(ids: list[int]) -> torch.Tensor:
            nonlocal tokens
            shard = pack_shard([batch[i] for i in ids], work.degree, index, self.config.pad_token_id)
            tokens += shard.num_real_tokens
            dev = self.device
            logits = self.model(shard.tokens.to(dev), shard.position_ids.to(dev), shard.cu_seqlens.to(dev), attention)
            loss_sum = F.cross_entropy(logits.float() if logits.dtype == torch.bfloat16 else logits,
                                       shard.targets.to(dev), ignore_index=IGNORE, reduction="sum")
            return loss_sum / max(num_predicted, 1)

        # every rank of the group derives the same chunks from the plan, so the
        # all-to-alls of chunk k meet those of chunk k on the peers
        loss = accumulate_backward(work.seq_ids, work.shares, self._budget(work.shares), chunk_loss) if work.seq_ids else 0.0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        total = time.perf_counter() - start
        return loss, tokens, MicroBatchReport(total - timer.seconds, timer.seconds, total, work.num_chunks)


def pin_to_cpus(rank: int, world_size: int) -> set[int]:
    """Restrict this process to rank `rank`'s slice of the CPUs it may use."""
    cpus = sorted(os.sched_getaffinity(0))
    if world_size >= len(cpus):
        mine = {cpus[rank * len(cpus) // world_size]}
    else:
        mine = set(cpus[rank * len(cpus) // world_size : (rank + 1) * len(cpus) // world_size])
    os.sched_setaffinity(0, mine)
    return mine


def _is_comm_error(err: RuntimeError) -> bool:
    text = str(err).lower()
    return any(word in text for word in ("gloo", "nccl", "timed out", "timeout", "connection", "peer"))
