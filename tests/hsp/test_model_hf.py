"""Hugging Face checkpoints: hsp's logits equal transformers' on packed multi-sequence
streams (float64), import -> export is bit-exact, and unsupported configs are refused."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from hsp.model import ModelConfig, pack_positions
from hsp.model.hf import INDEX_FILE, SINGLE_FILE, load_decoder, load_hf, save_hf
from model_helpers import PLAIN_ATOL, TIGHT, build_hf, match_transformers_rounding, random_seqs, transformers_logits

torch.set_num_threads(1)  # see test_exec_model.py

LENGTHS = [7, 1, 30, 12, 300]  # 300 > BUCKET_MAX_LEN: the unbatched SDPA path too


def _hsp_logits(model, seqs):
    pos, cu = pack_positions([len(s) for s in seqs])
    with torch.no_grad():
        return model(torch.cat(seqs), pos, cu)


CASES = [  # (family, num_heads, num_kv_heads, tied)
    ("llama", 4, 2, False),
    ("llama", 4, 4, True),
    ("llama", 4, 1, False),
    ("qwen2", 4, 2, True),
    ("qwen2", 8, 2, False),
    ("mistral", 4, 2, False),
]


@pytest.mark.parametrize("family,heads,kv,tied", CASES)
def test_model_logits_equal_transformers_on_packed_sequences(tmp_path, family, heads, kv, tied):
    path = build_hf(tmp_path / "hf", family, num_heads=heads, num_kv_heads=kv, tied=tied, hidden_size=8 * heads)
    seqs = random_seqs(1, LENGTHS)
    reference = transformers_logits(path, seqs)
    model = load_decoder(path, dtype=torch.float64)
    assert model.config.num_kv_heads == kv and model.config.tie_word_embeddings == tied
    assert model.config.attention_bias == (family == "qwen2")
    plain = _hsp_logits(model, seqs)
    assert (plain - reference).abs().max() < PLAIN_ATOL
    torch.testing.assert_close(_hsp_logits(match_transformers_rounding(model), seqs), reference, **TIGHT)


def test_model_bidirectional_variant_equals_transformers_without_the_causal_mask(tmp_path):
    path = build_hf(tmp_path / "hf", "llama", num_kv_heads=1)
    seqs = random_seqs(2, [9, 4, 17])
    model = match_transformers_rounding(load_decoder(path, dtype=torch.float64, bidirectional=True))
    reference = transformers_logits(path, seqs, bidirectional=True)
    torch.testing.assert_close(_hsp_logits(model, seqs), reference, **TIGHT)
    causal = transformers_logits(path, seqs)
    assert (causal - reference).abs().max() > 1e-3  # the mask really changed something


@pytest.mark.parametrize("family,sharded", [("llama", False), ("qwen2", True)])
def test_model_import_export_is_bit_exact(tmp_path, family, sharded):
    source = build_hf(tmp_path / "hf", family, num_kv_heads=2, tied=(family == "qwen2"))
    if sharded:  # re-save the source as shards of a few KiB
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(source).save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
        source = tmp_path / "sharded"
        assert (source / INDEX_FILE).is_file()
    config, state = load_hf(source)
    out = save_hf(config, state, tmp_path / "out", max_shard_bytes=30_000 if sharded else 10**9)
    assert (out / (INDEX_FILE if sharded else SINGLE_FILE)).is_file()
    assert load_hf(out)[0] == config
    again = load_hf(out)[1]
    assert again.keys() == state.keys()
    assert all(torch.equal(again[k], state[k]) and again[k].dtype == state[k].dtype for k in state)
    original = _all_tensors(source)
    exported = _all_tensors(out)
    assert exported.keys() == original.keys()
    assert all(torch.equal(exported[k], original[k]) for k in original)
    theirs = json.loads((source / "config.json").read_text())
    ours = json.loads((out / "config.json").read_text())
    for key in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "intermediate_size", "rms_norm_eps", "tie_word_embeddings", "rope_parameters"):
        assert ours[key] == theirs[key], key


def _all_tensors(path):
    files = sorted(path.glob("*.safetensors"))
    return {k: v for f in files for k, v in load_file(f).items()}


def test_model_export_loads_in_transformers_with_the_same_logits(tmp_path):
    """A model trained in hsp (here: its own random init, untied, GQA) exported and read back by transformers."""
    from hsp.model import Decoder

    config = ModelConfig(vocab_size=61, num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2,
                         intermediate_size=48, tie_word_embeddings=False, rope_theta=500.0, init_std=0.2, max_seq_len=512)
    model = Decoder(config).double()
    save_hf(config, model.state_dict(), tmp_path / "out", max_shard_bytes=40_000)
    assert (tmp_path / "out" / INDEX_FILE).is_file()
    seqs = random_seqs(3, [5, 40, 2])
    reference = transformers_logits(tmp_path / "out", seqs)
    torch.testing.assert_close(_hsp_logits(match_transformers_rounding(model), seqs), reference, **TIGHT)


def test_model_export_refuses_bidirectional_and_nonempty_folders(tmp_path):
    from hsp.model import Decoder

    config = ModelConfig(bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional=True cannot be exported"):
        save_hf(config, Decoder(config).state_dict(), tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("")
    with pytest.raises(ValueError, match="is not empty"):
        save_hf(ModelConfig(), Decoder(ModelConfig()).state_dict(), tmp_path / "b")


UNSUPPORTED = [  # (family, config.json edit, message)
    ("llama", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}, "rope_parameters.rope_type='llama3'"),
    ("llama", {"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling="),
    ("llama", {"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ("llama", {"attention_bias": True}, "attention_bias=True"),
    ("llama", {"mlp_bias": True}, "mlp_bias=True"),
    ("llama", {"head_dim": 16}, "head_dim=16"),
    ("llama", {"attention_dropout": 0.1}, "attention_dropout=0.1"),
    ("llama", {"quantization_config": {"bits": 4}}, "quantization_config="),
    ("qwen2", {"use_sliding_window": True}, "use_sliding_window=True"),
    ("qwen2", {"layer_types": ["full_attention", "sliding_attention"]}, "layer_types='sliding_attention'"),
    ("mistral", {"sliding_window": 4096}, "sliding_window=4096"),
    ("llama", {"model_type": "gemma"}, "model_type='gemma'"),
    ("llama", {"architectures": ["LlamaForSequenceClassification"]}, "architectures="),
]


@pytest.mark.parametrize("family,edit,message", UNSUPPORTED)
def test_model_unsupported_config_fields_are_errors_naming_the_field(tmp_path, family, edit, message):
    path = build_hf(tmp_path / "hf", family)
    file = path / "config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), **edit}))
    with pytest.raises(ValueError, match=f"config.json field {re.escape(message)}"):
        load_hf(path)


def test_model_checkpoint_that_does_not_match_its_config_is_an_error(tmp_path):
    path = build_hf(tmp_path / "hf", "llama")
    with pytest.raises(ValueError, match="has no config.json"):
        load_hf(tmp_path)
    file = path / "config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "num_hidden_layers": 3}))
    with pytest.raises(ValueError, match=r"missing \['model.layers.2"):
        load_hf(path)
    file.write_text(json.dumps({**json.loads(file.read_text()), "num_hidden_layers": 2, "intermediate_size": 40}))
    with pytest.raises(ValueError, match=r"mlp.gate_up.weight has shape \(96, 32\), the config implies \(80, 32\)"):
        load_hf(path)
    (path / SINGLE_FILE).unlink()
    with pytest.raises(ValueError, match="neither model.safetensors nor"):
        load_hf(path)
