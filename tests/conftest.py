"""Shared test configuration. Tier-specific fixtures live in each tier's conftest."""

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Tiny matmuls on 2 shared cores are far slower with several threads per process
# (measured ~100x in the gloo tests); every process the tests start inherits this.
os.environ.setdefault("OMP_NUM_THREADS", "1")
