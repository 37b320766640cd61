"""Hugging Face checkpoints in and out, from and to local folders (no hub access).

    config, state = load_hf("path/to/llama")          # config.json + safetensors
    model = load_decoder("path/to/llama")             # the same, as a Decoder
    save_hf(config, model.state_dict(), "out/")       # transformers' from_pretrained loads it

A checkpoint folder holds `config.json` and either `model.safetensors` or a sharded
`model.safetensors.index.json` (whose weight_map names the shard of every tensor).
Names map one to one except that HF's separate q/k/v projections are hsp's one fused
`attn.qkv` (rows [q | k | v]) and gate/up are `mlp.gate_up` (rows [gate | up]); both are
concatenations, so import -> export is bit-exact. RoPE needs no conversion: hsp uses
the same "rotate half" layout as HF's Llama/Qwen2 (`hsp.model.layers.RotaryEmbedding`).
Tensors keep the checkpoint's dtype. Config checks live in `hsp.model.hf_config`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hsp.model.config import ModelConfig
from hsp.model.decoder import Decoder
from hsp.model.hf_config import hf_config_from_model, model_config_from_hf

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
"""transformers' default shard size."""

_FUSED = {"attn.qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
          "mlp.gate_up": ("mlp.gate_proj", "mlp.up_proj")}
_RENAMED = {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm", "attn.o": "self_attn.o_proj",
            "mlp.down": "mlp.down_proj"}
_TOP = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight", "lm_head.weight": "lm_head.weight"}
_DERIVED_SUFFIX = "rotary_emb.inv_freq"
"""Buffers some older checkpoints saved; hsp recomputes RoPE from rope_theta."""


def read_config(path: str | Path) -> ModelConfig:
    path = Path(path)
    file = path / "config.json"
    if not file.is_file():
        raise ValueError(f"{path} has no config.json; pass a Hugging Face model folder (config.json + model.safetensors)")
    return model_config_from_hf(json.loads(file.read_text()), file)


def _split_sizes(config: ModelConfig, name: str) -> tuple[int, ...]:
    """Row counts of the HF tensors the fused hsp parameter `name` concatenates."""
    if ".attn.qkv." in name:
        hd = config.head_dim
        return config.num_heads * hd, config.num_kv_heads * hd, config.num_kv_heads * hd
    return config.intermediate_size, config.intermediate_size


