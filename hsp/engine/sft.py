"""The supervised (SFT) step on a rank: run a StepPlan with heterogeneous Ulysses groups.

Per micro-batch the rank finds its group, packs the group's sequences, keeps its
contiguous 1/d shard and runs forward + backward with Ulysses attention, accumulating
gradients. Each rank's loss is a token *sum* divided by the global number of
predicted tokens, so after the final sum all-reduce over all ranks the gradient equals
the single-process full-batch gradient of the mean next-token loss.

What every rank does in a step is derived in one place, `plan_work`, from the plan
alone: every rank validates the same plan and computes every group's accumulation
chunks, so all ranks fail alike before any collective and agree on the passes of each
micro-batch (which FSDP2's all-rank collectives will require).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from hsp.accumulate import accumulate_backward, split_into_chunks
from hsp.data import DataSpec, Dataset, open_dataset
from hsp.engine.config import MicroBatchReport, StepReport, WorkerConfig
from hsp.engine.memory import peak_bytes, reset_peak
from hsp.engine.pack import IGNORE, pack_shard
from hsp.engine.rank import JoinOptions, Rank, build_model
from hsp.parallel.comm import CommTimer
from hsp.parallel.ulysses import UlyssesAttention
from solver.plan import StepPlan, validate


@dataclass(frozen=True, kw_only=True)
class SupervisedSpec:
    """A rank that runs SFT steps (hsp.engine.rank.RankSpec)."""

    worker: WorkerConfig
    """Model, optimizer, plan checks and runtime of every rank."""
    data: DataSpec | None = None
    """Dataset the rank reads its own sequences from by index (`SupervisedStep.step`);
    None when batches come as tensors (`SupervisedStep.run_step`)."""

    def join_options(self, world_size: int) -> JoinOptions:
        c = self.worker
        if c.spec.num_ranks != world_size:
            raise ValueError(
                f"spec.num_ranks={c.spec.num_ranks} but the world has {world_size} ranks; "
                f"build the ClusterSpec with num_ranks={world_size}"
            )
        return JoinOptions(backend=c.backend, collective_timeout_s=c.collective_timeout_s, num_threads=c.num_threads,
                           pin_cpus=c.pin_cpus, degrees=c.spec.degrees, seed=c.seed)

    def start(self, rank: Rank) -> "SupervisedStep":
        c = self.worker
        rank.build(lambda: build_model(c.model, c.init_from), dtype=c.torch_dtype, lr=c.lr, weight_decay=c.weight_decay)
        return SupervisedStep(rank, c, open_dataset(self.data) if self.data is not None else None)


@dataclass
class GroupWork:
    """This rank's work in one micro-batch: its group and the chunks of sequence ids."""

    first_rank: int
    degree: int
    seq_ids: list[int]
    shares: list[int]
    """Activation bytes per sequence on one rank of the group."""
    num_chunks: int
    """Forward/backward passes (accumulation chunks) of this rank's group."""


def plan_work(plan: StepPlan, batch: Sequence[torch.Tensor], rank: int, config: WorkerConfig) -> list[GroupWork]:
    """Validate plan and batch and derive rank's work per micro-batch; only local
    computation, and every group is looked at, so all ranks fail alike."""
    lengths = [int(seq.numel()) for seq in batch]
    validate(plan, lengths, config.spec, config.cost_model)
    vocab = config.model.vocab_size
    for i, seq in enumerate(batch):
        if seq.dim() != 1 or seq.numel() == 0:
            raise ValueError(f"sequence {i} must be a non-empty 1-D tensor of token ids, got shape {tuple(seq.shape)}")
        if seq.numel() > config.model.max_seq_len:
            raise ValueError(f"sequence {i} has {seq.numel()} tokens > model max_seq_len={config.model.max_seq_len}")
        if int(seq.min()) < 0 or int(seq.max()) >= vocab:
            raise ValueError(f"sequence {i} has token ids outside 0..{vocab - 1}")
    work = []
    for mb in plan.micro_batches:
        mine = None
        for group in mb.groups:
            ids = list(group.seq_ids)
            shares = _shares(config, lengths, ids, group.degree)
            chunks = split_into_chunks(shares, _budget(config, shares)) if ids else []
            if rank in group.ranks:
                mine = GroupWork(group.first_rank, group.degree, ids, shares, len(chunks))
        assert mine is not None, "validate() guarantees the groups tile all ranks"
        work.append(mine)
    return work


def _shares(config: WorkerConfig, lengths: list[int], ids: list[int], degree: int) -> list[int]:
    """Activation bytes each sequence puts on one rank of a degree-`degree` group."""
    per_token = config.act_bytes_per_token or config.cost_model.act_bytes_per_token
    return [int(math.ceil(math.ceil(lengths[i] / degree) * per_token)) for i in ids]


