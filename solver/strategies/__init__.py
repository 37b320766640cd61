"""Planning strategies behind `solver.planner.plan`; each maps a `Problem` to a
`StrategyResult`. The registry of names is `solver.strategies.registry.STRATEGIES`
(also exported as `solver.STRATEGIES`)."""
