"""Ray-tier helpers (a plain module, not a conftest, so its name cannot clash with other
tiers' conftest modules); the one Ray session (`ray_session`) is in tests/conftest.py."""

from __future__ import annotations

import os
import socket

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


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
        "checkpoint.every_steps": 3,
        "train.run_dir": str(run_dir),
        "data.num_seqs_per_step": 16,
        "metrics.port": 0,
        "cluster.num_workers": 2,
    }
    values.update(overrides)
    return build_config(read_file(DEFAULT_CONFIG), values)


def one_line_error(capsys, argv: list[str]) -> str:
    """Run `hsp ARGV` through the real entry point; it must exit 2 with one error line."""
    from cluster.cli import main

    capsys.readouterr()  # only what the command prints
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"hsp {argv[0]}: error: ")
    return err
