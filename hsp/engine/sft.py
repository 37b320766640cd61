"""The supervised (SFT) step on a rank: run a StepPlan with heterogeneous Ulysses groups.

Per micro-batch the rank finds its group, packs the group's sequences, keeps its
contiguous 1/d shard and runs forward + backward with Ulysses attention, accumulating
gradients. Each rank's loss is a token *sum* divided by the global number of
predicted tokens, so the gradient summed over all ranks equals the single-process
full-batch gradient of the mean next-token loss. The sum happens where the state
layout (hsp.engine.state) puts it: zero3 reduce-scatters (SUM) at the end of every
backward pass into gradient shards, replicated all-reduces the full gradients once after
the last micro-batch. Then the gradient norm over all shards is clipped and AdamW steps
with the scheduled learning rate.

What every rank does in a step is derived in one place, `plan_work`, from the plan
alone: every rank validates the same plan and computes every group's accumulation
chunks, so all ranks fail alike before any collective and agree on the passes of each
micro-batch. Under zero3 each pass is a round of all-rank collectives (all-gathers in
forward and backward, reduce-scatters in backward), so every rank runs the
micro-batch's largest chunk count: a rank whose group has fewer chunks (or no sequences
at all) adds empty passes, one pad token whose loss is multiplied by 0, which adds
exactly zero to every gradient. Replicated ranks skip them.
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
from hsp.engine.flops import peak_flops_per_s, step_flops
from hsp.engine.memory import SavedBytesMeter, peak_bytes, reset_peak
from hsp.engine.pack import IGNORE, pack_shard
from hsp.engine.rank import JoinOptions, Rank, build_model
from hsp.engine.state import LRSchedule, full_tensor
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
        rank.build(lambda: build_model(c.model, c.init_from), dtype=c.torch_dtype, lr=c.lr,
                   weight_decay=c.weight_decay, sharding=c.state_sharding,
                   activation_checkpointing=c.activation_checkpointing)
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
    """Accumulation chunks of this rank's group (0 for a group without sequences)."""
    num_passes: int
    """Forward/backward passes this rank runs: the largest chunk count of the
    micro-batch's groups under zero3 (the extra ones empty), num_chunks when replicated."""


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
        mine, most = None, 0
        for group in mb.groups:
            ids = list(group.seq_ids)
            shares = _shares(config, lengths, ids, group.degree)
            chunks = split_into_chunks(shares, _budget(config, shares)) if ids else []
            most = max(most, len(chunks))
            if rank in group.ranks:
                mine = GroupWork(group.first_rank, group.degree, ids, shares, len(chunks), len(chunks))
        assert mine is not None, "validate() guarantees the groups tile all ranks"
        if config.state_sharding == "zero3":
            mine.num_passes = most  # every rank meets every pass's all-rank collectives
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
        self.schedule = LRSchedule(lr=config.lr, warmup_steps=config.warmup_steps, decay_steps=config.decay_steps,
                                   min_lr=config.min_lr)
        self.peak_flops_per_s = peak_flops_per_s(rank.device, config.torch_dtype, torch.get_num_threads())

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
        rank, optimizer = self.rank, self.rank.optimizer
        work = plan_work(plan, batch, rank.rank, self.config)  # raises identically on every rank, before any collective
        start = time.perf_counter()
        reset_peak(rank.device)
        optimizer.zero_grad(set_to_none=False)
        num_predicted = sum(max(0, len(seq) - 1) for seq in batch)
        local_loss, rank_tokens, reports = 0.0, 0, []
        meter = SavedBytesMeter()  # parameters (and FSDP2's unsharded copies) are recognised as such
        with meter:
            for m, group_work in enumerate(work):
                where = f"micro-batch {m} (group ranks {group_work.first_rank}..{group_work.first_rank + group_work.degree - 1})"
                with rank.collectives(where):
                    loss, tokens, report = self._run_micro_batch(group_work, batch, num_predicted)
                local_loss, rank_tokens = local_loss + loss, rank_tokens + tokens
                reports.append(report.as_dict())
        reduce_start = time.perf_counter()
        global_loss = self._reduce(local_loss)
        allreduce_s = time.perf_counter() - reduce_start
        grad_norm, lr = self._update()
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
            model_state_bytes=rank.model_state_bytes(),
            activation_peak_bytes=meter.peak_bytes,
            lr=lr,
            grad_norm=grad_norm,
            flops=step_flops([len(seq) for seq in batch], self.config.model),
            peak_flops_per_s=self.peak_flops_per_s,
        )

    def _reduce(self, local_loss: float) -> float:
        """Sum the gradients (replicated: one all-reduce; zero3: already reduce-scattered
        by every backward pass) and the loss over all ranks; returns the global loss."""
        if self.rank.sharding == "zero3":
            return self.rank.sum_scalars([local_loss])[0]
        return self.rank.all_reduce_grads(self.rank.model.parameters(), [local_loss])[0]

    def _update(self) -> tuple[float, float]:
        """Clip the gradient norm over all shards, step AdamW at the scheduled lr;
        returns (norm before clipping, lr)."""
        rank = self.rank
        params = [p for p in rank.model.parameters() if p.grad is not None]
        with rank.collectives("the gradient norm over all ranks"):
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
            if self.config.max_grad_norm is not None:
                torch.nn.utils.clip_grads_with_norm_(params, self.config.max_grad_norm, norm)
            grad_norm = float(full_tensor(norm))
        lr = self.schedule.at(rank.step)
        for group in rank.optimizer.param_groups:
            group["lr"] = lr
        rank.optimizer.step()
        rank.step += 1
        return grad_norm, lr

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
        for _ in range(work.num_passes - work.num_chunks):
            self._empty_pass()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        total = time.perf_counter() - start
        return loss, tokens, MicroBatchReport(total - timer.seconds, timer.seconds, total, work.num_chunks, work.num_passes)

    def _empty_pass(self) -> None:
        """A forward/backward on one pad token with local attention whose loss is 0 x
        logits: its FSDP2 all-gathers and reduce-scatters meet those of the ranks still
        running chunks, and it adds exactly 0 to every gradient."""
        dev = self.rank.device
        token = torch.full((1,), self.config.pad_token_id, dtype=torch.long, device=dev)
        logits = self.rank.model(token, torch.zeros(1, dtype=torch.long, device=dev),
                                 torch.tensor([0, 1], dtype=torch.int32, device=dev))
        (logits.float().sum() * 0.0).backward()
