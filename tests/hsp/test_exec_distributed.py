"""Multi-process gloo tests (world sizes 2 and 4) against single-process references,
for both state layouts: zero3 (FSDP2 over all ranks, the default) and replicated.

Spawning a rank costs seconds, so each spawn runs a whole list of checks; the checks
return tensors and the comparisons happen here, in the test process.
"""

import os
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist

from exec_helpers import assert_close, random_batch, random_plan, reference_step, worker_config
from hsp.engine import Rank, SupervisedSpec
from hsp.engine.state import full_tensor
from hsp.parallel import GroupCatalogue, UlyssesAttention
from hsp.testing import RankError, run_ranks
from solver.plan import PlanError, StepPlan

torch.set_num_threads(1)  # see test_exec_model.py

HEADS, KV_HEADS, HEAD_DIM = 4, 2, 8
"""Grouped-query as in MODEL: degree 2 splits the K/V heads, degree 4 replicates them."""


# ---- Ulysses attention vs a dense block-diagonal mask --------------------------------


def _qkv_case(seed: int, lengths: list[int]) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    q, k, v, grad_out = (torch.randn(total, heads, HEAD_DIM, generator=gen, dtype=torch.float64)
                         for heads in (HEADS, KV_HEADS, KV_HEADS, HEADS))
    return q, k, v, grad_out


