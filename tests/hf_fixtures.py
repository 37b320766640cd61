"""Hugging Face artifacts built on the fly for the tests (no download): tiny random
transformers checkpoints and tokenizers trained or defined in memory. Shared by the
model/data tests (tests/hsp) and the end-to-end Ray tests (tests/cluster)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "héllo wörld — 日本語 ✓ and some more words",
    "packing sequences of different lengths into one stream",
] * 50


def train_bpe(folder: Path, *, vocab_size: int = 320, texts: list[str] = TEXTS, with_config: bool = True) -> Path:
    """A byte-level BPE trained on `texts`, saved as folder/tokenizer.json (+ tokenizer_config.json)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    if with_config:
        config = {"bos_token": "<s>", "eos_token": {"content": "</s>"}, "pad_token": "<pad>"}
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def word_level(folder: Path, num_words: int) -> Path:
    """A whitespace word-level tokenizer with `num_words` ids (w0, w1, ...; [UNK] is 0)."""
    vocab = {"[UNK]": 0, **{f"w{i}": i for i in range(1, num_words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()  # joins with spaces
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def build_hf(path: Path, family: str, *, num_heads: int = 4, num_kv_heads: int = 2, tied: bool = False,
             hidden_size: int = 32, num_layers: int = 2, seed: int = 0, vocab_size: int = 61, **extra) -> Path:
    """Save a tiny random transformers causal LM of `family` to `path`; every parameter
    (norm weights and biases included) is perturbed so that no tensor is a constant."""
    import transformers

    classes = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
               "mistral": ("MistralConfig", "MistralForCausalLM")}
    config_cls, model_cls = (getattr(transformers, name) for name in classes[family])
    if family == "mistral":
        extra.setdefault("sliding_window", None)
    config = config_cls(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=48, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, num_key_value_heads=num_kv_heads, max_position_embeddings=512,
                        rope_theta=500.0, rms_norm_eps=1e-5, tie_word_embeddings=tied, **extra)
    torch.manual_seed(seed)
    model = model_cls(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    model.save_pretrained(path)
    return path
