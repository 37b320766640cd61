"""PuLP's HiGHS interface with a working warm start and a silent first start.

pulp 3.3's `pulp.HiGHS` (the highspy interface) accepts `warmStart=True` but never uses
it: the flag lands in `optionsDict` and is forwarded to HiGHS as an unknown option
(HiGHS logs a warning and ignores it); only the command-line `HIGHS_CMD` writes a start
file. `WarmHiGHS` drops the flag and hands the variables' initial values (set with
`LpVariable.setInitialValue`) to `Highs.setSolution` before `run()`.

highspy also prints its banner on stdout the first time a `Highs` object is created in
a process, before any option can turn output off; `silence_banner` creates that first
object with stdout redirected at the file-descriptor level, so `hsp plan --json` output
stays clean.
"""

from __future__ import annotations

import os
import sys
import threading

import pulp

_banner_lock = threading.Lock()
_banner_done = False


def silence_banner() -> None:
    global _banner_done
    with _banner_lock:
        if _banner_done:
            return
        import highspy

        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 1)
                highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        _banner_done = True


class WarmHiGHS(pulp.HiGHS):
    """`pulp.HiGHS` whose `warmStart=True` really starts from the initial values."""

    def __init__(self, *, warmStart: bool = False, **kwargs):
        silence_banner()
        super().__init__(**kwargs)
        self.warm_start = warmStart

    def callSolver(self, lp):
        if self.warm_start:
            import highspy

            variables = lp.variables()
            if all(v.varValue is not None for v in variables):
                values = [0.0] * len(variables)
                for var in variables:
                    values[var.index] = float(var.varValue)
                start = highspy.HighsSolution()
                start.col_value = values  # a whole list: the property hands out copies
                start.value_valid = True
                lp.solverModel.setSolution(start)
        lp.solverModel.run()
