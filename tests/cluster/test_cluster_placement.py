"""Pure rules of the Ray layer, no Ray: ranks per node from a placement, who is blamed
for a failure, and whether a machine or cluster can hold a worker group."""

from __future__ import annotations

import numpy as np
import pytest

from cluster.attribution import BUSY, COLLECTIVE, DIED, DONE, RAISED, Outcome, blame
from cluster.capacity import GIB, RANK_PROCESS_BYTES, Node, RankNeeds, check
from cluster.placement import Placement, rank_order, ranks_per_node
from solver.cost import CostModel
from solver.planner import plan
from solver.plan import validate
from solver.spec import ClusterSpec


@pytest.mark.parametrize(
    "counts, expected",
    [
        ([1], 1), ([3], 4), ([4], 4), ([5], 8),  # one node: every group stays inside it
        ([2, 2], 2), ([8, 8], 8), ([2, 2, 2], 2),  # equal power-of-two nodes: their size
        ([4, 2], 4), ([4, 4, 2], 4),  # a smaller last node cuts no block
        ([3, 1], 1), ([3, 3], 1), ([6, 6], 2), ([4, 2, 2], 2),  # uneven or not a power of two
    ],
)
def test_ranks_per_node_is_the_largest_power_of_two_dividing_every_node_boundary(counts, expected):
    assert ranks_per_node(counts) == expected


def test_rank_order_numbers_ranks_node_by_node_bigger_nodes_first():
    assert rank_order(["b", "a", "b", "a"]) == [0, 2, 1, 3]  # equal: the node seen first
    assert rank_order(["a", "b", "b", "b"]) == [1, 2, 3, 0]  # 3 ranks on b first: P = 1 either way, b's ranks together
    assert ranks_per_node([2, 4]) == 2 and ranks_per_node([4, 2]) == 4  # why the bigger node goes first


def _placement(nodes: list[str]) -> Placement:
    return Placement(node_ids=tuple(nodes), node_ips=("127.0.0.1",) * len(nodes), pids=tuple(range(len(nodes))))


def test_uneven_placement_warns_and_still_plans_valid_steps():
    even = _placement(["a", "a", "b", "b"])
    assert even.ranks_per_node == 2 and even.warning() is None
    uneven = _placement(["a", "a", "a", "b"])
    assert uneven.counts == [3, 1] and uneven.ranks_per_node == 1
    assert "[3, 1] ranks on 2 nodes" in uneven.warning() and "ranks_per_node=1" in uneven.warning()
    # the planner copes with P = 1: every group is "whole nodes" and may span real ones
    cost = CostModel.load("cluster/configs/cost-cpu-tiny.json")
    spec = ClusterSpec(num_ranks=4, ranks_per_node=uneven.ranks_per_node, num_heads=4, device_memory_bytes=GIB)
    lengths = np.array([900, 700, 300, 120, 64, 32, 16, 8])
    step = plan(lengths, spec, cost)
    validate(step, lengths, spec, cost)
    assert "ranks 0-2" in uneven.describe() and "ranks 3-3" in uneven.describe()


def _busy(entered: int | None, inside: bool = True, where: str = "micro-batch 0") -> Outcome:
    progress = None if entered is None else {"entered": entered, "left": entered - inside, "inside": inside,
                                             "where": where, "since_s": 0.0}
    return Outcome(BUSY, progress=progress)


def _failed(kind: str, entered: int = 2) -> Outcome:
    return Outcome(kind, f"{kind} detail", {"entered": entered, "left": entered, "inside": False,
                                            "where": "all-reduce", "since_s": 0.0})


def test_blame_a_silent_rank_over_the_peer_whose_collective_timed_out():
    verdict = blame({0: _busy(None), 1: _failed(COLLECTIVE)})
    assert (verdict.rank, verdict.cause) == (0, "hung")
    assert verdict.message.startswith("rank 0 is hung") and "rank 1: collective detail" in verdict.message


def test_blame_order_died_then_raised_then_hung():
    assert blame({0: _failed(COLLECTIVE), 1: Outcome(DIED, "actor died"), 2: _busy(None)}).cause == DIED
    verdict = blame({0: _busy(None), 1: _failed(RAISED), 2: _failed(COLLECTIVE)})
    assert (verdict.rank, verdict.cause) == (1, RAISED)


def test_blame_the_answering_rank_that_did_not_arrive():
    # rank 1 answers but is a section behind ranks 0 and 2, which wait in the all-reduce
    verdict = blame({0: _busy(3), 1: _busy(2, where="micro-batch 1"), 2: _busy(3), 3: Outcome(DONE)})
    assert (verdict.rank, verdict.cause) == (1, "behind")
    assert "entered 2 collective section(s), the furthest rank 3" in verdict.message
    # same count, but the others already failed in that section: the busy one kept them waiting
    verdict = blame({0: _failed(COLLECTIVE, entered=2), 1: _busy(2)})
    assert (verdict.rank, verdict.cause) == (1, "behind")


def test_blame_without_a_culprit():
    assert blame({0: _failed(COLLECTIVE), 1: _failed(COLLECTIVE)}).cause == COLLECTIVE
    verdict = blame({0: _busy(4), 1: _busy(4)})  # everyone at the same section: too slow, not stuck
    assert (verdict.rank, verdict.cause) == (0, "timeout")


def test_capacity_names_what_was_asked_what_is_there_and_the_fix():
    need = RankNeeds.of(1.0, 0.0, 10 * 2**20)
    assert need.memory_bytes == RANK_PROCESS_BYTES + 10 * 2**20
    machine = [Node(cpus=2, memory_bytes=20 * GIB)]
    check(need, 2, machine, "this machine")
    with pytest.raises(ValueError) as err:
        check(need, 3, machine, "this machine")
    message = str(err.value)
    assert "cluster.num_workers=3 needs 3 x 1 CPU = 3 CPUs" in message and "this machine has 2 CPUs" in message
    assert "lower --num-workers to 2" in message and "--cluster.cpus_per_worker 0.66 (ranks then share" in message
    with pytest.raises(ValueError, match="GiB of memory .* room for 1 rank"):  # memory binds: no CPU share helps
        check(RankNeeds(cpus=0.1, memory_bytes=15 * GIB), 2, machine, "this machine")


def test_capacity_counts_what_each_node_holds_not_the_cluster_total():
    # 2 CPUs in all, but a 2-CPU bundle fits on neither 1-CPU node
    with pytest.raises(ValueError, match="has 2 CPUs on 2 node\\(s\\), room for 0 rank\\(s\\): pass "
                                         "--cluster.cpus_per_worker 1 \\(ranks then share cores: slower\\), or add nodes"):
        check(RankNeeds(cpus=2, memory_bytes=GIB), 1, [Node(cpus=1), Node(cpus=1)], "the Ray cluster at x:1")
    gpus = [Node(cpus=8, gpus=2), Node(cpus=8, gpus=2)]
    check(RankNeeds(cpus=1, gpus=1, memory_bytes=GIB), 4, gpus, "the Ray cluster at x:1")
    with pytest.raises(ValueError, match="5 GPUs but .* has 16 CPUs, 4 GPUs on 2 node"):
        check(RankNeeds(cpus=1, gpus=1, memory_bytes=GIB), 5, gpus, "the Ray cluster at x:1")
