"""Tokenizers built on the fly for the data tests (no download)."""

from __future__ import annotations

import json
from pathlib import Path

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
