"""Shared test configuration. Tier-specific fixtures live in each tier's conftest."""

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Tiny matmuls on 2 shared cores are far slower with several threads per process
# (measured ~100x in the gloo tests); every process the tests start inherits this.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory):
    """Raw-text folders are prepared into $HSP_DATA_CACHE (hsp.data.corpus): the tests' own
    temporary folder, so no run leaves prepared copies in the system's temp dir."""
    before = os.environ.get("HSP_DATA_CACHE")
    os.environ["HSP_DATA_CACHE"] = str(tmp_path_factory.mktemp("hsp-data-cache"))
    yield os.environ["HSP_DATA_CACHE"]
    if before is None:
        del os.environ["HSP_DATA_CACHE"]
    else:
        os.environ["HSP_DATA_CACHE"] = before


@pytest.fixture(scope="session")
def ray_session():
    """ONE local Ray session for every Ray test of the run (tests/cluster, tests/rl)."""
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
