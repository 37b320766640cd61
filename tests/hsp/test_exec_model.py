"""Pure (single-process) tests of packing, the accumulation helper and the group catalogue
(the model on its own: test_model_decoder.py)."""

import pytest
import torch
import torch.nn.functional as F

from hsp.accumulate import accumulate_backward, split_into_chunks
from hsp.engine.pack import IGNORE, pack_shard
from hsp.model import Decoder, ModelConfig, pack_positions
from hsp.parallel import UlyssesAttention, catalogue_ranges
from solver.spec import ClusterSpec

# one intra-op thread: the CI box has 2 cores shared by other processes, and OpenMP
# barriers on an oversubscribed machine make tiny matmuls ~100x slower
torch.set_num_threads(1)

CFG = ModelConfig(vocab_size=31, num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, intermediate_size=40,
                  max_seq_len=64, init_seed=1)


def _seqs(gen, lengths):
    return [torch.randint(0, CFG.vocab_size, (n,), generator=gen) for n in lengths]


def test_pack_shard_builds_targets_before_sharding_and_pads():
    seqs = [torch.tensor([1, 2, 3]), torch.tensor([4, 5])]  # 5 tokens, degree 2 -> one pad token
    shards = [pack_shard(seqs, 2, j, pad_id=9) for j in range(2)]
    assert torch.equal(torch.cat([s.tokens for s in shards]), torch.tensor([1, 2, 3, 4, 5, 9]))
    assert torch.equal(torch.cat([s.targets for s in shards]), torch.tensor([2, 3, IGNORE, 5, IGNORE, IGNORE]))
    assert torch.equal(torch.cat([s.position_ids for s in shards]), torch.tensor([0, 1, 2, 0, 1, 0]))
    assert shards[0].cu_seqlens.tolist() == [0, 3, 5, 6]
    assert [s.num_real_tokens for s in shards] == [3, 2]


def test_split_into_chunks_keeps_order_and_budget():
    assert split_into_chunks([3, 4, 2, 5, 1], 7) == [[0, 1], [2, 3], [4]]
    assert split_into_chunks([3, 4, 2], 100) == [[0, 1, 2]]
    assert split_into_chunks([], 5) == []
    with pytest.raises(ValueError, match=r"unit 1 needs 9 bytes .* budget is 7 bytes; raise"):
        split_into_chunks([3, 9], 7)


def test_accumulated_gradient_equals_full_batch_whatever_the_budget():
    gen = torch.Generator().manual_seed(4)
    seqs = _seqs(gen, [7, 3, 12, 1, 5, 9])
    unit_bytes = [len(s) * 100 for s in seqs]
    num_predicted = sum(len(s) - 1 for s in seqs)

    def run(budget):
        model = Decoder(CFG).double()

        def loss_fn(chunk):
            pos, cu = pack_positions([len(s) for s in chunk])
            targets = torch.cat([torch.cat([s[1:], torch.tensor([IGNORE])]) for s in chunk])
            logits = model(torch.cat(chunk), pos, cu)
            return F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum") / num_predicted

        loss = accumulate_backward(seqs, unit_bytes, budget, loss_fn)
        return loss, [p.grad.clone() for p in model.parameters()]

    ref_loss, ref_grads = run(10**9)
    for budget in (1200, 1500, 2100):
        assert len(split_into_chunks(unit_bytes, budget)) > 1
        loss, grads = run(budget)
        assert loss == pytest.approx(ref_loss, rel=1e-12)
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match="unit 2 needs 1200 bytes"):
        run(1000)


def test_catalogue_ranges_are_aligned_powers_of_two_the_head_counts_allow():
    def ranges(world_size: int, num_heads: int, num_kv_heads: int | None = None) -> list[tuple[int, int]]:
        degrees = ClusterSpec(num_ranks=world_size, num_heads=num_heads, num_kv_heads=num_kv_heads,
                              device_memory_bytes=1).degrees
        return catalogue_ranges(world_size, degrees)

    assert ranges(4, 4) == [(0, 2), (2, 2), (0, 4)]
    assert ranges(8, 2) == [(0, 2), (2, 2), (4, 2), (6, 2)]
    assert ranges(6, 8) == [(0, 2), (2, 2), (4, 2), (0, 4)]
    assert ranges(1, 4) == []
    assert ranges(4, 4, 1) == ranges(4, 4, 2) == ranges(4, 4)  # K/V heads replicated at degrees 2 and 4
    assert ranges(4, 12, 6) == [(0, 2), (2, 2)]  # degree 4: neither of 4 and 6 divides the other
    with pytest.raises(ValueError, match="no sequence-parallel degree > 1 is usable"):
        ranges(4, 12, 3)  # 3 K/V heads: no degree > 1 can split or replicate them, refused by the spec


def test_ulysses_rejects_a_degree_that_does_not_divide_the_heads():
    q = torch.zeros(4, 6, 8)
    with pytest.raises(ValueError, match="degree 4 does not divide the head count 6"):
        UlyssesAttention(group=None, degree=4)(q, q, q, torch.tensor([0, 16]), True)
