"""`hsp export`: a training run's weights as a Hugging Face folder (`transformers`'
from_pretrained loads it), written from the run directory alone.

The run directory records the model's config and tokenizer (cluster.checkpoint.MODEL_FILE);
the weights come through `cluster.checkpoint.read_model_state`, the one function that
knows the checkpoint format. A tokenizer.json the run used is copied beside the weights
(with its tokenizer_config.json), after checking it is still the one the run recorded.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from hsp.model.hf import DEFAULT_MAX_SHARD_BYTES

@dataclass(kw_only=True)
class ExportConfig:
    run_dir: str = ""
    """The run directory of `hsp train` to export (its latest checkpoint)."""
    out: str = ""
    """New (or empty) folder for config.json and the safetensors weights."""
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    """Largest safetensors file; a bigger model is split into shards plus an index."""

    def __post_init__(self) -> None:
        if self.max_shard_bytes <= 0:
            raise ValueError(f"export.max_shard_bytes={self.max_shard_bytes} must be > 0")


def export(config: ExportConfig) -> Path:
    """Write the run's model to config.out; returns the folder."""
    from cluster import checkpoint
    from hsp.model.config import ModelConfig
    from hsp.model.hf import save_hf
    from hsp.model.hf_config import check_exportable

    if not config.run_dir or not config.out:
        raise ValueError("pass the run directory and an output folder: hsp export RUN_DIR --out DIR")
    info = checkpoint.read_model_info(config.run_dir)
    model = ModelConfig.from_dict(info["model"])
    check_exportable(model)  # before reading any weights
    _, state = checkpoint.read_model_state(config.run_dir)
    out = save_hf(model, state, config.out, max_shard_bytes=config.max_shard_bytes)
    _copy_tokenizer(info.get("tokenizer"), out)
    return out


def _copy_tokenizer(recorded: dict | None, out: Path) -> None:
    from hsp.data import load_tokenizer

    if not recorded or recorded["spec"] in ("", "byte"):
        return  # the byte tokenizer has no file; transformers has no equivalent
    try:
        fingerprint = load_tokenizer(recorded["spec"]).fingerprint
    except ValueError as err:
        warnings.warn(f"the run's tokenizer is not copied: {err}", stacklevel=2)
        return
    if fingerprint != recorded["fingerprint"]:
        warnings.warn(f"the run's tokenizer is not copied: {recorded['spec']} changed since the run "
                      f"(fingerprint {fingerprint}, the run recorded {recorded['fingerprint']})", stacklevel=2)
        return
    source = Path(recorded["spec"])
    shutil.copyfile(source, out / "tokenizer.json")
    if (source.parent / "tokenizer_config.json").is_file():  # where BOS/EOS/PAD are named
        shutil.copyfile(source.parent / "tokenizer_config.json", out / "tokenizer_config.json")
