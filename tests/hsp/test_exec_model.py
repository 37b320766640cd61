"""Pure (single-process) tests of the model, packing and the accumulation helper."""

import pytest
import torch
import torch.nn.functional as F

from hsp.accumulate import accumulate_backward, split_into_chunks
from hsp.engine.pack import IGNORE, pack_shard
from hsp.model.gpt import GPT, GPTConfig, pack_positions
from hsp.parallel import UlyssesAttention, catalogue_ranges
from solver.spec import ClusterSpec

# one intra-op thread: the CI box has 2 cores shared by other processes, and OpenMP
# barriers on an oversubscribed machine make tiny matmuls ~100x slower
torch.set_num_threads(1)

CFG = GPTConfig(vocab_size=31, num_layers=2, hidden_size=32, num_heads=4, max_seq_len=64, init_seed=1)


def _seqs(gen, lengths):
    return [torch.randint(0, CFG.vocab_size, (n,), generator=gen) for n in lengths]


@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_stream_equals_sequences_run_alone(bidirectional):
    cfg = GPTConfig(**{**CFG.__dict__, "bidirectional": bidirectional})
    model = GPT(cfg).double()
    seqs = _seqs(torch.Generator().manual_seed(0), [5, 1, 9])
    pos, cu = pack_positions([len(s) for s in seqs])
    packed = model(torch.cat(seqs), pos, cu)
    alone = torch.cat([model(s, *pack_positions([len(s)])) for s in seqs])
    torch.testing.assert_close(packed, alone, rtol=1e-10, atol=1e-12)


def test_causal_prefix_does_not_see_the_future_but_bidirectional_does():
    seq = torch.arange(8) % CFG.vocab_size
    for bidirectional, same in ((False, True), (True, False)):
        model = GPT(GPTConfig(**{**CFG.__dict__, "bidirectional": bidirectional})).double()
        full = model(seq, *pack_positions([8]))[:4]
        prefix = model(seq[:4], *pack_positions([4]))
        assert torch.allclose(full, prefix, atol=1e-12) is same


def test_init_is_deterministic_per_seed():
    a, b, c = GPT(CFG), GPT(CFG), GPT(GPTConfig(**{**CFG.__dict__, "init_seed": 2}))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.wte.weight, c.wte.weight)
    assert a.num_params() == sum(p.numel() for p in a.parameters())


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        GPTConfig(hidden_size=64, num_heads=3)


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
        model = GPT(CFG).double()

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


def test_catalogue_ranges_are_aligned_powers_of_two_dividing_heads():
    def ranges(world_size: int, num_heads: int) -> list[tuple[int, int]]:
        degrees = ClusterSpec(num_ranks=world_size, num_heads=num_heads, device_memory_bytes=1).degrees
        return catalogue_ranges(world_size, degrees)

    assert ranges(4, 4) == [(0, 2), (2, 2), (0, 4)]
    assert ranges(8, 2) == [(0, 2), (2, 2), (4, 2), (6, 2)]
    assert ranges(6, 8) == [(0, 2), (2, 2), (4, 2), (0, 4)]
    assert ranges(1, 4) == []


def test_ulysses_rejects_a_degree_that_does_not_divide_the_heads():
    q = torch.zeros(4, 6, 8)
    with pytest.raises(ValueError, match="degree 4 does not divide the head count 6"):
        UlyssesAttention(group=None, degree=4)(q, q, q, torch.tensor([0, 16]), True)
