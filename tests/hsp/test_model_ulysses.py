"""Ulysses with grouped-query attention (gloo, world sizes 2 and 4): a Hugging Face
checkpoint run sharded over a degree-d group, the stream packed and cut as the engine
does it (`pack_shard`), gives transformers' logits, and its gradients equal a
single-process run -- with K/V heads split (d | num_kv_heads) and replicated
(num_kv_heads | d, including num_kv_heads = 1)."""

import pytest
import torch
import torch.distributed as dist

from hsp.engine.pack import pack_shard
from hsp.model import pack_positions
from hsp.model.hf import load_decoder
from hsp.parallel import UlyssesAttention
from hsp.testing import run_ranks
from model_helpers import TIGHT, build_hf, match_transformers_rounding, random_seqs, transformers_logits

torch.set_num_threads(1)  # see test_exec_model.py

GRAD_TOL = dict(rtol=1e-10, atol=1e-12)
"""Sharded vs single-process gradients, float64: only the summation order differs."""
BATCHES = ([7, 1, 30, 12, 45], [3, 2])  # 95 tokens: sequences cross shard boundaries; 5 tokens: idle ranks
VOCAB = 61


def _weights(seed: int, num_tokens: int) -> torch.Tensor:
    """(T, V) fixed random weights of the test loss sum(logits * w)."""
    return torch.randn(num_tokens, VOCAB, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _model(path):
    return match_transformers_rounding(load_decoder(path, dtype=torch.float64))


def _rank(rank: int, world_size: int, rendezvous: str, paths: list) -> list:
    """Per (checkpoint, batch): this rank's real logits, and the all-reduced gradients."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world_size)
    attention = UlyssesAttention(dist.group.WORLD, world_size)
    results = []
    for path in paths:
        for b, lengths in enumerate(BATCHES):
            model = _model(path)
            seqs = random_seqs(b, lengths)
            shard = pack_shard(seqs, world_size, rank)
            logits = model(shard.tokens, shard.position_ids, shard.cu_seqlens, attention)
            t_local, real = shard.tokens.numel(), shard.num_real_tokens
            weights = torch.zeros(t_local, VOCAB, dtype=torch.float64)  # padding rows weigh nothing
            weights[:real] = _weights(b, sum(lengths))[rank * t_local : rank * t_local + real]
            (logits * weights).sum().backward()
            grads = {}
            for name, p in model.named_parameters():
                dist.all_reduce(p.grad)
                grads[name] = p.grad
            results.append((logits[:real].detach(), grads))
    dist.destroy_process_group()
    return results


def _reference_grads(path, seqs, weights) -> dict:
    model = _model(path)
    pos, cu = pack_positions([len(s) for s in seqs])
    (model(torch.cat(seqs), pos, cu) * weights).sum().backward()
    return {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("world_size,heads_kv", [
    (2, [(4, 2), (4, 1), (4, 4)]),  # split, replicated x2, split (plain multi-head)
    (4, [(4, 2), (4, 1), (8, 4)]),  # replicated x2, replicated x4, split
])
def test_model_ulysses_gqa_equals_transformers_and_single_process(tmp_path, world_size, heads_kv):
    paths = [build_hf(tmp_path / f"hf{h}-{kv}", "qwen2" if h == 8 else "llama", num_heads=h, num_kv_heads=kv,
                      hidden_size=8 * h, tied=(kv == 1), seed=h + kv) for h, kv in heads_kv]
    results = run_ranks(_rank, world_size, args=(paths,), timeout_s=240)
    k = 0
    for path in paths:
        for b, lengths in enumerate(BATCHES):
            seqs = random_seqs(b, lengths)
            what = f"{path.name}, degree {world_size}, lengths {lengths}"
            logits = torch.cat([rank_results[k][0] for rank_results in results])
            torch.testing.assert_close(logits, transformers_logits(path, seqs), **TIGHT, msg=lambda m: f"{what}: {m}")
            expected = _reference_grads(path, seqs, _weights(b, sum(lengths)))
            for name, grad in results[0][k][1].items():
                torch.testing.assert_close(grad, expected[name], **GRAD_TOL, msg=lambda m: f"{what}, {name}: {m}")
            k += 1


def test_model_ulysses_rejects_heads_it_cannot_split():
    q, kv = torch.zeros(4, 12, 8), torch.zeros(4, 6, 8)
    with pytest.raises(ValueError, match="degree 4 and num_kv_heads=6: neither divides the other"):
        UlyssesAttention(group=None, degree=4)(q, kv, kv, torch.tensor([0, 16]), True)
