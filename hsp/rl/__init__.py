"""BGPO: memory-efficient RL for masked-diffusion LMs (arXiv 2510.11683).

- `tasks`: verifiable-reward tasks (4x4 Sudoku, addition) with train/test splits.
- `diffusion`: the masked-diffusion LM (the bidirectional decoder), its SFT loss.
- `sampler`: LLaDA low-confidence remasking with blocks.
- `elbo`, `losses`: the ELBO estimator and the objectives, as pure tensor functions.
- `update`: one policy update under an activation budget (hsp.accumulate).
- `warmup`: task splits, the model, its SFT warm-up (driver side).
- `rollout`: the one rollout function (any number of ranks) and the greedy evaluation.
- `step`: the RL step on the rank runtime (hsp.engine.rank): `rl_step`, `RLRankSpec`, `RLProgram`.
- `trainer`, `config`: `hsp rl` end to end.
"""