def _reference_attention(lengths: list[int], causal: bool) -> tuple[torch.Tensor, ...]:
    """Dense softmax attention with an explicit block-diagonal (causal) mask: independent
    of the per-sequence loop the model uses."""
    q, k, v, grad_out = (x.clone() for x in _qkv_case(sum(lengths) + 7 * len(lengths), lengths))
    for x in (q, k, v):
        x.requires_grad_(True)
    seq_id = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    allowed = seq_id[:, None] == seq_id[None, :]
    if causal:
        allowed &= torch.ones_like(allowed).tril()
    # query head i uses K/V head i // (HEADS / KV_HEADS): (T, H_kv, hd) -> (T, H, hd)
    kq, vq = (x.repeat_interleave(HEADS // KV_HEADS, dim=1) for x in (k, v))
    scores = torch.einsum("qhd,khd->hqk", q, kq) / HEAD_DIM**0.5
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    out = torch.einsum("hqk,khd->qhd", probs, vq)
    (out * grad_out).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


def _ulysses_rank(rank: int, layout: list[tuple[int, int]], cases: dict, catalogue: GroupCatalogue, case: int) -> list:
    """For each case: this rank's shard of output and of q/k/v gradients."""
    first, degree = next((f, d) for f, d in layout if f <= rank < f + d)
    index = rank - first
    results = []
    for causal in (True, False):
        lengths = cases[first]
        q, k, v, grad_out = _qkv_case(sum(lengths) + 7 * len(lengths), lengths)
        total = sum(lengths)
        pad = -total % degree
        t_local = (total + pad) // degree
        # padding rows are random garbage: they must not leak into real tokens
        bounds = np.cumsum([0] + lengths + ([pad] if pad else [])).tolist()
        cu = torch.tensor(bounds, dtype=torch.int32)

        def shard(x: torch.Tensor) -> torch.Tensor:
            filler = torch.randn(pad, x.shape[1], HEAD_DIM, dtype=torch.float64) * 100
            return torch.cat([x, filler])[index * t_local : (index + 1) * t_local].clone().requires_grad_(True)

        qs, ks, vs = shard(q), shard(k), shard(v)
        out = UlyssesAttention(catalogue.get(first, degree), degree)(qs, ks, vs, cu, causal)
        g = torch.cat([grad_out, torch.zeros(pad, HEADS, HEAD_DIM, dtype=torch.float64)])[index * t_local : (index + 1) * t_local]
        (out * g).sum().backward()
        real = max(0, min(total - index * t_local, t_local))
        results.append((case, causal, first, index * t_local, out[:real].detach(), qs.grad[:real], ks.grad[:real], vs.grad[:real]))
    return results


# ---- rank programs ---------------------------------------------------------------------


def _main_rank(rank: int, world_size: int, rendezvous: str, attention_cases: list, steps: list, bad_plan, sharding: str) -> dict:
    host = Rank()
    host.setup(rank, world_size, rendezvous, SupervisedSpec(worker=worker_config(world_size, state_sharding=sharding)))
    result = {"attention": [], "steps": [], "bad_plan": None}
    for case, (layout, cases) in enumerate(attention_cases):
        result["attention"] += _ulysses_rank(rank, layout, cases, host.catalogue, case)
    if bad_plan is not None:
        try:
            host.program.run_step(bad_plan, steps[0][1])
        except PlanError as err:
            result["bad_plan"] = str(err)
    for plan, batch, budget in steps:
        # a fresh model and optimizer per step (the same init everywhere), so each step
        # compares with a one-step single-process reference
        config = worker_config(world_size, state_sharding=sharding, act_budget_bytes=budget)
        host.program = SupervisedSpec(worker=config).start(host)
        report = host.program.run_step(plan, batch)
        grads = {n: full_tensor(p.grad).clone() for n, p in host.model.named_parameters()}  # all-gathers under zero3
        params = {n: full_tensor(p.detach()).clone() for n, p in host.model.named_parameters()}
        result["steps"].append((report, grads, params))
    host.shutdown()
    return result


def _check(results: list[dict], attention_cases: list, steps: list) -> None:
    for rank_result in results:
        for case, causal, first, offset, out, gq, gk, gv in rank_result["attention"]:
            lengths = attention_cases[case][1][first]
            ref = _reference_attention(lengths, causal)
            for got, want, what in zip((out, gq, gk, gv), ref, ("out", "dq", "dk", "dv")):
                assert_close(got, want[offset : offset + len(got)], f"{what} causal={causal} group@{first}")
    for k, (plan, batch, budget) in enumerate(steps):
        loss, grads, params = reference_step(batch, worker_config(plan.num_ranks))
        for rank_result in results:
            report, got_grads, got_params = rank_result["steps"][k]
            assert report.loss == pytest.approx(loss, rel=1e-12), plan.summary()
            assert report.num_tokens == sum(len(s) for s in batch)
            assert len(report.micro_batches) == len(plan.micro_batches)
            assert report.peak_memory_bytes > 0 and report.step_s > 0
            for name in grads:
                assert_close(got_grads[name], grads[name], f"grad {name} step {k} ({plan.summary()}, budget {budget})")
                assert_close(got_params[name], params[name], f"param {name} after AdamW, step {k}")
        assert sum(r["steps"][k][0].rank_tokens for r in results) == sum(len(s) for s in batch)


def _steps(rng: np.random.Generator, world_size: int, num: int) -> list:
    steps = []
    for k in range(num):
        batch = random_batch(rng, int(rng.integers(3, 12)))
        plan = random_plan(rng, [len(s) for s in batch], world_size, num_micro_batches=1 + k % 3)
        steps.append((plan, batch, None))
    # the same batch under a tight activation budget: several accumulation chunks per group
    plan, batch, _ = steps[-1]
    steps.append((plan, batch, 60 * 1000))
    return steps


def _forced_plans(rng, world_size: int) -> list:
    """Degree 1 everywhere and one group of the whole world, both with padding."""
    batch = random_batch(rng, 5, max_len=33)  # odd lengths: padding at every degree > 1
    lengths = [len(s) for s in batch]
    from exec_helpers import cost_model, spec
    from solver.plan import make_plan

    ids = list(range(len(batch)))
    ones = [[(r, 1, ids[r::world_size]) for r in range(world_size)]]
    whole = [[(0, world_size, ids)]]
    return [
        (make_plan(layout, np.asarray(lengths), spec(world_size), cost_model(), strategy="t", solve_s=0, lower_bound_s=0), batch, None)
        for layout in (ones, whole)
    ]


@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize("sharding", ["zero3", "replicated"])
def test_heterogeneous_groups_match_single_process(world_size, sharding):
    """Loss, every gradient and the post-AdamW parameters equal one process; Ulysses
    attention equals a dense masked attention (checked in the replicated runs only: it
    does not depend on the state layout)."""
    rng = np.random.default_rng(world_size)
    if world_size == 2:
        layouts = [[(0, 2)], [(0, 1), (1, 1)]]
    else:
        layouts = [[(0, 2), (2, 2)], [(0, 4)], [(0, 1), (1, 1), (2, 2)]]
    attention_cases = [(layout, {f: [int(x) for x in rng.integers(1, 20, size=3)] for f, _ in layout}) for layout in layouts]
    steps = _steps(rng, world_size, 4) + _forced_plans(rng, world_size)
    if sharding == "zero3":
        attention_cases = []
    degrees = [{g.degree for g in mb.groups} for plan, _, _ in steps for mb in plan.micro_batches]
    assert {1, 2} <= set().union(*degrees)
    if world_size == 4:  # mixed degrees inside one micro-batch need at least 3 groups
        assert any(len(d) > 1 for d in degrees)
    plan, batch, _ = steps[0]
    bad = StepPlan.from_dict({**plan.to_dict(), "micro_batches": plan.to_dict()["micro_batches"][:-1] or []})
    results = run_ranks(_main_rank, world_size, (attention_cases, steps, bad, sharding), timeout_s=180)
    for r in results:  # every rank rejected the plan itself, then ran the valid steps
        assert r["bad_plan"] is not None and "invalid plan" in r["bad_plan"]
    _check(results, attention_cases, steps)
    chunked = [r["steps"][len(steps) - 3][0] for r in results]
    assert max(mb["num_chunks"] for rep in chunked for mb in rep.micro_batches) > 1
    if sharding == "zero3":  # some rank ran empty passes to match another group's chunks
        assert any(mb["num_passes"] > mb["num_chunks"] for r in results for rep, _, _ in r["steps"] for mb in rep.micro_batches)


# ---- failures: errors, not hangs -------------------------------------------------------


def _failing_rank(rank: int, world_size: int, rendezvous: str) -> str:
    """Ranks 0-1 form one SP2 group whose rank 1 crashes; ranks 2-3 one whose rank 3 hangs."""
    host = Rank()
    host.setup(rank, world_size, rendezvous, SupervisedSpec(worker=worker_config(world_size, collective_timeout_s=3.0)))
    worker = host.program
    batch = random_batch(np.random.default_rng(0), 4)
    from exec_helpers import cost_model, spec
    from solver.plan import make_plan

    plan = make_plan([[(0, 2, [0, 1]), (2, 2, [2, 3])]], np.asarray([len(s) for s in batch]), spec(4), cost_model(),
                     strategy="t", solve_s=0, lower_bound_s=0)
    if rank == 1:
        os._exit(3)  # a crashed rank: its sockets close
    if rank == 3:
        time.sleep(5)  # a stuck rank: alive but never joins the collective
        return "slept"
    start = time.monotonic()
    try:
        worker.run_step(plan, batch)
    except Exception as err:  # noqa: BLE001 - the test inspects what it was
        return f"{type(err).__name__} after {time.monotonic() - start:.1f}s: {err}"
    return "no error"


def test_a_failing_rank_gives_an_error_not_a_hang():
    results = run_ranks(_failing_rank, 4, timeout_s=60, return_errors=True)
    assert isinstance(results[1], RankError) and "exited with code 3" in results[1].message
    assert results[3] == "slept"
    for rank in (0, 2):  # the crash is seen at once, the hang at the 3 s collective timeout
        assert isinstance(results[rank], str) and results[rank].startswith("CollectiveError after"), results[rank]
        seconds = float(results[rank].split(" after ")[1].split("s:")[0])
        assert seconds < 3.0 + 5.0, results[rank]
