"""Atomic checkpoints (no Ray)."""

from __future__ import annotations

import pytest
import torch

from cluster import checkpoint


def test_cluster_checkpoint_round_trip_and_atomic_replace(tmp_path):
    states = [{"w": torch.arange(4.0), "rng": torch.get_rng_state()}]
    checkpoint.save(tmp_path, step=3, rank_states=states, driver={"history": [1]}, fingerprint={"k": 1})
    loaded = checkpoint.load(tmp_path)
    assert loaded["step"] == 3 and torch.equal(loaded["rank_states"][0]["w"], states[0]["w"])

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    # a write that fails half-way leaves the previous checkpoint intact and no temp file
    with pytest.raises(RuntimeError, match="cannot pickle"):
        checkpoint.save(tmp_path, step=6, rank_states=states, driver={"x": Unpicklable()}, fingerprint={"k": 1})
    assert checkpoint.load(tmp_path)["step"] == 3
    assert [p.name for p in checkpoint.checkpoint_dir(tmp_path).iterdir()] == [checkpoint.LATEST]


def test_cluster_resume_refuses_other_data_or_world(tmp_path):
    checkpoint.save(tmp_path, step=1, rank_states=[{}, {}], driver={}, fingerprint={"k": 1})
    payload = checkpoint.load(tmp_path)
    with pytest.raises(ValueError, match="written for data"):
        checkpoint.check_resumable(payload, fingerprint={"k": 2}, num_workers=2, path=tmp_path)
    with pytest.raises(ValueError, match="resume with --num-workers 2"):
        checkpoint.check_resumable(payload, fingerprint={"k": 1}, num_workers=4, path=tmp_path)
