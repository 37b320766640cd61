"""Ray plumbing shared by `hsp train` and `hsp rl`: join or start a cluster, place one
`RankActor` per rank, rendezvous, and run a program call on all ranks with bounded
waiting.

A failed rank (killed process, actor error, timeout) surfaces as `WorkerFailure`
as soon as Ray reports it: the driver does not wait for survivors stuck in a
collective, it kills the whole group (and `hsp train` builds a new one).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from cluster.actors import RankActor
from cluster.attribution import BUSY, COLLECTIVE, DIED, DONE, RAISED, Outcome, blame, probe
from cluster.capacity import RankNeeds, check_cluster, check_machine
from cluster.placement import Placement, rank_order

if TYPE_CHECKING:  # names for annotations only: importing hsp here would load torch with cluster.launch
    from hsp.engine.rank import RankSpec
    from hsp.rl.step import RLRankSpec

log = logging.getLogger("hsp.train")


class WorkerFailure(RuntimeError):
    """A rank died, raised, or missed its deadline; the group must be rebuilt.

    `rank` is the rank blamed (cluster/attribution.py: the one that did not arrive, not
    the peer whose collective timed out waiting for it), `cause` why (attribution.CAUSES;
    None when no rank is to blame, e.g. the group could not be placed)."""

    def __init__(self, rank: int | None, reason: str, cause: str | None = None):
        self.rank, self.cause = rank, cause
        prefix = rank is not None and not reason.startswith("rank ")
        super().__init__(f"rank {rank}: {reason}" if prefix else reason)


@dataclass
class RaySession:
    """Whether this process called ray.init (and must disconnect, which also stops an
    embedded cluster) or reused a connection someone else made."""

    initialised_here: bool

    def close(self) -> None:
        if self.initialised_here and ray.is_initialized():
            ray.shutdown()


def connect(address: str, num_workers: int, need: RankNeeds) -> RaySession:
    """Join `address`, reuse an already initialised Ray (tests), or start an embedded
    local cluster on loopback with this machine's CPUs; whichever it is, check first
    that it can hold `num_workers` ranks of `need` (cluster.capacity), so a group that
    cannot be placed fails now, with the fix, instead of after setup_timeout_s."""
    if ray.is_initialized():
        check_cluster(need, num_workers, address)
        return RaySession(initialised_here=False)
    quiet = {"log_to_driver": True, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **quiet)
        session = RaySession(initialised_here=True)
        try:
            check_cluster(need, num_workers, address)
        except BaseException:
            session.close()
            raise
        return session
    num_cpus = check_machine(need, num_workers)  # before Ray starts
    # a private cluster on loopback: nothing else can reach it, so no token is needed
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # address="local" never attaches to another cluster running on this machine
    ray.init(address="local", num_cpus=int(num_cpus), include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
    return RaySession(initialised_here=True)


@dataclass(frozen=True, kw_only=True)
class GroupSpec:
    """A worker group: how many ranks, what Ray reserves for each, and what they run."""

    num_workers: int
    """Ranks, one RankActor each."""
    rank_spec: RankSpec
    """What every rank runs (hsp.engine.sft.SupervisedSpec or hsp.rl.step.RLRankSpec);
    shipped to the ranks once through the object store."""
    cpus_per_worker: float
    """CPUs each actor asks Ray for."""
    gpus_per_worker: float = 0.0
    """GPUs each actor asks Ray for (0 on CPU)."""
    setup_timeout_s: float
    """Placing the actors, importing torch, joining the group and building the program."""
    for_placement: Callable[[RankSpec, Placement], RankSpec] | None = None
    """The rank spec for where the ranks landed (`hsp train`: the ClusterSpec's ranks per
    node, cluster.placement.with_ranks_per_node); None: rank_spec as is."""

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        if not self.cpus_per_worker > 0 or self.gpus_per_worker < 0:
            raise ValueError(f"need cpus_per_worker > 0 and gpus_per_worker >= 0, got {self.cpus_per_worker}, {self.gpus_per_worker}")
        if not self.setup_timeout_s > 0:
            raise ValueError(f"setup_timeout_s must be > 0, got {self.setup_timeout_s}")


class WorkerGroup:
    """One RankActor per rank in a placement group, joined into one torch.distributed
    world, each running spec.rank_spec's program. Created once per run (and again only
    after a failure).

    The placement group PACKs the bundles onto as few nodes as possible (a node's ranks
    talk over its fast links); ranks are then numbered node by node from where the
    actors report they run (cluster.placement), which fixes the ranks per node the plans
    are made for."""

    def __init__(self, spec: GroupSpec):
        self.spec = spec
        n = spec.num_workers
        bundle = {"CPU": spec.cpus_per_worker, **({"GPU": spec.gpus_per_worker} if spec.gpus_per_worker else {})}
        self.pg = placement_group([dict(bundle) for _ in range(n)], strategy="PACK")
        self.actors = []
        try:
            if not _ready(self.pg.ready(), spec.setup_timeout_s):
                raise WorkerFailure(
                    None,
                    f"Ray could not place {n} workers of {bundle} within {spec.setup_timeout_s:.0f}s; "
                    f"the cluster has {ray.available_resources()} available: lower --num-workers or add nodes",
                )
            for b in range(n):
                strategy = PlacementGroupSchedulingStrategy(placement_group=self.pg, placement_group_bundle_index=b)
                options = {"num_cpus": spec.cpus_per_worker, "num_gpus": spec.gpus_per_worker, "scheduling_strategy": strategy}
                self.actors.append(RankActor.options(**options).remote())
            self.placement = self._number_ranks()
            self.rank_spec = spec.for_placement(spec.rank_spec, self.placement) if spec.for_placement else spec.rank_spec
            rendezvous = self._get([self.actors[0].rendezvous_address.remote()], spec.setup_timeout_s)[0]
            spec_ref = ray.put(self.rank_spec)
            calls = [a.setup.remote(r, n, rendezvous, spec_ref) for r, a in enumerate(self.actors)]
            self.pids = self._get(calls, spec.setup_timeout_s)
        except BaseException:
            self.shutdown()
            raise

    def _number_ranks(self) -> Placement:
        """Reorder self.actors (one per bundle) into rank order, node by node."""
        where = self._get([a.where.remote() for a in self.actors], self.spec.setup_timeout_s)
        order = rank_order([node for node, _, _ in where])
        self.actors = [self.actors[b] for b in order]
        placement = Placement(
            node_ids=tuple(where[b][0] for b in order),
            node_ips=tuple(where[b][1] for b in order),
            pids=tuple(where[b][2] for b in order),
        )
        log.info("worker group: %s", placement.describe())
        if (warning := placement.warning()) is not None:
            log.warning("%s", warning)
        return placement

    def call(self, method: str, *args) -> list:
        """Start RankActor.`method`(*args) on every rank; returns the pending refs."""
        # step arguments (a plan and indices, a step number) are a few KB: passed by value
        # they travel inline with the task, cheaper than a round trip through the object store
        return [getattr(a, method).remote(*args) for a in self.actors]

    def gather(self, refs: list, timeout_s: float) -> list:
        """Every rank's result (ordered by rank); a failed rank raises WorkerFailure."""
        return self._get(refs, timeout_s)

    def run(self, method: str, *args, timeout_s: float) -> list:
        """call + gather."""
        return self.gather(self.call(method, *args), timeout_s)

    def run_each(self, method: str, args: list[tuple], timeout_s: float) -> list:
        """RankActor.`method`(*args[r]) on every rank r, gathered."""
        return self._get([getattr(a, method).remote(*a_args) for a, a_args in zip(self.actors, args)], timeout_s)

    def shutdown(self, graceful: bool = False) -> None:
        """Kill every actor (survivors of a failure may sit in a collective) and free
        the placement group."""
        if graceful and self.actors:
            try:
                ray.get([a.shutdown.remote() for a in self.actors], timeout=10)
            except Exception as err:  # the group is going away either way
                log.debug("graceful worker shutdown failed: %s", err)
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
        remove_placement_group(self.pg)

    def _get(self, refs: list, timeout_s: float) -> list:
        """Results of `refs` (one per rank, in rank order); the first failure raises
        WorkerFailure at once, blaming the rank attribution finds."""
        rank_of = {ref: i for i, ref in enumerate(refs)}
        results: dict = {}
        pending = list(refs)
        deadline = time.monotonic() + timeout_s
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._attribute({}, [rank_of[r] for r in pending], len(refs), f" (no answer within {timeout_s:.0f}s)")
            ready, pending = ray.wait(pending, num_returns=1, timeout=remaining)
            for ref in ready:
                error = _error_of(ref, results)
                if error is not None:
                    raise self._diagnose(rank_of[ref], error, pending, rank_of)
        return [results[r] for r in refs]

    def _diagnose(self, rank: int, error: Exception, pending: list, rank_of: dict) -> Exception:
        """The failure to report: a peer's death or hang makes the survivors' collectives
        fail too, so wait briefly for the others' outcome, then let attribution decide."""
        if isinstance(error, RayTaskError) and isinstance(error.cause, ValueError):
            # bad input (an invalid plan, bad data) fails the same way on every retry:
            # stop with the rank's own message instead of rebuilding
            return error.cause
        errors = {rank: error}
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=DIAGNOSE_WAIT_S) if pending else ([], [])
        for ref in ready:
            other = _error_of(ref, {})
            if other is not None:
                errors[rank_of[ref]] = other
        busy = [rank_of[ref] for ref in pending if ref not in ready]
        return self._attribute(errors, busy, len(rank_of))

    def _attribute(self, errors: dict[int, Exception], busy: list[int], num_ranks: int, note: str = "") -> WorkerFailure:
        """WorkerFailure blaming the rank that did not arrive (cluster/attribution.py)."""
        outcomes = {r: Outcome(DONE) for r in range(num_ranks)}
        outcomes.update({r: Outcome(_kind(e), _describe(e)) for r, e in errors.items()})
        outcomes.update({r: Outcome(BUSY) for r in busy})
        answers = probe(self.actors, [r for r, o in outcomes.items() if o.kind != DIED])
        outcomes = {r: dataclasses.replace(o, progress=answers.get(r)) for r, o in outcomes.items()}
        verdict = blame(outcomes)
        failure = WorkerFailure(verdict.rank, verdict.message + note, cause=verdict.cause)
        failure.__cause__ = errors.get(verdict.rank)
        return failure


