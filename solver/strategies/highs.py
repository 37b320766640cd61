"""PuLP's HiGHS interface, made fit for millisecond LPs and warm-started MILPs.

- Bulk model hand-over: pulp 3.3's `pulp.HiGHS` adds every column and row to HiGHS with
  one Python call each; `BulkHiGHS` builds the constraint matrix as arrays and passes
  the whole model with one `passModel`, which is most of the solve time of a small LP.
- Warm start: `pulp.HiGHS(warmStart=True)` never uses the start (the flag is forwarded to
  HiGHS as an unknown option, which HiGHS ignores); with `warm_start=True` the
  variables' initial values (`LpVariable.setInitialValue`) go to `Highs.setSolution`
  before `run()`.
- Silence: highspy prints its banner on stdout the first time a `Highs` object is
  created in a process, before any option can turn output off; `silence_banner` creates
  that first object with stdout redirected at the file-descriptor level, so
  `hsp plan --json` output stays clean.
- One thread by default: plans are made next to a training step, and solve times are
  reported for one core.
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
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


class BulkHiGHS(pulp.HiGHS):
    """`pulp.HiGHS` with a one-call model hand-over, a working warm start and 1 thread."""

    def __init__(self, *, warm_start: bool = False, threads: int = 1, **kwargs):
        silence_banner()
        super().__init__(msg=False, threads=threads, **kwargs)
        self.warm_start = warm_start

    def buildSolverModel(self, lp) -> None:
        import highspy

        inf = highspy.kHighsInf
        variables = lp.variables()
        for i, var in enumerate(variables):
            var.index = i
        sign = -1.0 if lp.sense == pulp.LpMaximize else 1.0
        model = highspy.HighsLp()
        model.num_col_ = len(variables)
        model.col_cost_ = np.array([sign * lp.objective.get(v, 0.0) for v in variables], dtype=np.float64)
        model.col_lower_ = np.array([-inf if v.lowBound is None else v.lowBound for v in variables], dtype=np.float64)
        model.col_upper_ = np.array([inf if v.upBound is None else v.upBound for v in variables], dtype=np.float64)
        starts, index, value, lower, upper = [0], [], [], [], []
        for i, con in enumerate(lp._constraints.values()):
            for var, coef in con.items():
                index.append(var.index)
                value.append(coef)
            starts.append(len(index))
            lb, ub = con.getLb(), con.getUb()
            lower.append(-inf if lb is None else lb)
            upper.append(inf if ub is None else ub)
            con.index = i
        model.num_row_ = len(lower)
        model.row_lower_ = np.array(lower, dtype=np.float64)
        model.row_upper_ = np.array(upper, dtype=np.float64)
        model.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        model.a_matrix_.start_ = np.array(starts, dtype=np.int32)
        model.a_matrix_.index_ = np.array(index, dtype=np.int32)
        model.a_matrix_.value_ = np.array(value, dtype=np.float64)
        if self.mip and any(v.cat == pulp.LpInteger for v in variables):
            model.integrality_ = [
                highspy.HighsVarType.kInteger if v.cat == pulp.LpInteger else highspy.HighsVarType.kContinuous
                for v in variables
            ]
        lp.solverModel.passModel(model)

    def callSolver(self, lp) -> None:
        if self.warm_start:
            import highspy

            variables = lp.variables()
            if all(v.varValue is not None for v in variables):
                start = highspy.HighsSolution()
                start.col_value = [float(v.varValue) for v in variables]  # a whole list: the property copies
                start.value_valid = True
                lp.solverModel.setSolution(start)
        lp.solverModel.run()