def _budget(config: WorkerConfig, shares: list[int]) -> int:
    # no budget: one chunk holding the whole group share
    return config.act_budget_bytes or max(sum(shares), 1)


class SupervisedStep:
    """The SFT step function of one rank (built by SupervisedSpec.start)."""

    def __init__(self, rank: Rank, config: WorkerConfig, dataset: Dataset | None):
        self.rank, self.config, self.dataset = rank, config, dataset

    def step(self, plan: StepPlan, indices: Sequence[int]) -> StepReport:
        """Materialise this rank's sequences of samples `indices` and run the step.

        A rank only reads the sequences of its own groups, so the others are passed as
        zero placeholders of the right length: on N ranks this cuts the data work per
        rank to roughly its share of the batch."""
        if self.dataset is None:
            raise ValueError("this rank was started without a DataSpec; pass token tensors to run_step instead")
        start = time.perf_counter()
        mine = {i for mb in plan.micro_batches for g in mb.groups if self.rank.rank in g.ranks for i in g.seq_ids}
        lengths = self.dataset.lengths
        batch = [
            torch.from_numpy(self.dataset.tokens(int(i))) if k in mine else torch.zeros(int(lengths[i]), dtype=torch.long)
            for k, i in enumerate(indices)
        ]
        materialise_s = time.perf_counter() - start
        report = self.run_step(plan, batch)
        report.materialise_s = materialise_s
        return report

    def run_step(self, plan: StepPlan, batch: Sequence[torch.Tensor]) -> StepReport:
        """One optimizer step over `batch` (token ids per sequence) as `plan` lays it out."""
        rank, model, optimizer = self.rank, self.rank.model, self.rank.optimizer
        work = plan_work(plan, batch, rank.rank, self.config)  # raises identically on every rank, before any collective
        start = time.perf_counter()
        reset_peak(rank.device)
        optimizer.zero_grad(set_to_none=False)
        num_predicted = sum(max(0, len(seq) - 1) for seq in batch)
        local_loss, rank_tokens, reports = 0.0, 0, []
        for m, group_work in enumerate(work):
            where = f"micro-batch {m} (group ranks {group_work.first_rank}..{group_work.first_rank + group_work.degree - 1})"
            with rank.collectives(where):
                loss, tokens, report = self._run_micro_batch(group_work, batch, num_predicted)
            local_loss, rank_tokens = local_loss + loss, rank_tokens + tokens
            reports.append(report.as_dict())
        reduce_start = time.perf_counter()
        [global_loss] = rank.all_reduce_grads(model.parameters(), [local_loss])
        allreduce_s = time.perf_counter() - reduce_start
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.max_grad_norm)
        optimizer.step()
        rank.step += 1
        if rank.device.type == "cuda":
            torch.cuda.synchronize(rank.device)
        return StepReport(
            rank=rank.rank,
            loss=global_loss,
            num_tokens=sum(len(seq) for seq in batch),
            rank_tokens=rank_tokens,
            step_s=time.perf_counter() - start,
            micro_batches=reports,
            allreduce_s=allreduce_s,
            peak_memory_bytes=peak_bytes(rank.device),
        )

    def _run_micro_batch(self, work: GroupWork, batch: Sequence[torch.Tensor], num_predicted: int) -> tuple[float, int, MicroBatchReport]:
        start = time.perf_counter()
        timer = CommTimer()
        rank, model, dev = self.rank, self.rank.model, self.rank.device
        attention = UlyssesAttention(rank.catalogue.get(work.first_rank, work.degree), work.degree, timer)
        index = rank.rank - work.first_rank
        tokens = 0

        def chunk_loss(ids: list[int]) -> torch.Tensor:
            nonlocal tokens
            shard = pack_shard([batch[i] for i in ids], work.degree, index, self.config.pad_token_id)
            tokens += shard.num_real_tokens
            logits = model(shard.tokens.to(dev), shard.position_ids.to(dev), shard.cu_seqlens.to(dev), attention)
            loss_sum = F.cross_entropy(logits.float() if logits.dtype == torch.bfloat16 else logits,
                                       shard.targets.to(dev), ignore_index=IGNORE, reduction="sum")
            return loss_sum / max(num_predicted, 1)

        # every rank of the group derives the same chunks from the plan, so the
        # all-to-alls of chunk k meet those of chunk k on the peers
        budget = _budget(self.config, work.shares)
        loss = accumulate_backward(work.seq_ids, work.shares, budget, chunk_loss) if work.seq_ids else 0.0
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        total = time.perf_counter() - start
        return loss, tokens, MicroBatchReport(total - timer.seconds, timer.seconds, total, work.num_chunks)