DIAGNOSE_WAIT_S = 2.0
"""How long a failure waits for the other ranks' outcome before it is reported."""


def _error_of(ref, results: dict) -> Exception | None:
    """Store ref's result in `results`, or return the error it raised."""
    try:
        results[ref] = ray.get(ref)
        return None
    except (RayActorError, RayTaskError) as err:
        return err


def _kind(error: Exception) -> str:
    from hsp.engine.rank import CollectiveError  # the driver has loaded torch by now

    if isinstance(error, RayActorError):
        return DIED
    return COLLECTIVE if isinstance(getattr(error, "cause", None), CollectiveError) else RAISED


def _describe(error: Exception) -> str:
    if isinstance(error, RayActorError):
        return f"actor died ({type(error).__name__})"
    cause = getattr(error, "cause", error)
    return f"raised {type(cause).__name__}: {str(cause).splitlines()[0][:300] if str(cause) else ''}"


def _ready(ref, timeout_s: float) -> bool:
    try:
        ray.get(ref, timeout=timeout_s)
        return True
    except GetTimeoutError:
        return False


# ---- `hsp rl --num-workers N`: the RL program on a WorkerGroup ----------------------

RL_SETUP_TIMEOUT_S = 300.0
"""Placing the RL actors, importing torch, joining the group and building the task splits."""
RL_STEP_TIMEOUT_S = 3600.0
"""One RL step or evaluation on every rank; a rank that takes longer fails the run."""


