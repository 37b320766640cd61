"""One policy update on a batch of rollouts, under an activation-memory budget.

Work is split into *units* and handed to the shared `hsp.accumulate.accumulate_backward`,
which packs units into chunks whose estimated saved-for-backward bytes fit the budget
and backwards each chunk before building the next:

- ``bgpo``: a unit is one (response, MC sample); BGPO's bound is a sum of per-unit
  terms, so any chunking gives the same gradient and memory does not grow with n_t.
- ``full-elbo``: a unit is one response with *all* its n_t samples, because
  exp(mean_j d_j) couples them; a unit needs n_t times the bytes of one sample.
- ``diffu-grpo``: a unit is one response, one forward pass with the response masked.

The rollout policy's terms (l_old) are not recomputed: the first pass over a batch runs
with the rollout parameters, so its detached values *are* l_old (d = 0 exactly, the
gradient is the on-policy one); later inner passes reuse them on the same masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hsp.accumulate import accumulate_backward
from hsp.rl import losses
from hsp.rl.diffusion import DiffusionLM
from hsp.rl.elbo import elbo_terms, sample_masks
from hsp.engine.memory import measure_saved_bytes
from hsp.rl.names import ALGOS



@dataclass(frozen=True)
class Rollouts:
    prompts: torch.Tensor
    """(N, Lp) prompt ids, each prompt repeated group_size times consecutively."""
    responses: torch.Tensor
    """(N, L) sampled response ids."""
    advantages: torch.Tensor
    """(N,) group-relative advantages."""


class PolicyUpdate:
    """Masks drawn once per batch of rollouts; `backward` may run several inner passes."""

    def __init__(
        self,
        model: DiffusionLM,
        algo: str,
        rollouts: Rollouts,
        *,
        num_samples: int,
        elbo_form: str,
        generator: torch.Generator,
        min_t: float = 1e-3,
        clip_eps: float = 0.2,
        prompt_mask_prob: float = 0.15,
        global_rows: tuple[int, int] | None = None,
    ):
        """global_rows=(first, total): `rollouts` are rows [first, first + N) of a step
        batch of `total` rows split over data-parallel ranks. Masks are drawn for all
        `total` rows (every rank passes an identically seeded generator, so all draw the
        same ones) and sliced, and losses are normalised by `total`: the ranks' gradients
        then sum to the whole batch's. None = this is the whole batch."""
        if algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
        if algo == "diffu-grpo" and num_samples != 1:
            raise ValueError(f"diffu-grpo uses one sample per response, got num_samples={num_samples}; pass 1")
        self.model, self.algo, self.r = model, algo, rollouts
        self.num_samples, self.clip_eps = num_samples, clip_eps
        n, length = rollouts.responses.shape
        first, total = global_rows if global_rows is not None else (0, n)
        if first < 0 or first + n > total:
            raise ValueError(f"global_rows={global_rows}: rows [{first}, {first + n}) do not fit in a batch of {total} rows")
        self.total_rows = total
        mine = slice(first, first + n)
        if algo == "diffu-grpo":
            # d1: the whole response masked, prompt tokens masked w.p. prompt_mask_prob
            self.masks = torch.ones(n, 1, length, dtype=torch.bool)
            self.weights = torch.ones(n, 1, dtype=torch.float64)
            prompt_shape = (total, rollouts.prompts.shape[1])
            self.prompt_masks = (torch.rand(prompt_shape, generator=generator) < prompt_mask_prob)[mine]
            self.old = torch.full((n, length), float("nan"), dtype=torch.float64)
        else:
            draws = [sample_masks(num_samples, length, elbo_form, generator, min_t) for _ in range(total)][mine]
            self.masks = torch.stack([m for m, _ in draws])  # (N, n_t, L)
            self.weights = torch.stack([w for _, w in draws])  # (N, n_t)
            self.prompt_masks = torch.zeros(rollouts.prompts.shape, dtype=torch.bool)
            self.old = torch.full((n, num_samples), float("nan"), dtype=torch.float64)

    # ---------------------------------------------------------------- units
    def units(self) -> list[tuple[int, int]] | list[int]:
        n = self.r.responses.shape[0]
        if self.algo == "bgpo":
            return [(i, j) for i in range(n) for j in range(self.num_samples)]
        return list(range(n))

    def unit_bytes(self, sample_bytes: int) -> list[int]:
        per_unit = sample_bytes * (self.num_samples if self.algo == "full-elbo" else 1)
        return [per_unit] * len(self.units())

    def sample_bytes(self) -> int:
        """Measured saved-for-backward bytes of one (response, sample) unit's loss."""
        return measure_saved_bytes(lambda: self._sample_terms([0], [0]).sum(), self.model.parameters())

    # ------------------------------------------------------------- forward
    def _sample_terms(self, rows: list[int], cols: list[int]) -> torch.Tensor:
        """(K,) ELBO terms l_theta for (response rows[k], sample cols[k]); (K, L) token
        log-probs for diffu-grpo."""
        prompts = self.r.prompts[rows]
        prompts = torch.where(self.prompt_masks[rows], torch.full_like(prompts, self.model.mask_id), prompts)
        responses, masks = self.r.responses[rows], self.masks[rows, cols]
        logits = self.model.response_logits(prompts, responses, masks)  # (K, L, V)
        if self.algo == "diffu-grpo":
            return torch.log_softmax(logits, -1).gather(-1, responses[..., None]).squeeze(-1)
        return elbo_terms(logits, responses, masks, self.weights[rows, cols])

    def _old(self, values: torch.Tensor, rows: list[int], cols: list[int] | None) -> torch.Tensor:
        """The rollout policy's values (detached), recorded on the first pass.
        cols=None: whole rows of `old` ((K, n_t) for full-elbo, (K, L) for diffu-grpo)."""
        old = self.old[rows, cols] if cols is not None else self.old[rows]
        if torch.isnan(old).any():
            old = values.detach().to(self.old.dtype)
            if cols is not None:
                self.old[rows, cols] = old
            else:
                self.old[rows] = old
        return old.to(values.dtype)

    def loss(self, units: list) -> torch.Tensor:
        """Loss of a chunk of units, weighted so that chunk losses sum to the batch loss."""
        n, adv = self.total_rows, self.r.advantages
        if self.algo == "bgpo":
            rows, cols = [u[0] for u in units], [u[1] for u in units]
            terms = self._sample_terms(rows, cols)  # (K,)
            d = terms - self._old(terms, rows, cols)
            return -losses.bgpo_terms(d, adv[rows].to(d.dtype), self.num_samples).sum() / n
        rows = list(units)
        if self.algo == "full-elbo":
            k, m = len(rows), self.num_samples
            flat_rows = [i for i in rows for _ in range(m)]
            flat_cols = [j for _ in rows for j in range(m)]
            terms = self._sample_terms(flat_rows, flat_cols).view(k, m)  # (K*n_t,) -> (K, n_t)
            d = terms - self._old(terms, rows, None)
            return losses.full_elbo_loss(d, adv[rows].to(d.dtype), num_responses=n)
        logp = self._sample_terms(rows, [0] * len(rows))  # (K, L)
        return losses.diffu_grpo_loss(logp, self._old(logp, rows, None), adv[rows].to(logp.dtype), self.clip_eps, num_responses=n)

    def backward(self, budget_bytes: int, sample_bytes: int) -> float:
        """Accumulate this batch's gradient into .grad; returns the loss value."""
        units = self.units()
        return accumulate_backward(units, self.unit_bytes(sample_bytes), budget_bytes, self.loss)
