"""Configuration of an `hsp rl` run (SFT warm-up + RL on a verifiable-reward task)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from hsp.model.config import ModelConfig
from hsp.rl.names import ALGOS, ELBO_FORMS, TASK_NAMES

ADVANTAGE_CONTROLS = ("none", "shuffle")


_SAMPLER_DEFAULTS = {"sample_steps": "the task's default_sample_steps", "block_length": "the whole response"}


@dataclass(kw_only=True)
class RLConfig:
    task: str = field(default="sudoku4", metadata={"choices": TASK_NAMES})
    """Task name: sudoku4, addition or countdown."""
    algo: str = field(default="bgpo", metadata={"choices": ALGOS})
    """Policy objective: bgpo, full-elbo (VRPO-OL-style ELBO ratio) or diffu-grpo."""
    mc_samples: int | None = None
    """n_t: Monte Carlo ELBO samples per response; unset = 4, or 1 for diffu-grpo (which needs 1)."""
    group_size: int = 8
    """G: responses sampled per prompt (advantages are relative within a group)."""
    prompts_per_step: int = 64
    """Prompts per RL step; a step has prompts_per_step * group_size responses."""
    steps: int = 100
    """RL steps (batches of rollouts)."""
    inner_steps: int = 1
    """Optimizer updates per batch of rollouts (> 1 makes later updates off-policy)."""
    lr: float = 3e-4
    """RL learning rate (AdamW); 1e-3 drifts every estimator down (issue 13's measurements)."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip of every RL and SFT update."""
    sft_steps: int = 200
    """Most SFT warm-up steps (ignored with sft_checkpoint)."""
    sft_stop_accuracy: float = 0.45
    """SFT stops at the first check (every sft_check_every steps) whose greedy accuracy on
    the fixed training prompts reaches this: a weak start leaves RL headroom (a 0.95 start
    has none). 1.0 = never stop early."""
    sft_check_every: int = 25
    """SFT steps between those checks."""
    sft_batch_size: int = 64
    """Sequences per SFT step."""
    sft_lr: float = 2e-3
    """SFT learning rate (AdamW, cosine decay to 10%)."""
    sft_checkpoint: str | None = None
    """Load SFT weights from this file instead of warming up (written by a previous run)."""
    train_items: int = 2000
    """Training-split items (SFT data and RL prompts)."""
    test_items: int = 520
    """Test-split items (disjoint seeds; overlapping prompts are dropped)."""
    sample_steps: int | None = None
    """Denoising steps of the sampler; None = the task's default: one token per step for
    addition and countdown, 8 (two cells per step) for sudoku4 (hsp.rl.tasks)."""
    block_length: int | None = None
    """Sampler block length; None = the whole response is one block."""
    temperature: float = 1.0
    """Rollout sampling temperature (evaluation is greedy)."""
    elbo_form: str = field(default="discrete", metadata={"choices": ELBO_FORMS})
    """ELBO estimator: discrete (mask exactly l of L, weight L/l) or continuous (t ~ U, 1/t)."""
    min_t: float = 1e-3
    """Lower end of t for the continuous form and for SFT masking."""
    clip_eps: float = 0.2
    """PPO clip range of diffu-grpo's token ratios."""
    prompt_mask_prob: float = 0.15
    """diffu-grpo: probability that each prompt token is masked in its one-step
    log-likelihood (d1's random prompt masking, 0.15 there); 0 = the prompt is never masked."""
    kl_coef: float = 0.05
    """Coefficient of the KL penalty to the frozen SFT policy (k3 estimate per
    (response, MC sample) unit on the unit's masks; 0 = no penalty, no reference model)."""
    advantage_control: str = field(default="none", metadata={"choices": ADVANTAGE_CONTROLS})
    """none, or shuffle: permute the advantages within each group (same update size, no
    reward signal) -- the control a learning claim must beat."""
    act_budget_bytes: int = 64 * 2**20
    """Saved-for-backward bytes a chunk of units may hold (see hsp.accumulate)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Shape of the diffusion LM; vocab_size, max_seq_len, bidirectional and init_seed are
    set from the task and `seed` (see hsp.rl.trainer.build_model)."""
    seed: int = 0
    """Seed of the data split, init, SFT and RL randomness."""
    eval_every: int = 25
    """Evaluate test accuracy every this many RL steps (0 = only before and after RL)."""
    num_threads: int = 1
    """torch intra-op threads (per rank when num_workers > 1). 1: on the shared 2-core
    machine two threads made a 128x4-unit BGPO update 12x slower (5.6 s vs 0.44 s)."""
    num_workers: int = 0
    """Data-parallel ranks (Ray actors) of the RL steps; 0 or 1 = this process only.
    Each rank rolls out its share of a step's prompts; the update equals the one-process
    update on all of them."""

    def __post_init__(self) -> None:
        if self.mc_samples is None:
            self.mc_samples = 1 if self.algo == "diffu-grpo" else 4
        if self.task not in TASK_NAMES:
            raise ValueError(f"task must be one of {TASK_NAMES}, got {self.task!r}")
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        if self.elbo_form not in ELBO_FORMS:
            raise ValueError(f"elbo_form must be one of {ELBO_FORMS}, got {self.elbo_form!r}")
        if self.algo == "diffu-grpo" and self.mc_samples != 1:
            raise ValueError(f"diffu-grpo estimates log-likelihoods with one sample; got mc_samples={self.mc_samples}, pass --mc-samples 1")
        if self.group_size < 2:
            raise ValueError(f"group_size={self.group_size}: group-relative advantages need at least 2 responses per prompt")
        for name in ("mc_samples", "prompts_per_step", "inner_steps", "train_items", "test_items", "act_budget_bytes", "num_threads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.num_workers > 1 and self.prompts_per_step < self.num_workers:
            raise ValueError(f"prompts_per_step={self.prompts_per_step} < num_workers={self.num_workers}: every rank needs at least one "
                             f"prompt per step; raise --prompts-per-step to >= {self.num_workers} or lower --num-workers")
        if not 0 < self.sft_stop_accuracy <= 1:
            raise ValueError(f"sft_stop_accuracy={self.sft_stop_accuracy} must be in (0, 1]; 1.0 = run all sft_steps")
        for name in ("steps", "sft_steps", "eval_every", "num_workers", "sft_check_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        self._check_sampler_and_ranges()

    def _check_sampler_and_ranges(self) -> None:
        for name in ("sample_steps", "block_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value} must be >= 1, or left unset for the default ({_SAMPLER_DEFAULTS[name]})")
        if not 0 < self.min_t < 1:
            raise ValueError(f"min_t={self.min_t} must be in (0, 1): it is the smallest masking fraction t; e.g. --min-t 0.001")
        if not self.clip_eps > 0:
            raise ValueError(f"clip_eps={self.clip_eps} must be > 0: the PPO ratio is clipped to [1 - eps, 1 + eps]; e.g. --clip-eps 0.2")
        if not 0 <= self.prompt_mask_prob < 1:
            raise ValueError(f"prompt_mask_prob={self.prompt_mask_prob} must be in [0, 1): it is the chance a prompt token is masked; e.g. --prompt-mask-prob 0.15")
        for name in ("lr", "sft_lr", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef={self.kl_coef} must be >= 0 (0 = no KL penalty); e.g. --kl-coef 0.05")
        if self.advantage_control not in ADVANTAGE_CONTROLS:
            raise ValueError(f"advantage_control must be one of {ADVANTAGE_CONTROLS}, got {self.advantage_control!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 = greedy rollouts)")

    def to_dict(self) -> dict:
        return asdict(self)