class RayPolicy:
    """hsp.rl.trainer's Policy on Ray ranks: every call runs on all ranks; the reduced
    results are the same on each, rank 0's is returned."""

    def __init__(self, group: WorkerGroup, session: RaySession | None = None):
        self.group, self.session = group, session

    def step(self, step: int) -> dict:
        return self.group.run("step", step, timeout_s=RL_STEP_TIMEOUT_S)[0].value

    def evaluate(self) -> dict:
        return self.group.run("evaluate", timeout_s=RL_STEP_TIMEOUT_S)[0]

    def close(self) -> None:
        try:
            self.group.shutdown(graceful=True)
        finally:
            if self.session is not None:
                self.session.close()


def parallel_factory(address: str, cpus_per_worker: float):
    """make_parallel for hsp.rl.trainer.train: joins `address` (or starts an embedded
    local Ray) when the RL steps begin, and disconnects when they end."""

    def make(rank_spec: RLRankSpec) -> RayPolicy:
        num_workers = rank_spec.config.num_workers
        session = connect(address, num_workers, RankNeeds.of(cpus_per_worker, 0.0, 0))
        try:
            spec = GroupSpec(num_workers=num_workers, rank_spec=rank_spec, cpus_per_worker=cpus_per_worker,
                             setup_timeout_s=RL_SETUP_TIMEOUT_S)
            return RayPolicy(WorkerGroup(spec), session)
        except BaseException:
            session.close()
            raise

    return make
