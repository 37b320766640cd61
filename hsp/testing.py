"""The test harness of the multi-process tier: `run_ranks` (gloo, world sizes 2-4).

    results = run_ranks(fn, world_size=4, args=(x,), timeout_s=60)

calls ``fn(rank, world_size, rendezvous, *args)`` in `world_size` fresh spawned
processes and returns the per-rank results in rank order; a failing or hanging rank
fails the test instead of hanging it (see `hsp.engine.spawn`, which `hsp profile` uses
too). Tests drive the plain rank runtime (`hsp.engine.rank.Rank`) through it, without Ray.
"""

from hsp.engine.spawn import RankError, RankFailure
from hsp.engine.spawn import spawn_ranks as run_ranks

__all__ = ["RankError", "RankFailure", "run_ranks"]