def hf_names(config: ModelConfig) -> dict[str, tuple[str, ...]]:
    """hsp parameter name -> the HF tensor name(s) it is made of (several: concatenated along dim 0)."""
    names = {k: (v,) for k, v in _TOP.items() if k != "lm_head.weight" or not config.tie_word_embeddings}
    kinds = ("weight", "bias") if config.attention_bias else ("weight",)
    for i in range(config.num_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        for kind in kinds:
            names[f"{ours}attn.qkv.{kind}"] = tuple(f"{theirs}{part}.{kind}" for part in _FUSED["attn.qkv"])
        names[f"{ours}mlp.gate_up.weight"] = tuple(f"{theirs}{part}.weight" for part in _FUSED["mlp.gate_up"])
        for mine, hf in _RENAMED.items():
            names[f"{ours}{mine}.weight"] = (f"{theirs}{hf}.weight",)
    return names


def _shard_files(path: Path) -> dict[str, Path]:
    """HF tensor name -> the safetensors file holding it."""
    if (path / INDEX_FILE).is_file():
        weight_map = json.loads((path / INDEX_FILE).read_text())["weight_map"]
        return {name: path / file for name, file in weight_map.items()}
    if (path / SINGLE_FILE).is_file():
        with safe_open(path / SINGLE_FILE, "pt") as f:
            return {name: path / SINGLE_FILE for name in f.keys()}
    raise ValueError(f"{path} has neither {SINGLE_FILE} nor {INDEX_FILE}; hsp reads safetensors checkpoints only")


def _read_tensors(files: dict[str, Path]) -> dict[str, torch.Tensor]:
    by_file: dict[Path, list[str]] = {}
    for name, file in files.items():
        by_file.setdefault(file, []).append(name)
    out = {}
    for file, names in by_file.items():
        with safe_open(file, "pt") as f:
            for name in names:
                out[name] = f.get_tensor(name)
    return out


def load_hf(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(ModelConfig, hsp state dict) of a local HF Llama/Qwen2/Mistral folder."""
    path = Path(path)
    config = read_config(path)
    tensors = _read_tensors(_shard_files(path))
    names = hf_names(config)
    if config.tie_word_embeddings and "lm_head.weight" in tensors:  # some tied checkpoints store the copy
        if not torch.equal(tensors["lm_head.weight"], tensors["model.embed_tokens.weight"]):
            raise ValueError(f"{path}: tie_word_embeddings is true but lm_head.weight differs from embed_tokens; "
                             "set tie_word_embeddings to false in config.json")
        del tensors["lm_head.weight"]
    wanted = {hf for parts in names.values() for hf in parts}
    extra = sorted(n for n in set(tensors) - wanted if not n.endswith(_DERIVED_SUFFIX))
    missing = sorted(wanted - set(tensors))
    if extra or missing:
        raise ValueError(f"{path}: tensors do not match the config (missing {missing[:3]}, unexpected {extra[:3]}"
                         f"{' ...' if len(missing) > 3 or len(extra) > 3 else ''}); is config.json the checkpoint's own?")
    state = {ours: torch.cat([tensors[n] for n in parts]) if len(parts) > 1 else tensors[parts[0]]
             for ours, parts in names.items()}
    _check_shapes(path, config, state)
    return config, state


def _check_shapes(path: Path, config: ModelConfig, state: dict[str, torch.Tensor]) -> None:
    with torch.device("meta"):
        expected = Decoder(config).state_dict()
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(f"{path}: {name} has shape {tuple(tensor.shape)}, the config implies {tuple(expected[name].shape)}")


def load_decoder(path: str | Path, *, dtype: torch.dtype | None = None, **overrides) -> Decoder:
    """A Decoder with the weights of a local HF folder; `overrides` replace ModelConfig
    fields that do not change the weights' shapes (e.g. max_seq_len, bidirectional)."""
    config, state = load_hf(path)
    if overrides:
        config = ModelConfig.from_dict({**config.to_dict(), **overrides})
    with torch.device("meta"):
        model = Decoder(config)
    model.load_state_dict(state, assign=True)
    return model if dtype is None else model.to(dtype)


def _dtype_name(state: dict[str, torch.Tensor]) -> str:
    dtypes = {t.dtype for t in state.values()}
    if len(dtypes) != 1:
        raise ValueError(f"state dict mixes dtypes {sorted(map(str, dtypes))}; cast it to one before export")
    return str(dtypes.pop()).removeprefix("torch.")


def save_hf(config: ModelConfig, state: dict[str, torch.Tensor], out_dir: str | Path, *,
            max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> Path:
    """Write `state` (a Decoder state dict) as an HF folder: config.json and model.safetensors,
    or shards of at most `max_shard_bytes` (a tensor is never split) plus their index."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"export folder {out} is not empty; pass a new or empty folder")
    hf_config = hf_config_from_model(config, _dtype_name(state))
    tensors = {}
    for ours, parts in hf_names(config).items():
        if ours not in state:
            raise ValueError(f"state dict lacks {ours!r}; is it the state of a Decoder built from this config?")
        pieces = state[ours].split(_split_sizes(config, ours)) if len(parts) > 1 else [state[ours]]
        tensors.update({name: piece.detach().contiguous().cpu() for name, piece in zip(parts, pieces)})
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    shards = _plan_shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        save_file(tensors, out / SINGLE_FILE, metadata={"format": "pt"})
        return out
    weight_map = {}
    for k, names in enumerate(shards, 1):
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: tensors[n] for n in names}, out / file, metadata={"format": "pt"})
        weight_map.update({n: file for n in names})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (out / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    return out


def _plan_shards(tensors: dict[str, torch.Tensor], max_shard_bytes: int) -> list[list[str]]:
    """Names grouped in order into shards of at most max_shard_bytes (a larger tensor gets its own)."""
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be > 0, got {max_shard_bytes}")
    shards: list[list[str]] = [[]]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards
