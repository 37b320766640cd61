"""The decoder on its own (single process): packing, masks, GQA, init, config errors."""

import math

import pytest
import torch

from hsp.model import Decoder, ModelConfig, pack_positions
from hsp.parallel.ulysses import check_ulysses_degree

torch.set_num_threads(1)  # see test_exec_model.py

CFG = ModelConfig(vocab_size=31, num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, intermediate_size=40,
                  max_seq_len=512, init_seed=1, init_std=0.2)


def _seqs(seed, lengths):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, CFG.vocab_size, (n,), generator=gen) for n in lengths]


def _with(**changes) -> ModelConfig:
    return ModelConfig(**{**CFG.to_dict(), **changes})


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("kv", [1, 2, 4])
def test_model_packed_stream_equals_sequences_run_alone(bidirectional, kv):
    model = Decoder(_with(bidirectional=bidirectional, num_kv_heads=kv, attention_bias=True)).double()
    seqs = _seqs(0, [5, 1, 9, 300, 3])  # 300: a sequence longer than the bucketing limit
    pos, cu = pack_positions([len(s) for s in seqs])
    packed = model(torch.cat(seqs), pos, cu)
    alone = torch.cat([model(s, *pack_positions([len(s)])) for s in seqs])
    torch.testing.assert_close(packed, alone, rtol=1e-10, atol=1e-12)


def test_model_causal_prefix_does_not_see_the_future_but_bidirectional_does():
    seq = torch.arange(8) % CFG.vocab_size
    for bidirectional, same in ((False, True), (True, False)):
        model = Decoder(_with(bidirectional=bidirectional)).double()
        full = model(seq, *pack_positions([8]))[:4]
        prefix = model(seq[:4], *pack_positions([4]))
        assert torch.allclose(full, prefix, atol=1e-12) is same


def test_model_positions_restart_per_sequence_and_rotate_relative():
    """RoPE makes attention depend on relative positions only: shifting every position of a
    sequence by the same offset leaves the logits unchanged; a different order does not."""
    model = Decoder(CFG).double()
    seq = _seqs(2, [12])[0]
    pos, cu = pack_positions([12])
    base = model(seq, pos, cu)
    torch.testing.assert_close(model(seq, pos + 1000, cu), base, rtol=1e-9, atol=1e-11)
    assert not torch.allclose(model(seq, pos.flip(0), cu), base, atol=1e-6)


def test_model_init_is_deterministic_and_tying_shares_the_embedding():
    a, b, c = Decoder(CFG), Decoder(CFG), Decoder(_with(init_seed=2))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.embed.weight, c.embed.weight)
    assert a.num_params() == sum(p.numel() for p in a.parameters())
    assert "lm_head.weight" not in a.state_dict()
    untied = Decoder(_with(tie_word_embeddings=False))
    assert untied.num_params() == a.num_params() + CFG.vocab_size * CFG.hidden_size
    std = Decoder(_with(init_std=0.02, num_layers=8)).blocks[0].attn.o.weight.std().item()
    assert std == pytest.approx(0.02 / math.sqrt(16), rel=0.1)  # residual outputs scaled by 1/sqrt(2L)


def test_model_meta_construction_skips_init_and_loads_a_state_dict():
    with torch.device("meta"):
        model = Decoder(CFG)
    state = Decoder(CFG).state_dict()
    model.load_state_dict(state, assign=True)
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)


def test_model_runs_in_bfloat16():
    model = Decoder(CFG).to(torch.bfloat16)
    seqs = _seqs(3, [6, 10])
    logits = model(torch.cat(seqs), *pack_positions([6, 10]))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_model_default_is_a_tiny_gqa_model():
    cfg = ModelConfig()
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.vocab_size) == (2, 64, 4, 2, 260)
    assert Decoder(cfg).num_params() < 150_000


@pytest.mark.parametrize("changes,message", [
    ({"hidden_size": 30, "num_heads": 4}, "hidden_size=30 is not divisible by model.num_heads=4"),
    ({"hidden_size": 12, "num_heads": 4, "num_kv_heads": 4}, "head_dim = hidden_size / num_heads = 12/4 = 3 is odd"),
    ({"num_kv_heads": 3}, "num_kv_heads=3 must divide model.num_heads=4"),
    ({"num_kv_heads": 8}, "num_kv_heads=8 must divide model.num_heads=4"),
    ({"rope_theta": float("nan")}, "rope_theta must be a finite number > 0, got nan"),
    ({"rms_norm_eps": 0.0}, "rms_norm_eps must be a finite number > 0"),
    ({"num_layers": True}, "num_layers must be a positive integer, got True"),
    ({"vocab_size": 0}, "vocab_size must be a positive integer, got 0"),
])
def test_model_config_errors_name_the_numbers(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _with(**changes)


def test_model_config_round_trips_through_a_dict():
    assert ModelConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ValueError, match=r"unknown model config keys \['mlp_ratio'\]"):
        ModelConfig.from_dict({**CFG.to_dict(), "mlp_ratio": 4})


@pytest.mark.parametrize("degree,heads,kv,ok", [
    (2, 4, 2, True), (4, 4, 2, True), (4, 4, 1, True), (8, 8, 2, True), (2, 8, 8, True), (1, 4, 2, True),
    (8, 4, 4, False), (4, 12, 6, False), (3, 6, 6, True), (8, 24, 12, False),
])
def test_model_ulysses_degree_rule(degree, heads, kv, ok):
    if ok:
        check_ulysses_degree(degree, heads, kv)
    else:
        with pytest.raises(ValueError, match=f"Ulysses degree {degree}"):
            check_ulysses_degree(degree, heads, kv)
