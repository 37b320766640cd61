"""Bring your own model, tokenizer and data, end to end through the `hsp` entry point: tiny
random Llama/Qwen2 checkpoints saved by transformers, a BPE trained on the fly, a corpus
prepared by `hsp prepare`, `hsp train --init-from` on a real local Ray session, and
`hsp export` loaded back by transformers. Bad input is one error line, before Ray."""

from __future__ import annotations

import json
import random

import pytest
import torch
from cluster_testlib import one_line_error
from safetensors.torch import load_file

from cluster import checkpoint
from cluster.cli import main
from hsp.model import Decoder, ModelConfig, pack_positions
from hsp.model.hf import read_config
from tests.hf_fixtures import build_hf, train_bpe, word_level

pytestmark = pytest.mark.timeout(300)

TOKENIZER_IDS, MODEL_IDS = 300, 320
PLAIN_ATOL = 1e-5
"""hsp vs transformers logits in float64: transformers computes RMSNorm and the RoPE angles
in float32 even then (see tests/hsp/model_helpers.py), ~3e-7 here; a wrong weight, name or
mask is O(1). The exact (1e-12) comparison is tests/hsp/test_model_hf.py's."""
WORDS = "the a cat dog sat ran on under mat log big small red blue and then".split()


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A corpus of a 16-word language, a BPE trained on it, the corpus prepared with it, and
    tiny random Llama (untied) and Qwen2 (tied, q/k/v biases) checkpoints."""
    root = tmp_path_factory.mktemp("hf")
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 120))) + "." for _ in range(400)]
    (root / "corpus").mkdir()
    (root / "corpus" / "docs.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs))
    tokenizer = train_bpe(root / "tok", vocab_size=TOKENIZER_IDS, texts=docs)
    assert main(["prepare", str(root / "corpus"), "--out", str(root / "data"), "--tokenizer", str(tokenizer),
                 "--num-workers", "1", "--no-progress"]) == 0
    return {
        "tok": tokenizer, "data": root / "data", "corpus": root / "corpus", "root": root,
        "llama": build_hf(root / "llama", "llama", vocab_size=MODEL_IDS, seed=1),
        "qwen2": build_hf(root / "qwen2", "qwen2", vocab_size=MODEL_IDS, tied=True, seed=2),
    }


def _train(assets, model: str, run_dir, steps: int) -> dict:
    argv = ["train", "--init-from", str(assets[model]), "--tokenizer", str(assets["tok"]), "--data", str(assets["data"]),
            "--steps", str(steps), "--num-workers", "2", "--run-dir", str(run_dir), "--metrics-port", "0",
            "--data.num_seqs_per_step", "16", "--checkpoint-every", "0", "--no-progress"]
    assert main(argv) == 0
    return json.loads((run_dir / "summary.json").read_text())


def _export(run_dir, out) -> None:
    assert main(["export", str(run_dir), "--out", str(out)]) == 0


def _assert_transformers_logits_equal_hsp(run_dir, exported) -> None:
    """transformers' from_pretrained(exported) gives the logits of hsp's trained model on a packed stream."""
    from transformers import AutoModelForCausalLM

    config, state = checkpoint.read_model_state(run_dir)
    ours = Decoder(ModelConfig.from_dict(config))
    ours.load_state_dict(state)
    theirs = AutoModelForCausalLM.from_pretrained(exported, attn_implementation="sdpa").double().eval()
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, TOKENIZER_IDS, (n,), generator=gen) for n in (5, 17, 40, 1)]
    with torch.no_grad():
        packed = ours.double()(torch.cat(seqs), *pack_positions([len(s) for s in seqs]))
        alone = torch.cat([theirs(s[None]).logits[0] for s in seqs])
    torch.testing.assert_close(packed, alone, rtol=0, atol=PLAIN_ATOL)


@pytest.mark.slow
def test_hf_llama_trains_on_prepared_bpe_data_and_exports_to_transformers(ray_session, assets, tmp_path):
    run_dir = tmp_path / "run"
    summary = _train(assets, "llama", run_dir, steps=20)
    assert summary["steps"] == 20
    # a random checkpoint on a 16-word language: the loss falls by far more than step noise
    assert summary["loss_last_mean"] < summary["loss_first_mean"] - 0.8, summary
    recorded = json.loads((run_dir / checkpoint.MODEL_FILE).read_text())
    assert recorded["init_from"] == str(assets["llama"]) and recorded["tokenizer"]["vocab_size"] == TOKENIZER_IDS
    _export(run_dir, tmp_path / "hf")
    _assert_transformers_logits_equal_hsp(run_dir, tmp_path / "hf")
    assert (tmp_path / "hf" / "tokenizer.json").read_bytes() == (assets["tok"] / "tokenizer.json").read_bytes()
    trained = load_file(tmp_path / "hf" / "model.safetensors")
    start = load_file(assets["llama"] / "model.safetensors")
    assert not torch.equal(trained["model.layers.0.self_attn.q_proj.weight"], start["model.layers.0.self_attn.q_proj.weight"])


def test_hf_import_then_zero_steps_then_export_is_bit_exact(ray_session, assets, tmp_path):
    _train(assets, "llama", tmp_path / "run", steps=0)
    _export(tmp_path / "run", tmp_path / "hf")
    before, after = load_file(assets["llama"] / "model.safetensors"), load_file(tmp_path / "hf" / "model.safetensors")
    assert sorted(before) == sorted(after)
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype and torch.equal(after[name], tensor), name
    assert read_config(tmp_path / "hf") == read_config(assets["llama"])  # max_position_embeddings included


def test_hf_qwen2_with_qkv_bias_trains_and_exports(ray_session, assets, tmp_path):
    summary = _train(assets, "qwen2", tmp_path / "run", steps=3)
    assert summary["steps"] == 3 and summary["loss_last"] < summary["loss_first"]
    _export(tmp_path / "run", tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "qwen2"
    assert "model.layers.0.self_attn.q_proj.bias" in load_file(tmp_path / "hf" / "model.safetensors")
    _assert_transformers_logits_equal_hsp(tmp_path / "run", tmp_path / "hf")


# ---- bad input: exit 2, one line, before Ray starts ---------------------------------------------


def _train_error(capsys, tmp_path, *argv: str) -> str:
    return one_line_error(capsys, ["train", "--run-dir", str(tmp_path / "run"), "--metrics-port", "0", "--no-progress", *argv])


def test_hf_unsupported_config_field_is_named(capsys, assets, tmp_path):
    scaled = build_hf(tmp_path / "scaled", "llama", vocab_size=MODEL_IDS,
                      rope_scaling={"rope_type": "linear", "factor": 2.0})
    err = _train_error(capsys, tmp_path, "--init-from", str(scaled))
    assert "rope" in err and "linear" in err and "not supported" in err, err


def test_hf_model_flag_that_contradicts_config_json_names_both_values(capsys, assets, tmp_path):
    err = _train_error(capsys, tmp_path, "--init-from", str(assets["llama"]), "--model.num_layers", "4")
    assert "model.num_layers=4 conflicts with" in err and "num_hidden_layers=2" in err, err


def test_hf_tokenizer_that_does_not_match_the_prepared_data(capsys, assets, tmp_path):
    other = train_bpe(tmp_path / "other", vocab_size=280)
    err = _train_error(capsys, tmp_path, "--data", str(assets["data"]), "--tokenizer", str(other))
    assert "was prepared with tokenizer" in err and "fingerprint" in err and "prepare the data again" in err, err


def test_hf_tokenizer_vocabulary_too_large_for_the_model(capsys, assets, tmp_path):
    big = word_level(tmp_path / "big", MODEL_IDS + 5)
    err = _train_error(capsys, tmp_path, "--init-from", str(assets["llama"]), "--tokenizer", str(big),
                       "--data-dir", str(assets["corpus"]))
    assert f"has {MODEL_IDS + 5} ids" in err and f"vocab_size={MODEL_IDS}" in err, err
    err = _train_error(capsys, tmp_path, "--tokenizer", str(big))  # the synthetic corpus is byte ids
    assert "has nothing to tokenize" in err, err


def test_hf_checkpoint_whose_kv_heads_no_degree_can_run(capsys, tmp_path):
    odd = build_hf(tmp_path / "odd", "llama", num_heads=12, num_kv_heads=3, hidden_size=48, vocab_size=MODEL_IDS)
    err = _train_error(capsys, tmp_path, "--init-from", str(odd), "--num-workers", "4")
    assert "num_kv_heads=3" in err and "cluster.num_workers=4" in err and "cluster.num_workers = 1" in err, err


def test_hf_export_refuses_a_bidirectional_model_and_a_folder_that_is_no_run(capsys, tmp_path):
    checkpoint.write_model_info(tmp_path / "rl", model=ModelConfig(bidirectional=True).to_dict(), tokenizer=None)
    err = one_line_error(capsys, ["export", str(tmp_path / "rl"), "--out", str(tmp_path / "hf")])
    assert "bidirectional=True cannot be exported" in err and not (tmp_path / "hf").exists()
    err = one_line_error(capsys, ["export", str(tmp_path), "--out", str(tmp_path / "hf")])
    assert "has no model.json" in err


@pytest.mark.parametrize("files, needle", [
    ({}, "does not exist"),
    ({"empty.jsonl": b""}, "no documents in"),
    ({"blank.jsonl": b'""\n"   "\n'}, "all 2 documents"),
    ({"latin1.txt": "caf\u00e9 cr\u00e8me".encode("latin-1")}, "not valid UTF-8"),
])
def test_hf_prepare_refuses_bad_corpora_in_one_line(capsys, tmp_path, files, needle):
    corpus = tmp_path / "corpus"
    if files:
        corpus.mkdir()
        for name, data in files.items():
            (corpus / name).write_bytes(data)
    err = one_line_error(capsys, ["prepare", str(corpus), "--out", str(tmp_path / "out"), "--no-progress"])
    assert needle in err, err
    assert not (tmp_path / "out").exists()
