"""Can the machine or the Ray cluster hold the worker group? Checked before anything slow.

Every rank is one actor asking Ray for `cpus_per_worker` CPUs and `gpus_per_worker` GPUs,
and is a process of its own: about RANK_PROCESS_BYTES of host memory before its model,
plus (on CPU) its memory budget of model states and activations. A bundle must fit on
one node, so the check counts how many ranks each node can host.

- The embedded local cluster gets exactly this machine's CPUs (no silent
  oversubscription): the check runs before Ray starts, against the CPUs this process
  may use, the GPUs torch sees and the memory available now. More ranks than cores is
  a choice made explicit with a fractional cluster.cpus_per_worker.
- An existing cluster (--address, or a Ray this process already joined) is checked
  right after connecting and before any actor is placed, against the alive nodes'
  total resources; resources other jobs hold now only make placement wait (warned).
  An autoscaling cluster grows on demand, but hsp's chart runs without an autoscaler.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass

log = logging.getLogger("hsp.train")

GIB = 1 << 30
THIS_MACHINE = "this machine"
RANK_PROCESS_BYTES = GIB // 2
"""Host memory of one rank process without its model: Python, torch, gloo and the Ray
worker (a CPU rank of the tiny default model peaks at ~0.42 GiB RSS)."""


@dataclass(frozen=True, kw_only=True)
class RankNeeds:
    """What one rank takes from its node."""

    cpus: float
    gpus: float = 0.0
    memory_bytes: int
    """Host memory of the rank process."""

    @classmethod
    def of(cls, cpus: float, gpus: float, budget_bytes: int) -> "RankNeeds":
        """A rank with a per-rank memory budget: on CPU the budget is host memory too."""
        return cls(cpus=cpus, gpus=gpus, memory_bytes=RANK_PROCESS_BYTES + (0 if gpus else budget_bytes))


@dataclass(frozen=True, kw_only=True)
class Node:
    """Resources of one node (a machine, or a Ray node)."""

    cpus: float
    gpus: float = 0.0
    memory_bytes: int = 0
    """Host memory ranks may use; 0 = unknown (not checked)."""

    def holds(self, need: RankNeeds) -> int:
        """Ranks of `need` this node can host at once."""
        fits = [self.cpus / need.cpus]
        if need.gpus:
            fits.append(self.gpus / need.gpus)
        if self.memory_bytes:
            fits.append(self.memory_bytes / need.memory_bytes)
        return int(math.floor(min(fits) + 1e-9))


def this_machine() -> Node:
    """The CPUs this process may run on, the GPUs torch sees, the memory available now."""
    import torch  # the driver has loaded it already (config checks)

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return Node(cpus=float(cpus), gpus=float(torch.cuda.device_count()), memory_bytes=_available_memory())


def ray_nodes() -> list[Node]:
    """The alive nodes of the Ray cluster this process is connected to (total resources)."""
    import ray

    nodes = []
    for node in ray.nodes():
        if node.get("Alive"):
            r = node.get("Resources", {})
            nodes.append(Node(cpus=r.get("CPU", 0.0), gpus=r.get("GPU", 0.0), memory_bytes=int(r.get("memory", 0))))
    return nodes


def check(need: RankNeeds, num_workers: int, nodes: list[Node], where: str) -> None:
    """Raise a one-line ValueError naming what was asked, what `where` has and the fix."""
    fits = sum(node.holds(need) for node in nodes)
    if fits >= num_workers:
        return
    cpus, gpus = sum(n.cpus for n in nodes), sum(n.gpus for n in nodes)
    known = [n.memory_bytes for n in nodes if n.memory_bytes]
    asked = [f"{num_workers} x {need.cpus:g} CPU = {num_workers * need.cpus:g} CPUs"]
    has = [f"{cpus:g} CPUs"]
    if need.gpus:
        asked.append(f"{num_workers * need.gpus:g} GPUs")
        has.append(f"{gpus:g} GPUs")
    if known:
        asked.append(f"{num_workers * need.memory_bytes / GIB:.1f} GiB of memory (~{need.memory_bytes / GIB:.2f} GiB a rank)")
        has.append(f"{sum(known) / GIB:.1f} GiB available")
    nodes_part = f" on {len(nodes)} node(s)" if len(nodes) > 1 else ""
    fixes = [f"lower --num-workers to {fits}"] if fits else []
    share = _cpu_share(need, num_workers, nodes)
    if share is not None:
        fixes.append(f"pass --cluster.cpus_per_worker {share:g} (ranks then share cores: slower)")
    fixes.append("add nodes" if where != THIS_MACHINE else "use a bigger machine or an existing cluster (--address)")
    raise ValueError(
        f"cluster.num_workers={num_workers} needs {', '.join(asked)} but {where} has {', '.join(has)}{nodes_part}, "
        f"room for {fits} rank(s): {', or '.join(fixes)}"
    )


def _cpu_share(need: RankNeeds, num_workers: int, nodes: list[Node]) -> float | None:
    """A CPU share per rank (two decimals) with which every rank fits, if CPUs are what binds."""
    total, per_node = sum(n.cpus for n in nodes), min((n.cpus for n in nodes), default=0.0)
    for share in (total / num_workers, per_node / math.ceil(num_workers / max(1, len(nodes)))):
        share = math.floor(100 * share) / 100
        if share > 0 and sum(n.holds(dataclasses.replace(need, cpus=share)) for n in nodes) >= num_workers:
            return share
    return None


def warn_if_busy(need: RankNeeds, num_workers: int) -> None:
    """Resources held by other jobs make placement wait until they are freed: say so."""
    import ray

    free = ray.available_resources()
    if free.get("CPU", 0.0) + 1e-9 < num_workers * need.cpus or free.get("GPU", 0.0) + 1e-9 < num_workers * need.gpus:
        log.warning(
            "the Ray cluster has %s CPUs and %s GPUs free now (other jobs hold the rest); "
            "placing %d workers waits until they are released",
            f"{free.get('CPU', 0.0):g}", f"{free.get('GPU', 0.0):g}", num_workers,
        )


def _available_memory() -> int:
    """MemAvailable from /proc/meminfo (Linux); 0 (unknown) elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def check_machine(need: RankNeeds, num_workers: int) -> float:
    """Before the embedded cluster starts; returns the CPUs to give it."""
    machine = this_machine()
    check(need, num_workers, [machine], THIS_MACHINE)
    return machine.cpus


def check_cluster(need: RankNeeds, num_workers: int, address: str) -> None:
    """Right after joining an existing cluster, before any actor is placed."""
    import ray

    joined = ray.get_runtime_context().gcs_address or address
    where = f"the Ray cluster at {joined}" if address else "the Ray cluster this process joined"
    check(need, num_workers, ray_nodes(), where)
    warn_if_busy(need, num_workers)
