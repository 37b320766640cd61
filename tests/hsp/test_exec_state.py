"""Model states (hsp.engine.state, hsp.engine.dcp): FSDP2 with uneven chunk counts and
activation checkpointing, bf16 mixed precision within its stated tolerance, bytes held
per rank, and sharded checkpoints that reshard and refuse what they should refuse."""

from __future__ import annotations

import dataclasses
import os
import pickle

import numpy as np
import pytest
import torch

from exec_helpers import MODEL, assert_close, cost_model, random_batch, reference_step, spec, worker_config
from hsp.engine import Rank, SupervisedSpec
from hsp.engine.dcp import METADATA_FILE, CheckpointLoadError, _SafeReader, read_model_tensors
from hsp.engine.flops import matmul_params, step_flops
from hsp.engine.state import LRSchedule, full_tensor, param_groups
from hsp.model import Decoder
from hsp.model.hf import load_hf, save_hf
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


def _state_rank(rank: int, world_size: int, rendezvous: str, folder: str, hf_dir: str) -> dict:
    """Uneven passes (float64), then bf16 mixed precision, then a checkpoint of the latter;
    last a zero3 bf16 model started from the Hugging Face folder `hf_dir` (--init-from)."""
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
    host.program = SupervisedSpec(worker=worker_config(2, dtype="bfloat16", init_from=hf_dir)).start(host)
    result["init_from"] = {n: full_tensor(p.detach()).clone() for n, p in host.model.named_parameters()}
    result["init_from_local"] = {n: p.to_local().numel() for n, p in host.model.named_parameters()}
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


HF_SEED = 11
"""Init seed of the Hugging Face folder's weights (not MODEL's), so a model that ignored
--init-from would not match them."""


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dcp") / "step-1"
    hf_dir = tmp_path_factory.mktemp("hf") / "model"
    theirs = dataclasses.replace(MODEL, init_seed=HF_SEED)
    save_hf(theirs, {n: t.to(torch.bfloat16) for n, t in Decoder(theirs).state_dict().items()}, hf_dir)
    return folder, run_ranks(_state_rank, 2, (str(folder), str(hf_dir)), timeout_s=180), hf_dir


def test_uneven_chunk_counts_run_equal_passes_and_stay_exact(two_ranks):
    _, results, _ = two_ranks
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
    _, results, _ = two_ranks
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
    _, results, _ = two_ranks
    num_params = Decoder(MODEL).num_params()
    predicted = cost_model().state_bytes_per_param * num_params / 2  # bf16 mixed: 16 B/param, sharded over 2
    for r in results:
        report, _, _, held = r["bf16"]
        assert report.model_state_bytes == held
        assert abs(held - predicted) <= 0.02 * predicted, (held, predicted)
        assert report.activation_peak_bytes > 0


def test_init_from_loads_the_hf_weights_exactly_into_the_sharded_model(two_ranks):
    """Every rank loads the whole folder, then FSDP2 shards it: the fp32 master weights
    gathered back are the folder's bf16 weights, bit for bit, and each rank holds half."""
    _, results, hf_dir = two_ranks
    _, theirs = load_hf(hf_dir)
    own_init = Decoder(MODEL).state_dict()
    for r in results:
        assert r["init_from"].keys() == theirs.keys()
        for name, want in theirs.items():
            torch.testing.assert_close(r["init_from"][name], want.float(), rtol=0, atol=0, msg=lambda m, n=name: f"{n}: {m}")
        assert not torch.equal(r["init_from"]["embed.weight"], own_init["embed.weight"].float())
    for name, want in theirs.items():
        assert sum(r["init_from_local"][name] for r in results) >= want.numel()  # 1/2 each (+ FSDP2 padding)
        assert max(r["init_from_local"][name] for r in results) < want.numel() or want.shape[0] < 2


