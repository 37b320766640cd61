"""Where the tests find the data that is not shipped with hsp (KubeRay CRD schemas, the
Wikipedia lengths file).

Each path comes from an environment variable; unset, it defaults to the sibling folder
`../shared/` of a checkout when that exists. A test that needs a missing path skips with
a one-line reason, except under CI=true, where the data is provisioned and a missing
path is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIBLING = ROOT.parent / "shared"

KUBERAY_CRDS = ("HSP_KUBERAY_CRDS", SIBLING / "kuberay-crds",
                "a folder with KubeRay's ray.io_rayjobs.yaml and ray.io_rayclusters.yaml "
                "(e.g. `kubectl get crd rayjobs.ray.io -o yaml > DIR/ray.io_rayjobs.yaml`)")
WIKIPEDIA_LENGTHS = ("HSP_WIKIPEDIA_LENGTHS", SIBLING / "data" / "wikipedia_lengths.txt",
                     "FlexSP's Wikipedia lengths file (one length per line)")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def locate(entry: tuple[str, Path, str]) -> Path | None:
    """The path of `entry` (env var, else its default), or None when it does not exist."""
    var, default, _ = entry
    path = Path(os.environ[var]) if os.environ.get(var) else default
    return path if path.exists() else None


def require(entry: tuple[str, Path, str]) -> Path:
    """The path of `entry`; skips the test when it is missing (fails under CI=true)."""
    path = locate(entry)
    if path is not None:
        return path
    var, default, what = entry
    tried = os.environ.get(var) or default
    msg = f"needs {what}: set {var} ({tried} does not exist)"
    if in_ci():
        pytest.fail(msg + " -- CI provides it, so this is a failure there")
    pytest.skip(msg)
