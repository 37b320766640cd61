"""A rank's progress through its collective sections, readable from another thread.

Every program enters its collectives through `Rank.collectives(where)`, the same sections
in the same order on every rank of a step (one per micro-batch, then the gradient
all-reduce). So when a collective times out, the rank that did not arrive is the one
whose counter is behind, or the one that cannot answer at all: a rank waiting inside a
collective releases the GIL (torch's collectives do), so a second thread of its process
still reads this counter, while a stopped or wedged process answers nothing. The Ray
actor serves `snapshot()` from its own concurrency group (cluster/actors.py).
"""

from __future__ import annotations

import threading
import time


class Progress:
    """Collective sections entered and left; `snapshot` is safe from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entered = 0
        self._left = 0
        self._where = ""
        self._since = time.time()

    def enter(self, where: str) -> None:
        with self._lock:
            self._entered += 1
            self._where, self._since = where, time.time()

    def leave(self) -> None:
        """A section ended, normally or with an error."""
        with self._lock:
            self._left += 1
            self._since = time.time()

    def snapshot(self) -> dict:
        """Plain values: sections entered and left, the latest one's name, whether the
        rank is inside it and since when (Unix seconds)."""
        with self._lock:
            return {
                "entered": self._entered,
                "left": self._left,
                "inside": self._entered > self._left,
                "where": self._where,
                "since_s": self._since,
            }
