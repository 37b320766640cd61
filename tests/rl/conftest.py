"""RL (BGPO) test fixtures; helpers live in rl_helpers.py (importable by name)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # the tests use tiny tensors; more threads only contend with other test processes
    torch.set_num_threads(1)
