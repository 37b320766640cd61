"""Checkpoint folders (no Ray): atomic commit, keep-last-k, corruption detection, the
checks before Ray starts. The shards themselves are tested in tests/hsp/test_exec_state.py."""

from __future__ import annotations

import json

import pytest

from cluster import checkpoint
from cluster.checkpoint import CheckpointConfig, CheckpointCorrupt


def _save(run_dir, step: int, shard: bytes = b"x" * 100, fingerprint=None) -> None:
    staging = checkpoint.staging_dir(run_dir, step)
    (staging / "__0_0.distcp").write_bytes(shard)
    (staging / ".metadata").write_bytes(b"index")
    run_state = {"step": step, "data_fingerprint": fingerprint or {"k": 1}, "rank_rng": ["r0"], "run": {"history": [step]}}
    checkpoint.commit(staging, run_state, keep_last=2)


def test_cluster_checkpoint_commit_keeps_the_newest_two(tmp_path):
    for step in (3, 6, 9):
        _save(tmp_path, step)
    assert [p.name for p in checkpoint.committed(tmp_path)] == ["step-000009", "step-000006"]
    assert checkpoint.saved_step(tmp_path) == 9
    state = checkpoint.read(checkpoint.committed(tmp_path)[0])
    assert state["step"] == 9 and state["files"] == {".metadata": 5, "__0_0.distcp": 100}
    assert checkpoint.saved_step(tmp_path / "nothing") is None


def test_cluster_checkpoint_a_save_cut_short_leaves_no_step_folder(tmp_path):
    _save(tmp_path, 3)
    staging = checkpoint.staging_dir(tmp_path, 6)  # the ranks wrote, the driver never committed
    (staging / "__0_0.distcp").write_bytes(b"half")
    assert [p.name for p in checkpoint.committed(tmp_path)] == ["step-000003"]
    _save(tmp_path, 6)  # the next save of that step starts from an empty staging folder
    assert checkpoint.read(checkpoint.committed(tmp_path)[0])["files"]["__0_0.distcp"] == 100


@pytest.mark.parametrize("damage, reason", [
    (lambda p: (p / "__0_0.distcp").write_bytes(b"x" * 50), "__0_0.distcp has 50 bytes, 100 were written"),
    (lambda p: (p / "__0_0.distcp").unlink(), "__0_0.distcp is missing"),
    (lambda p: (p / checkpoint.RUN_STATE).write_text('{"format": 2, "st'), "run_state.json is unreadable"),
    (lambda p: (p / checkpoint.RUN_STATE).unlink(), "run_state.json is missing"),
    (lambda p: (p / checkpoint.RUN_STATE).write_text(json.dumps({"format": 1})), "format 1, expected 2"),
])
def test_cluster_checkpoint_damage_is_named_with_the_folder(tmp_path, damage, reason):
    _save(tmp_path, 3)
    path = checkpoint.committed(tmp_path)[0]
    damage(path)
    with pytest.raises(CheckpointCorrupt, match=reason) as err:
        checkpoint.read(path)
    assert str(path) in str(err.value)
    moved = checkpoint.quarantine(path)
    assert moved.name == "step-000003.corrupt" and checkpoint.committed(tmp_path) == []


def test_cluster_resume_refuses_other_data_before_ray(tmp_path):
    _save(tmp_path, 3, fingerprint={"k": 1})
    checkpoint.check_before_start(tmp_path, fingerprint={"k": 1})
    with pytest.raises(ValueError, match="written for data"):
        checkpoint.check_before_start(tmp_path, fingerprint={"k": 2})
    (checkpoint.committed(tmp_path)[0] / checkpoint.RUN_STATE).unlink()
    checkpoint.check_before_start(tmp_path, fingerprint={"k": 2})  # unreadable: the scheduler reports and skips it


def test_cluster_checkpoint_config_needs_one_kept():
    with pytest.raises(ValueError, match="keep_last=0 must be >= 1"):
        CheckpointConfig(keep_last=0)
