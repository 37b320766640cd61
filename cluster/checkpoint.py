"""Checkpoints: every rank's model/optimizer/RNG state, the data cursor and the driver's
state, written atomically (temp file in the same folder, fsync, os.replace) so a crash
mid-write never leaves a torn `latest.pt`."""

from __future__ import annotations

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
