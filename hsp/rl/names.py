"""Names shared by the RL config and its implementation; torch-free so `hsp --help` stays fast."""

ALGOS = ("bgpo", "full-elbo", "diffu-grpo")
ELBO_FORMS = ("discrete", "continuous")
TASK_NAMES = ("sudoku4", "addition", "countdown")
