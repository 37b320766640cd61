"""Model states (hsp.engine.state, hsp.engine.dcp): FSDP2 with uneven chunk counts and
activation checkpointing, bf16 mixed precision within its stated tolerance, bytes held
per rank, and sharded checkpoints that reshard and refuse what they should refuse."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from exec_helpers import MODEL, assert_close, cost_model, random_batch, reference_step, spec, worker_config
from hsp.engine import Rank, SupervisedSpec
from hsp.engine.dcp import METADATA_FILE, CheckpointLoadError, _SafeReader
from hsp.engine.flops import matmul_params, step_flops
from hsp.engine.state import LRSchedule, full_tensor, param_groups
from hsp.model.gpt import GPT
from hsp.testing import run_ranks
from solver.plan import make_plan

torch.set_num_threads(1)

# bf16 against the float64 reference: bf16 keeps 8 significant bits (unit roundoff
# 2^-9 = 0.2%), and two layers of forward and backward compound it to ~1% per gradient
# element (measured: 0.6% over the whole gradient, <= 2.4% for the worst tensor, loss
# <= 1.2e-5 relative). After one AdamW step (update ~ lr * sign(g)) a small gradient
# component whose sign flips moves its parameter by at most 2 lr.
BF16_LOSS_RTOL = 1e-3
BF16_GRAD_RTOL = 2e-2
"""||g_bf16 - g_ref|| / ||g_ref|| over the whole gradient."""
BF16_TENSOR_RTOL = 6e-2
"""The same per parameter tensor."""
BF16_PARAM_ATOL_LR = 2.5
"""|p_bf16 - p_ref| <= this x lr after one AdamW step."""


def _uneven_plan(batch: list[torch.Tensor]):
    """World size 2. Micro-batch 1: rank 0 (SP1) holds three long sequences (three
    chunks under the budget), rank 1 (SP1) one short one (one chunk). Micro-batch 2: one
    SP2 group. Micro-batch 3: rank 1 idle (no sequences at all)."""
    lengths = np.asarray([len(s) for s in batch])
    layout = [[(0, 1, [0, 1, 2]), (1, 1, [3])], [(0, 2, [4, 5])], [(0, 1, [6]), (1, 1, [])]]
    return make_plan(layout, lengths, spec(2), cost_model(), strategy="t", solve_s=0, lower_bound_s=0)


def _uneven_batch() -> list[torch.Tensor]:
    rng = np.random.default_rng(5)
    lengths = [60, 58, 55, 9, 40, 33, 21]
    return [torch.from_numpy(rng.integers(0, MODEL.vocab_size, size=n)) for n in lengths]


UNEVEN = dict(activation_checkpointing=True, act_budget_bytes=60 * 1000, max_grad_norm=0.5, weight_decay=0.1, warmup_steps=4)
"""Every training essential at once: checkpointed blocks, chunks, clipping, decay, warmup."""


def _states(host: Rank) -> dict:
    out = {f"param/{n}": full_tensor(p.detach()).clone() for n, p in host.model.named_parameters()}
    for n, p in host.model.named_parameters():
        for key, value in host.optimizer.state[p].items():
            out[f"optim/{n}/{key}"] = full_tensor(value).clone()
    return out


def _state_rank(rank: int, world_size: int, rendezvous: str, folder: str) -> dict:
    """Uneven passes (float64), then bf16 mixed precision, then a checkpoint of the latter."""
    host = Rank()
    batch = _uneven_batch()
    host.setup(rank, world_size, rendezvous, SupervisedSpec(worker=worker_config(2, **UNEVEN)))
    uneven = host.program.run_step(_uneven_plan(batch), batch)
    grads = {n: full_tensor(p.grad).clone() for n, p in host.model.named_parameters()}
    params = {n: full_tensor(p.detach()).clone() for n, p in host.model.named_parameters()}
    host.program = SupervisedSpec(worker=worker_config(2, dtype="bfloat16")).start(host)
    bf16 = host.program.run_step(_uneven_plan(batch), batch)
    bf16_grads = {n: full_tensor(p.grad).float().clone() for n, p in host.model.named_parameters()}
    bf16_params = {n: full_tensor(p.detach()).clone() for n, p in host.model.named_parameters()}
    rng = host.save_checkpoint(folder)
    result = dict(uneven=(uneven, grads, params), bf16=(bf16, bf16_grads, bf16_params, host.model_state_bytes()),
                  saved=_states(host), rng=rng, dtypes={str(p.dtype) for p in host.model.parameters()})
    host.shutdown()
    return result


def _load_rank(rank: int, world_size: int, rendezvous: str, folder: str, sharding: str) -> dict:
    host = Rank()
    host.setup(rank, world_size, rendezvous,
               SupervisedSpec(worker=worker_config(world_size, dtype="float32", state_sharding=sharding)))
    host.load_checkpoint(folder, step=1, rng=None)
    result = _states(host)
    host.shutdown()
    return result


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dcp") / "step-1"
    return folder, run_ranks(_state_rank, 2, (str(folder),), timeout_s=180)


def test_uneven_chunk_counts_run_equal_passes_and_stay_exact(two_ranks):
    _, results = two_ranks
    loss, grads, params = reference_step(_uneven_batch(), worker_config(2, **UNEVEN))
    passes = [[(mb["num_chunks"], mb["num_passes"]) for mb in r["uneven"][0].micro_batches] for r in results]
    assert passes[0][0] == (3, 3) and passes[1][0] == (1, 3)  # rank 1 ran two empty passes
    assert passes[1][2] == (0, 1)  # the idle rank ran one empty pass
    for r in results:
        report, got_grads, got_params = r["uneven"]
        assert report.loss == pytest.approx(loss, rel=1e-12)
        assert report.lr == pytest.approx(worker_config(2, **UNEVEN).lr / 4)  # warmup step 1 of 4
        assert report.grad_norm > 0.5  # clipping was active
        for name in grads:
            assert_close(got_grads[name], grads[name], f"grad {name}")
            assert_close(got_params[name], params[name], f"param {name} after AdamW")


def test_bf16_mixed_precision_within_tolerance_of_float64(two_ranks):
    _, results = two_ranks
    config = worker_config(2)
    loss, grads, params = reference_step(_uneven_batch(), config)
    flat = lambda d: torch.cat([d[n].double().flatten() for n in grads])  # noqa: E731
    for r in results:
        report, got_grads, got_params, _ = r["bf16"]
        assert r["dtypes"] == {"torch.float32"}  # fp32 master weights
        assert abs(report.loss - loss) <= BF16_LOSS_RTOL * loss
        assert (flat(got_grads) - flat(grads)).norm() <= BF16_GRAD_RTOL * flat(grads).norm()
        for name in grads:
            err = (got_grads[name].double() - grads[name]).norm()
            assert err <= BF16_TENSOR_RTOL * grads[name].norm(), name
            assert (got_params[name].double() - params[name]).abs().max() <= BF16_PARAM_ATOL_LR * config.lr, name


def test_model_state_bytes_are_a_1_over_n_shard(two_ranks):
    _, results = two_ranks
    num_params = GPT(MODEL).num_params()
    predicted = cost_model().state_bytes_per_param * num_params / 2  # bf16 mixed: 16 B/param, sharded over 2
    for r in results:
        report, _, _, held = r["bf16"]
        assert report.model_state_bytes == held
        assert abs(held - predicted) <= 0.02 * predicted, (held, predicted)
        assert report.activation_peak_bytes > 0


@pytest.mark.parametrize("world_size, sharding", [(4, "zero3"), (1, "replicated")])
def test_checkpoint_written_by_2_ranks_loads_on_other_layouts(two_ranks, world_size, sharding):
    folder, results = two_ranks
    saved = results[0]["saved"]
    loaded = run_ranks(_load_rank, world_size, (str(folder), sharding), timeout_s=120)
    for got in loaded:
        assert got.keys() == saved.keys()
        for key, want in saved.items():
            torch.testing.assert_close(got[key], want, rtol=0, atol=0, msg=lambda m, k=key: f"{k}: {m}")


def test_truncated_shard_is_an_error_naming_the_checkpoint(two_ranks, tmp_path):
    folder, _ = two_ranks
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in os.listdir(folder):
        data = (folder / f).read_bytes()
        (broken / f).write_bytes(data[: len(data) // 2] if f.endswith(".distcp") else data)
    errors = run_ranks(_load_rank, 1, (str(broken), "replicated"), timeout_s=120, return_errors=True)
    assert errors[0].kind == "CheckpointLoadError" and str(broken) in errors[0].message


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_index_is_not_unpickled_freely(tmp_path):
    (tmp_path / METADATA_FILE).write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(CheckpointLoadError, match="never holds"):
        _SafeReader(str(tmp_path)).read_metadata()


def test_lr_schedule_warms_up_then_decays_to_min():
    s = LRSchedule(lr=1.0, warmup_steps=4, decay_steps=14, min_lr=0.1)
    assert [s.at(k) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert s.at(4) == 1.0 and s.at(9) == pytest.approx(0.55) and s.at(14) == s.at(100) == 0.1
    assert all(s.at(k) >= s.at(k + 1) for k in range(4, 20))
    assert LRSchedule(lr=0.3).at(7) == 0.3


def test_no_weight_decay_on_norms_biases_and_embeddings():
    model = GPT(MODEL)
    decay, keep = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    assert {names[id(p)] for p in keep["params"]} == {n for n, p in model.named_parameters() if p.ndim < 2} | {"wte.weight", "wpe.weight"}
    assert all(names[id(p)].endswith("weight") and p.ndim == 2 for p in decay["params"])


def test_flops_formula():
    model = GPT(MODEL)
    h, layers, vocab = MODEL.hidden_size, MODEL.num_layers, MODEL.vocab_size
    per_block = 3 * h * h + h * h + 2 * MODEL.mlp_ratio * h * h  # qkv, proj, fc, out weights
    assert matmul_params(model, vocab, h) == layers * per_block + vocab * h
    flops = step_flops([10, 20], matmul_params=1000, num_layers=2, hidden_size=8, causal=True)
    assert flops == 6 * 1000 * 30 + 6 * 2 * 8 * (100 + 400)
    assert step_flops([10], matmul_params=0, num_layers=1, hidden_size=1, causal=False) == 12 * 100
