"""Run one function on N fresh local processes, one per rank (gloo on CPU, or NCCL).

    results = spawn_ranks(fn, world_size=4, args=(x,), timeout_s=60)

starts `world_size` processes (multiprocessing 'spawn'), calls
``fn(rank, world_size, rendezvous, *args)`` in each (rendezvous is a free
``tcp://127.0.0.1:port``) and returns the per-rank return values in rank order.
`fn` must be importable (a module-level function). A rank that raises is reported with
its traceback; ranks still running at the timeout are killed and reported, so the
caller fails instead of hanging. With ``return_errors=True`` a failed rank's entry is a
`RankError` instead of raising.

`hsp profile` runs its ranks this way (no Ray); the tests use it as
`hsp.testing.run_ranks`.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import queue
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

from hsp.engine.rank import free_rendezvous


@dataclass
class RankError:
    rank: int
    kind: str
    """Exception class name ('Timeout' when killed at the harness timeout)."""
    message: str
    traceback: str = ""


class RankFailure(RuntimeError):
    def __init__(self, errors: list[RankError]):
        self.errors = errors
        text = "\n".join(f"--- rank {e.rank}: {e.kind}: {e.message}\n{e.traceback}" for e in errors)
        super().__init__(f"{len(errors)} rank(s) failed:\n{text}")


def _entry(fn: Callable, rank: int, world_size: int, rendezvous: str, args: tuple, out: "mp.Queue") -> None:
    try:
        value = fn(rank, world_size, rendezvous, *args)
    except BaseException as err:  # report everything, including SystemExit from a dying rank
        value = RankError(rank, type(err).__name__, str(err), traceback.format_exc())
    # plain pickle: the queue's own pickler would pass tensors through shared memory that
    # vanishes when this process exits before the parent reads it
    out.put((rank, pickle.dumps(value)))


def spawn_ranks(
    fn: Callable[..., Any],
    world_size: int,
    args: tuple = (),
    timeout_s: float = 60.0,
    return_errors: bool = False,
) -> list[Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    rendezvous = free_rendezvous()
    procs = [ctx.Process(target=_entry, args=(fn, r, world_size, rendezvous, args, out), daemon=True) for r in range(world_size)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    deadline = time.monotonic() + timeout_s
    while len(results) < world_size and time.monotonic() < deadline:
        try:
            rank, payload = out.get(timeout=0.2)
            results[rank] = pickle.loads(payload)
        except queue.Empty:
            for r, p in enumerate(procs):  # a rank that died without reporting (os._exit, segfault)
                if r not in results and p.exitcode is not None and out.empty():
                    results[r] = RankError(r, "Exited", f"process exited with code {p.exitcode} without a result")
    for r, p in enumerate(procs):
        if r not in results:
            results[r] = RankError(r, "Timeout", f"still running after {timeout_s:.0f}s; killed")
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join()
    ordered = [results[r] for r in range(world_size)]
    errors = [v for v in ordered if isinstance(v, RankError)]
    if errors and not return_errors:
        raise RankFailure(errors)
    return ordered
