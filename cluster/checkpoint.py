"""Checkpoints: every rank's model/optimizer/RNG state, the data cursor and the driver's
state, written atomically (temp file in the same folder, fsync, os.replace) so a crash
mid-write never leaves a torn `latest.pt`."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

LATEST = "latest.pt"
FORMAT_VERSION = 1


@dataclass(kw_only=True)
class CheckpointConfig:
    every_steps: int = 25
    """Write a checkpoint every this many steps (0 = only at the end)."""
    resume: bool = False
    """Continue from the run directory's latest checkpoint."""

    def __post_init__(self) -> None:
        if self.every_steps < 0:
            raise ValueError(f"checkpoint.every_steps={self.every_steps} must be >= 0 (0 = only at the end)")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save(run_dir: str | Path, *, step: int, rank_states: list[dict], driver: dict, fingerprint: dict) -> Path:
    """Write the state after `step` finished steps; returns the checkpoint path."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "version": FORMAT_VERSION,
        "step": step,
        "rank_states": rank_states,
        "driver": driver,
        "data_fingerprint": fingerprint,
    }
    final = folder / LATEST
    fd, tmp = tempfile.mkstemp(prefix=".latest-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def load(run_dir: str | Path) -> dict | None:
    """The latest checkpoint of `run_dir`, or None if it has none."""
    path = checkpoint_dir(run_dir) / LATEST
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format {payload.get('version')}, expected {FORMAT_VERSION}")
    return payload


def saved_step(run_dir: str | Path) -> int | None:
    """Step of `run_dir`'s latest checkpoint (None without one), read without loading the
    rank states into memory."""
    path = checkpoint_dir(run_dir) / LATEST
    if not path.is_file():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["step"])


def check_resumable(payload: dict, *, fingerprint: dict, num_workers: int, path: Path) -> None:
    """Resuming must see the same data and world size, or the run would not continue exactly."""
    if payload["data_fingerprint"] != fingerprint:
        raise ValueError(
            f"{path} was written for data {payload['data_fingerprint']} but this run has {fingerprint}; "
            "resume with the same data settings or start a new --run-dir"
        )
    saved = len(payload["rank_states"])
    if saved != num_workers:
        raise ValueError(
            f"{path} holds {saved} ranks but --num-workers is {num_workers}; resume with --num-workers {saved}"
        )


# ---- the trained model, as `hsp export` reads it --------------------------------------

MODEL_FILE = "model.json"
"""In a run directory: the model's config, its tokenizer and what it started from."""


def write_model_info(run_dir: str | Path, *, model: dict, tokenizer: dict | None, init_from: str = "") -> Path:
    """Record `model` (hsp.model.ModelConfig.to_dict()), `tokenizer` (Tokenizer.describe(),
    None when the ids are a task's own) and the --init-from folder, so that the weights of
    the run can be exported without the run's flags."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MODEL_FILE
    path.write_text(json.dumps({"model": model, "tokenizer": tokenizer, "init_from": init_from}, indent=2) + "\n")
    return path


def read_model_info(run_dir: str | Path) -> dict:
    """{"model", "tokenizer", "init_from"} as `write_model_info` recorded them."""
    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir} has no {MODEL_FILE}: it is not the run directory of `hsp train` "
                         "(or of `hsp rl`); pass the --run-dir of a training run")
    return json.loads(path.read_text())


def read_model_state(run_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(model config dict, model state dict) of the run's latest checkpoint: the one place
    that knows how the checkpoint stores the weights (every rank holds all of them today;
    rank 0's are read, memory-mapped, without the optimizer states)."""
    model = read_model_info(run_dir)["model"]
    path = checkpoint_dir(run_dir) / LATEST
    if not path.is_file():
        raise ValueError(f"{run_dir} has no checkpoint ({path} is missing); a finished `hsp train` run writes one")
    payload = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format {payload.get('version')}, expected {FORMAT_VERSION}")
    return model, payload["rank_states"][0]["model"]
