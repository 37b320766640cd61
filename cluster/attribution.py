"""Which rank a worker failure is blamed on.

A stopped or wedged rank makes its healthy peers' collectives time out: the peers raise,
the culprit says nothing. So the rank that raised first is not the answer. When a group
call fails, the driver knows each rank's outcome (died, raised, failed in a collective,
or still busy) and probes the ranks still alive for their collective progress
(hsp/engine/progress.py, served by the actor from a second thread). Blame, in order:

1. died       the actor process is gone (SIGKILL, OOM kill, node lost);
2. raised     an error that is not a collective failure (a bug, a bad batch);
3. hung       busy, and no answer to the progress probe: the process is stopped
              (SIGSTOP) or wedged holding the GIL;
4. behind     busy and answering, but fewer collective sections entered than the
              furthest rank (or, at the same count, still inside the section the
              others failed in): the rank the others waited for;
5. collective every rank failed in a collective at the same point (a network fault);
6. timeout    every rank busy at the same section: the step is slower than the timeout.

Lower rank breaks ties; the message lists every rank's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

PROBE_TIMEOUT_S = 5.0
"""How long a progress probe may take: a healthy rank answers in milliseconds, even
while its step blocks in a collective."""

DIED, RAISED, COLLECTIVE, BUSY, DONE = "died", "raised", "collective", "busy", "done"
"""Outcomes of one rank's call (BUSY: no result yet, DONE: returned normally)."""
CAUSES = (DIED, RAISED, "hung", "behind", COLLECTIVE, "timeout")
"""Why a rank is blamed; the `cause` label of hsp_worker_failures_total."""


@dataclass(frozen=True)
class Outcome:
    """What one rank's call came to when the failure was diagnosed."""

    kind: str
    """DIED, RAISED, COLLECTIVE, BUSY or DONE."""
    detail: str = ""
    """The error, one line (empty while busy)."""
    progress: dict | None = None
    """The rank's answer to the progress probe (hsp.engine.progress.Progress.snapshot);
    None when it did not answer or was not asked."""


@dataclass(frozen=True)
class Blame:
    rank: int
    cause: str
    """One of CAUSES."""
    message: str
    """The culprit and why, then every rank's outcome."""


def blame(outcomes: dict[int, Outcome], *, probe_timeout_s: float = PROBE_TIMEOUT_S) -> Blame:
    """The rank to blame among `outcomes` (rank -> Outcome), see the module docstring."""
    ranks = sorted(outcomes)
    by_kind = {kind: [r for r in ranks if outcomes[r].kind == kind] for kind in (DIED, RAISED, COLLECTIVE, BUSY)}
    busy = by_kind[BUSY]
    silent = [r for r in busy if outcomes[r].progress is None]
    answered = {r: o.progress["entered"] for r, o in outcomes.items() if o.progress is not None}
    if by_kind[DIED]:
        rank, cause, why = by_kind[DIED][0], DIED, "died (its actor process is gone)"
    elif by_kind[RAISED]:
        rank, cause, why = by_kind[RAISED][0], RAISED, "raised an error"
    elif silent:
        rank, cause = silent[0], "hung"
        why = (f"is hung: it did not answer a progress probe within {probe_timeout_s:g}s "
               "(a stopped or wedged process)")
    elif busy and (by_kind[COLLECTIVE] or _spread(answered)):
        rank, cause = _furthest_behind(busy, answered), "behind"
        furthest = max(answered.values())
        why = (f"did not arrive: it entered {answered[rank]} collective section(s), the furthest rank {furthest}"
               if answered[rank] < furthest else "did not arrive: it is still busy in the section the others failed in")
    elif by_kind[COLLECTIVE]:
        rank, cause, why = by_kind[COLLECTIVE][0], COLLECTIVE, "failed in a collective, as every rank did"
    else:
        rank, cause, why = busy[0], "timeout", "and every other rank are still busy at the same collective section"
    parts = [f"rank {r}: {_describe(outcomes[r])}" for r in ranks]
    return Blame(rank, cause, f"rank {rank} {why}; " + "; ".join(parts))


def _spread(entered: dict[int, int]) -> bool:
    return len(set(entered.values())) > 1


def _furthest_behind(busy: list[int], entered: dict[int, int]) -> int:
    """The busy rank with the fewest sections entered (lowest rank on a tie)."""
    return min(busy, key=lambda r: (entered[r], r))


def _describe(outcome: Outcome) -> str:
    if outcome.kind != BUSY:
        return outcome.detail or outcome.kind
    p = outcome.progress
    if p is None:
        return "busy, no answer to the progress probe"
    state = f"inside {p['where']}" if p["inside"] else f"between sections (last: {p['where'] or 'none yet'})"
    return f"busy, {p['entered']} section(s) entered, {state}"


def probe(actors: list, ranks: list[int], timeout_s: float = PROBE_TIMEOUT_S) -> dict[int, dict | None]:
    """Each rank's progress snapshot, None where no answer came within `timeout_s`."""
    import ray

    refs = {r: actors[r].progress.remote() for r in ranks}
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
    answers: dict[int, dict | None] = {}
    for r, ref in refs.items():
        try:
            answers[r] = ray.get(ref) if ref in ready else None
        except ray.exceptions.RayError:
            answers[r] = None
    return answers