@pytest.mark.parametrize("world_size, sharding", [(4, "zero3"), (1, "replicated")])
def test_checkpoint_written_by_2_ranks_loads_on_other_layouts(two_ranks, world_size, sharding):
    folder, results, _ = two_ranks
    saved = results[0]["saved"]
    loaded = run_ranks(_load_rank, world_size, (str(folder), sharding), timeout_s=120)
    for got in loaded:
        assert got.keys() == saved.keys()
        for key, want in saved.items():
            torch.testing.assert_close(got[key], want, rtol=0, atol=0, msg=lambda m, k=key: f"{k}: {m}")


def test_full_weights_are_read_from_the_shards_in_one_process(two_ranks, tmp_path):
    """What `hsp export` reads: both ranks' shards assembled without a process group, equal
    to the parameters the ranks gathered; a truncated shard is an error naming the folder."""
    folder, results, _ = two_ranks
    saved = {k.removeprefix("param/"): v for k, v in results[0]["saved"].items() if k.startswith("param/")}
    full = read_model_tensors(folder)
    assert full.keys() == saved.keys()
    for name, want in saved.items():
        torch.testing.assert_close(full[name], want, rtol=0, atol=0, msg=lambda m, n=name: f"{n}: {m}")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in os.listdir(folder):
        data = (folder / f).read_bytes()
        (broken / f).write_bytes(data[:64] if f == "__1_0.distcp" else data)  # the model's part is cut too
    with pytest.raises(CheckpointLoadError, match=str(broken)):
        read_model_tensors(broken)


def test_truncated_shard_is_an_error_naming_the_checkpoint(two_ranks, tmp_path):
    folder, _, _ = two_ranks
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


@pytest.mark.parametrize("tied, bias", [(True, False), (False, True)])
def test_no_weight_decay_on_norms_biases_and_embeddings(tied, bias):
    """Tied (the embedding is the output projection) and untied with Qwen2's Q/K/V biases."""
    model = Decoder(dataclasses.replace(MODEL, tie_word_embeddings=tied, attention_bias=bias))
    decay, keep = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    kept = {names[id(p)] for p in keep["params"]}
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    assert kept == {n for n, p in model.named_parameters() if p.ndim < 2} | {"embed.weight"}
    assert all(n.endswith("norm.weight") or n.endswith("qkv.bias") for n in kept - {"embed.weight"})
    assert any(n.endswith("qkv.bias") for n in kept) == bias
    decayed = {names[id(p)] for p in decay["params"]}
    assert all(p.ndim == 2 for p in decay["params"]) and ("lm_head.weight" in decayed) == (not tied)
    assert len(kept) + len(decayed) == len(list(model.parameters()))


@pytest.mark.parametrize("overrides", [{}, {"num_kv_heads": 1, "tie_word_embeddings": False, "attention_bias": True},
                                       {"num_kv_heads": 4, "intermediate_size": 24, "bidirectional": True}])
def test_flops_formula_counts_every_matmul_weight(overrides):
    """P_matmul (GQA K/V projection, 3 SwiGLU matrices, output projection) equals the 2-D
    weights of an actual Decoder, and the step FLOPs follow the stated formula."""
    config = dataclasses.replace(MODEL, **overrides)
    model = Decoder(config)
    h, hd, heads, kv, inter = config.hidden_size, config.head_dim, config.num_heads, config.num_kv_heads, config.intermediate_size
    per_block = h * (heads + 2 * kv) * hd + heads * hd * h + 3 * h * inter  # q,k,v + o + gate,up,down
    assert matmul_params(config) == config.num_layers * per_block + config.vocab_size * h
    weights = sum(p.numel() for p in model.blocks.parameters() if p.ndim == 2) + config.vocab_size * h
    assert matmul_params(config) == weights
    factor = 12 if config.bidirectional else 6
    expected = 6 * weights * 30 + factor * config.num_layers * heads * hd * (10**2 + 20**2)
    assert step_flops([10, 20], config) == expected
