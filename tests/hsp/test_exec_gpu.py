"""CUDA/NCCL path of the engine: the same code as gloo, checked against the CPU reference.
Skipped without CUDA (this CPU CI box); run on a GPU machine with `pytest -m gpu`."""

import numpy as np
import pytest
import torch

from exec_helpers import random_batch, random_plan, reference_step, worker_config
from hsp.engine import Rank, SupervisedSpec
from hsp.engine.state import full_tensor
from hsp.testing import run_ranks

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _gpu_rank(rank: int, world_size: int, rendezvous: str, plan, batch) -> tuple:
    host = Rank()
    host.setup(rank, world_size, rendezvous, SupervisedSpec(worker=worker_config(world_size, backend="nccl")))
    report = host.program.run_step(plan, batch)
    grads = {n: full_tensor(p.grad).detach().cpu() for n, p in host.model.named_parameters()}  # zero3: all-gathered
    host.shutdown()
    return report, grads


def test_nccl_step_matches_cpu_reference():
    world_size = min(torch.cuda.device_count(), 2)
    rng = np.random.default_rng(7)
    batch = random_batch(rng, 6)
    plan = random_plan(rng, [len(s) for s in batch], world_size, num_micro_batches=2)
    results = run_ranks(_gpu_rank, world_size, (plan, batch), timeout_s=180)
    loss, grads, _ = reference_step(batch, worker_config(world_size))
    for report, got in results:
        assert report.loss == pytest.approx(loss, rel=1e-9)
        assert report.peak_memory_bytes > 0  # torch.cuda.max_memory_allocated
        for name, g in grads.items():
            torch.testing.assert_close(got[name], g, rtol=1e-7, atol=1e-10)
