"""Ray-tier fixtures: ONE local Ray session for every test in tests/cluster."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        # address="local": never attach to another Ray running on this machine (e.g. the
        # head the job-submit test starts); 4 logical CPUs so a rebuilt group can be
        # placed while the failed one is still being torn down
        ray.init(
            address="local",
            num_cpus=4,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_config(run_dir, **overrides):
    """A few quick steps on the tiny default model: 2 workers, 16 sequences per step."""
    from cluster.commands.train import DEFAULT_CONFIG
    from cluster.config import build_config, read_file

    values = {
        "train.steps": 6,
        "train.checkpoint_every": 3,
        "train.run_dir": str(run_dir),
        "data.num_seqs_per_step": 16,
        "metrics.port": 0,
        "cluster.num_workers": 2,
    }
    values.update(overrides)
    return build_config(read_file(DEFAULT_CONFIG), values)
