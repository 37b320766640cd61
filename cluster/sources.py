"""What an `hsp train` run starts from, resolved on the driver before Ray starts: its
tokenizer, its model (the [model] section, or `--init-from`'s config.json) and the
`DataSpec` every worker rebuilds its dataset from.

With `--init-from DIR` the architecture is DIR/config.json's. A [model] key that differs
from both its default and config.json is an error naming both values; a key left at its
default takes config.json's value. Two keys legitimately differ:

- `model.max_seq_len` is a setting of the run (the longest training sample; RoPE has no
  position table), not of the checkpoint. Left at its default it is capped at config.json's
  max_position_embeddings; set higher, it is used with a warning. The run records the
  checkpoint's max_position_embeddings for `hsp export`, which writes it back unchanged.
- `model.init_seed` is train.seed as always; it does not matter when weights are loaded.

`model.init_std` has no effect on loaded weights, so setting it is an error too.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

from cluster.config import TrainConfig
from hsp.data import DataSpec, Manifest, Tokenizer, load_tokenizer
from hsp.data.corpus import CACHE_ENV
from hsp.model.config import ModelConfig

RUN_SETTINGS = ("max_seq_len", "init_seed", "bidirectional")
"""ModelConfig fields that belong to the run, not to an imported checkpoint."""
NO_EFFECT = ("init_std",)
"""ModelConfig fields that do nothing when the weights are loaded."""
HF_KEYS = {"vocab_size": "vocab_size", "num_layers": "num_hidden_layers", "hidden_size": "hidden_size",
           "num_heads": "num_attention_heads", "num_kv_heads": "num_key_value_heads",
           "intermediate_size": "intermediate_size", "rope_theta": "rope_theta", "rms_norm_eps": "rms_norm_eps",
           "tie_word_embeddings": "tie_word_embeddings", "attention_bias": "attention_bias (model_type qwen2)"}
"""[model] key -> the config.json key it comes from (for error messages)."""


def run_tokenizer(config: TrainConfig) -> Tokenizer:
    """data.tokenizer, or with data.prepared_dir and no tokenizer, the one the data was prepared with."""
    data = config.data
    if data.tokenizer or not data.prepared_dir:
        return load_tokenizer(data.tokenizer)
    recorded = Manifest.read(data.prepared_dir).tokenizer
    try:
        return load_tokenizer(recorded["spec"])
    except ValueError as err:
        raise ValueError(
            f"{data.prepared_dir} was prepared with tokenizer {recorded['name']!r}, which cannot be loaded now "
            f"({err}); pass it with --tokenizer"
        ) from None


def run_model(config: TrainConfig, tokenizer: Tokenizer) -> tuple[ModelConfig, ModelConfig]:
    """(the model every rank builds, the model as `hsp export` writes it).

    They differ only in max_seq_len: the run's limit vs the context the model declares
    (the imported checkpoint's max_position_embeddings, or the run's limit)."""
    seed = config.train.seed
    if not config.init_from:
        model = dataclasses.replace(config.model, vocab_size=tokenizer.vocab_size, init_seed=seed)
        return model, model
    from hsp.model.hf import read_config

    theirs = read_config(config.init_from)
    _check_against_checkpoint(config, theirs)
    model = dataclasses.replace(theirs, max_seq_len=_max_seq_len(config, theirs), init_seed=seed)
    if tokenizer.vocab_size > model.vocab_size:
        raise ValueError(
            f"the tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} ids but {config.init_from} has "
            f"vocab_size={model.vocab_size}: ids >= {model.vocab_size} have no embedding; use the checkpoint's own "
            "tokenizer (--tokenizer DIR/tokenizer.json) or one with at most that many ids"
        )
    if model.max_seq_len > theirs.max_seq_len:
        warnings.warn(
            f"model.max_seq_len={model.max_seq_len} > {config.init_from}'s max_position_embeddings="
            f"{theirs.max_seq_len}: the checkpoint has not seen positions that far", stacklevel=2
        )
    return model, dataclasses.replace(model, max_seq_len=theirs.max_seq_len)


def _max_seq_len(config: TrainConfig, theirs: ModelConfig) -> int:
    """model.max_seq_len when set; left at its default, no more than the checkpoint declares."""
    default = TrainConfig().model.max_seq_len
    ours = config.model.max_seq_len
    return min(default, theirs.max_seq_len) if ours == default else ours


def _check_against_checkpoint(config: TrainConfig, theirs: ModelConfig) -> None:
    default, ours, where = TrainConfig().model, config.model, f"{config.init_from}/config.json"
    for name in ModelConfig.__dataclass_fields__:
        value = getattr(ours, name)
        if name in RUN_SETTINGS or value == getattr(default, name):
            continue
        if name in NO_EFFECT:
            raise ValueError(f"model.{name}={value!r} has no effect with --init-from (the weights come from "
                             f"{config.init_from}); remove it")
        if value != getattr(theirs, name):
            raise ValueError(
                f"model.{name}={value!r} conflicts with {where} ({HF_KEYS[name]}={getattr(theirs, name)!r}): with "
                f"--init-from the architecture comes from the checkpoint; remove model.{name} or set it to "
                f"{getattr(theirs, name)!r}"
            )


def run_data_spec(config: TrainConfig, model: ModelConfig, tokenizer: Tokenizer) -> DataSpec:
    """The DataSpec of the run (absolute paths: workers may start elsewhere). Raw text is
    prepared into $HSP_DATA_CACHE when set, else <run_dir>/data-cache."""
    d = config.data
    absolute = lambda path: str(Path(path).resolve()) if path else ""  # noqa: E731
    cache = os.environ.get(CACHE_ENV) or Path(config.train.run_dir) / "data-cache"
    return DataSpec(
        max_len=model.max_seq_len,
        data_dir=absolute(d.data_dir),
        prepared_dir=absolute(d.prepared_dir),
        tokenizer=tokenizer.spec,
        text_field=d.text_field,
        cache_dir=absolute(cache),
        max_undecodable_fraction=d.max_undecodable_fraction,
        seed=d.seed,
        num_docs=d.num_docs,
        reference_len=d.reference_len,
    )
