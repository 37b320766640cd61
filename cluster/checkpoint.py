"""Checkpoints of a `hsp train` run: one folder per saved step holding the ranks' own
shard files (torch.distributed.checkpoint, written by hsp.engine.dcp on every rank) and
the driver's run state as JSON beside them.

    checkpoints/
      step-000006/               a committed checkpoint
        .metadata                the shard index (rank 0)
        __0_0.distcp ...         one shard file per rank
        run_state.json           written last, by the driver: step, world size, data
                                 fingerprint and cursor, every rank's RNG state, the run
                                 state (history, drift, restarts) and each file's size
      .staging-step-000009/      being written: ignored, replaced by the next save

Commit is atomic: run_state.json is written and fsynced inside the staging folder, then
the folder is renamed to its step name (one rename), so a crash never leaves a partial
checkpoint under a step name. The newest `keep_last` committed checkpoints are kept.

On resume every candidate is checked newest first (readable JSON, format, every listed
file present with its size); one that fails here or when the ranks load it is reported by
path, renamed to step-NNNNNN.corrupt (kept for inspection, never loaded or counted
again) and the previous one is tried. Nothing here unpickles: the JSON is plain data and
the shards are read by hsp.engine.dcp's tensor-only reader.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 2
RUN_STATE = "run_state.json"
STEP_PREFIX = "step-"
STAGING_PREFIX = ".staging-"
CORRUPT_SUFFIX = ".corrupt"


class CheckpointCorrupt(ValueError):
    """A checkpoint folder that cannot be resumed from; names the folder and the reason."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"checkpoint {path} is unusable: {reason}")


@dataclass(kw_only=True)
class CheckpointConfig:
    every_steps: int = 25
    """Write a checkpoint every this many steps (0 = only at the end)."""
    resume: bool = False
    """Continue from the run directory's newest usable checkpoint (on any number of workers:
    the shards reshard)."""
    keep_last: int = 2
    """Committed checkpoints kept, newest first; older ones are deleted after each save
    (2: a checkpoint that turns out unreadable still has a predecessor to fall back to)."""

    def __post_init__(self) -> None:
        if self.every_steps < 0:
            raise ValueError(f"checkpoint.every_steps={self.every_steps} must be >= 0 (0 = only at the end)")
        if self.keep_last < 1:
            raise ValueError(
                f"checkpoint.keep_last={self.keep_last} must be >= 1 (the newest checkpoint is what --resume continues "
                "from); use 2 or more to keep a fallback for a damaged newest one"
            )


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def step_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:06d}"


def staging_dir(run_dir: str | Path, step: int) -> Path:
    """An empty folder for the ranks to write step `step`'s shards into."""
    folder = checkpoint_dir(run_dir) / f"{STAGING_PREFIX}{step_name(step)}"
    shutil.rmtree(folder, ignore_errors=True)  # left by a crash mid-save
    folder.mkdir(parents=True)
    return folder


def commit(staging: Path, run_state: dict, *, keep_last: int) -> Path:
    """Write run_state.json (with every shard file's size) into `staging`, rename it to
    its step name, and delete all but the newest `keep_last` checkpoints; returns the path."""
    files = {p.name: p.stat().st_size for p in sorted(staging.iterdir()) if p.is_file()}
    payload = {"format": FORMAT_VERSION, **run_state, "files": files}
    with open(staging / RUN_STATE, "w") as f:
        json.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
    final = staging.parent / step_name(int(run_state["step"]))
    if final.exists():  # the same step saved again after a rollback
        shutil.rmtree(final)
    os.rename(staging, final)
    _fsync_dir(staging.parent)
    for old in committed(staging.parent.parent)[keep_last:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def committed(run_dir: str | Path) -> list[Path]:
    """Committed checkpoint folders of `run_dir`, newest step first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    steps = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX) and p.name[len(STEP_PREFIX):].isdigit()]
    return sorted(steps, key=lambda p: int(p.name[len(STEP_PREFIX):]), reverse=True)


def read(path: Path) -> dict:
    """The run state of checkpoint `path`, after checking that every shard file it lists is
    there with its size; raises CheckpointCorrupt naming the folder and the problem."""
    try:
        payload = json.loads((path / RUN_STATE).read_text())
    except FileNotFoundError:
        raise CheckpointCorrupt(path, f"{RUN_STATE} is missing") from None
    except (OSError, ValueError) as err:
        raise CheckpointCorrupt(path, f"{RUN_STATE} is unreadable ({err})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointCorrupt(path, f"format {found!r}, expected {FORMAT_VERSION}")
    for name, size in payload.get("files", {}).items():
        actual = (path / name).stat().st_size if (path / name).is_file() else None
        if actual != size:
            what = "is missing" if actual is None else f"has {actual} bytes, {size} were written"
            raise CheckpointCorrupt(path, f"{name} {what}")
    return payload


def quarantine(path: Path) -> Path:
    """Move an unusable checkpoint out of the way (kept for inspection); returns its new path."""
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    shutil.rmtree(target, ignore_errors=True)
    os.rename(path, target)
    return target


def saved_step(run_dir: str | Path) -> int | None:
    """Step of `run_dir`'s newest committed checkpoint (None without one), from its name."""
    newest = committed(run_dir)
    return int(newest[0].name[len(STEP_PREFIX):]) if newest else None


def check_resumable(run_state: dict, *, fingerprint: dict, path: Path) -> None:
    """Resuming must see the same data (any number of workers: the shards reshard)."""
    if run_state.get("data_fingerprint") != json.loads(json.dumps(fingerprint)):
        raise ValueError(
            f"{path} was written for data {run_state.get('data_fingerprint')} but this run has {fingerprint}; "
            "resume with the same data settings or start a new --run-dir"
        )


def check_before_start(run_dir: str | Path, *, fingerprint: dict) -> None:
    """--resume's checks that need no Ray: the newest readable checkpoint was written for
    this data (unreadable ones are left to the scheduler, which reports and skips them)."""
    for path in committed(run_dir):
        try:
            run_state = read(path)
        except CheckpointCorrupt:
            continue
        check_resumable(run_state, fingerprint=fingerprint, path=path)
        return


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    """(model config dict, full model state dict) of the run's newest committed checkpoint:
    the one place that knows how a checkpoint stores the weights. The ranks' DCP shards
    are read and assembled in this process (no process group, no Ray) by hsp.engine.dcp's
    tensor-only reader; the optimizer states are not read. The tensors have the dtype the
    ranks kept: fp32 master weights for a bfloat16 run."""
    from hsp.engine.dcp import CheckpointLoadError, read_model_tensors

    model = read_model_info(run_dir)["model"]
    newest = committed(run_dir)
    if not newest:
        raise ValueError(f"{run_dir} has no checkpoint (no {STEP_PREFIX}NNNNNN folder in {checkpoint_dir(run_dir)}); "
                         "a finished `hsp train` run writes one")
    read(newest[0])  # every shard file there with its size, or CheckpointCorrupt naming the folder
    try:
        return model, read_model_tensors(newest[0])
    except CheckpointLoadError as err:
        raise CheckpointCorrupt(newest[0], str(err)) from None
