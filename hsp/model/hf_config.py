"""Hugging Face `config.json` <-> `ModelConfig` for the Llama, Qwen2 and Mistral families.

Every key of an imported config.json is either mapped onto a ModelConfig field, checked
to have the one value hsp implements, or on a short list of keys that do not change the
computation (token ids, dtype, cache settings). Anything else -- a RoPE scaling type, a
sliding window, an o_proj or MLP bias, a head_dim other than hidden_size / num_heads,
an activation other than SiLU, an unknown key -- is an error naming the key and the
value, never silently ignored. Both the transformers-4 keys (`rope_theta`,
`rope_scaling`) and the transformers-5 `rope_parameters` are understood.
"""

from __future__ import annotations

from pathlib import Path

from hsp.model.config import ModelConfig

FAMILIES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
"""model_type -> the architecture hsp loads. Mistral without a sliding window is Llama."""

_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "max_position_embeddings")
_INERT = {
    "architectures", "model_type", "transformers_version", "_name_or_path", "torch_dtype", "dtype",
    "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range", "use_cache", "return_dict",
    "output_attentions", "output_hidden_states", "torchscript", "tokenizer_class", "is_decoder",
    # splits the matmuls of the original Llama-2 training code; the same function
    "pretraining_tp",
}
"""Keys that do not change what the model computes."""
_CHECKED = {
    # key: the only value hsp implements (what a missing key means in transformers)
    "hidden_act": "silu",
    "attention_dropout": 0.0,
    "mlp_bias": False,
    "rope_scaling": None,
}
_MAPPED = {"num_key_value_heads", "rms_norm_eps", "rope_theta", "rope_parameters", "tie_word_embeddings", "head_dim",
           "attention_bias", "use_sliding_window", "sliding_window", "max_window_layers", "layer_types"}


def _fail(path: Path, key: str, value, why: str) -> ValueError:
    return ValueError(f"{path}: config.json field {key}={value!r} is not supported: {why}")


def _rope_theta(path: Path, cfg: dict) -> float:
    params = cfg.get("rope_parameters")
    if params is None:
        return float(cfg.get("rope_theta", 10000.0))
    if params.get("rope_type", "default") != "default":
        raise _fail(path, "rope_parameters.rope_type", params["rope_type"],
                    "hsp implements plain RoPE only (no linear/dynamic/yarn/llama3 scaling); use a checkpoint without rope scaling")
    extra = sorted(set(params) - {"rope_type", "rope_theta"})
    if extra:
        raise _fail(path, f"rope_parameters.{extra[0]}", params[extra[0]], "hsp implements plain RoPE (rope_type and rope_theta only)")
    return float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))


def _check_family(path: Path, family: str, cfg: dict) -> bool:
    """Family-specific checks; returns whether q/k/v carry a bias."""
    if family == "qwen2":
        if cfg.get("use_sliding_window", False):
            raise _fail(path, "use_sliding_window", True, "hsp attends over the whole sequence; set it to false")
        layer_types = cfg.get("layer_types") or []
        odd = [t for t in layer_types if t != "full_attention"]
        if odd:
            raise _fail(path, "layer_types", odd[0], "hsp supports full_attention layers only")
        return True  # Qwen2 always has q/k/v biases (and none on o_proj)
    if cfg.get("sliding_window") is not None:
        raise _fail(path, "sliding_window", cfg["sliding_window"], "hsp attends over the whole sequence; set it to null")
    if cfg.get("attention_bias", False):
        raise _fail(path, "attention_bias", True, f"{family} puts a bias on o_proj too, which hsp does not implement")
    for key in ("use_sliding_window", "max_window_layers", "layer_types"):
        if key in cfg:
            raise _fail(path, key, cfg[key], f"not a {family} field")
    return False


def model_config_from_hf(cfg: dict, path: Path) -> ModelConfig:
    """The ModelConfig of a parsed config.json (`path` only names it in errors)."""
    family = cfg.get("model_type")
    if family not in FAMILIES:
        raise _fail(path, "model_type", family, f"hsp loads {sorted(FAMILIES)}")
    if cfg.get("architectures") not in (None, [FAMILIES[family]]):
        raise _fail(path, "architectures", cfg["architectures"], f"hsp loads the causal LM {FAMILIES[family]}")
    unknown = sorted(set(cfg) - set(_REQUIRED) - _INERT - set(_CHECKED) - _MAPPED)
    if unknown:
        raise _fail(path, unknown[0], cfg[unknown[0]],
                    "hsp does not know this key; if it does not change the architecture, delete it from config.json")
    missing = [key for key in _REQUIRED if cfg.get(key) is None]
    if missing:
        raise ValueError(f"{path}: config.json lacks {missing}; a {FAMILIES[family]} config needs {list(_REQUIRED)}")
    for key, supported in _CHECKED.items():
        if cfg.get(key, supported) != supported:
            raise _fail(path, key, cfg[key], f"hsp implements {key}={supported!r} only")
    heads = cfg["num_attention_heads"]
    if cfg.get("head_dim") not in (None, cfg["hidden_size"] // heads) or cfg["hidden_size"] % heads:
        raise _fail(path, "head_dim", cfg.get("head_dim"),
                    f"hsp needs head_dim = hidden_size / num_attention_heads = {cfg['hidden_size']}/{heads}")
    bias = _check_family(path, family, cfg)
    return ModelConfig(
        vocab_size=cfg["vocab_size"],
        num_layers=cfg["num_hidden_layers"],
        hidden_size=cfg["hidden_size"],
        num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads") or heads,
        intermediate_size=cfg["intermediate_size"],
        rope_theta=_rope_theta(path, cfg),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attention_bias=bias,
        max_seq_len=cfg["max_position_embeddings"],
    )


def check_exportable(config: ModelConfig) -> None:
    """Only causal models export: transformers runs every Llama/Qwen2 with a causal mask."""
    if config.bidirectional:
        raise ValueError(
            "model.bidirectional=True cannot be exported as a Hugging Face causal LM (it is e.g. the diffusion LM of "
            "`hsp rl`): transformers would run it with a causal mask and compute something else; export a causal model"
        )


def hf_config_from_model(config: ModelConfig, dtype_name: str) -> dict:
    """config.json for `config`: Qwen2 when q/k/v have biases, else Llama. Written with
    both the transformers-5 `rope_parameters` and the older `rope_theta`."""
    check_exportable(config)
    family = "qwen2" if config.attention_bias else "llama"
    out = {
        "architectures": [FAMILIES[family]],
        "model_type": family,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_dropout": 0.0,
        "dtype": dtype_name,
        "torch_dtype": dtype_name,
    }
    if family == "qwen2":
        out.update(use_sliding_window=False, sliding_window=None, max_window_layers=config.num_layers)
    else:
        out.update(attention_bias=False, mlp_bias=False)
    return out
