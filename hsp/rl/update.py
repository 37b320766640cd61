"""One policy update on a batch of rollouts, under an activation-memory budget.

Work is split into *units* and handed to the shared `hsp.accumulate.accumulate_backward`,
which packs units into chunks whose estimated saved-for-backward bytes fit the budget
and backwards each chunk before building the next:

- ``bgpo``: a unit is one (response, MC sample); BGPO's bound is a sum of per-unit
  terms, so any chunking gives the same gradient and memory does not grow with n_t.
- ``full-elbo``: a unit is one response with *all* its n_t samples, because
  exp(mean_j d_j) couples them; a unit needs n_t times the bytes of one sample.
- ``diffu-grpo``: a unit is one response, one forward pass with the response masked.

The likelihood is that of the sampling policy: token log-probs use softmax(logits / T)
with the rollout temperature T (T = 0, greedy rollouts, uses T = 1; see
hsp.rl.elbo.likelihood_temperature), so the first pass is exactly on-policy for any T.

With a reference policy and kl_coef > 0, each unit's loss also gets kl_coef times its
share of a KL(pi_theta || pi_ref) estimate on the unit's *own* masks: per masked token
the k3 estimator exp(r) - r - 1, r = log pi_ref - log pi_theta (>= 0, unbiased for the
token KL under pi_theta's samples), weighted like the ELBO term (w / n_t). The
reference's log-probs are computed under no_grad, so they save nothing for backward and
BGPO's memory stays flat in n_t.

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
from hsp.rl.elbo import likelihood_temperature, sample_masks, token_logprobs
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
        temperature: float = 1.0,
        reference: DiffusionLM | None = None,
        kl_coef: float = 0.0,
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
        if kl_coef < 0 or (kl_coef > 0 and reference is None):
            raise ValueError(f"kl_coef={kl_coef} needs kl_coef >= 0, and a reference policy when > 0")
        self.temperature = likelihood_temperature(temperature)
        self.reference, self.kl_coef = (reference, kl_coef) if kl_coef > 0 else (None, 0.0)
        self.entropy_sum, self.entropy_tokens, self.kl_sum = 0.0, 0, 0.0
        """Diagnostics of the first pass: predictive entropy (nats) summed over the masked
        tokens scored, their count, and the KL estimate summed over passes (per response, before kl_coef)."""
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
    def _token_logprobs(self, model: DiffusionLM, rows: list[int], cols: list[int]) -> torch.Tensor:
        """(K, L) log-probs at the rollout temperature of the response tokens of
        (response rows[k], sample cols[k]) under that sample's masks."""
        prompts = self.r.prompts[rows]
        prompts = torch.where(self.prompt_masks[rows], torch.full_like(prompts, model.mask_id), prompts)
        responses, masks = self.r.responses[rows], self.masks[rows, cols]
        logits = model.response_logits(prompts, responses, masks)  # (K, L, V)
        return token_logprobs(logits, responses, self.temperature), logits

    def _record_entropy(self, logits: torch.Tensor, masks: torch.Tensor) -> None:
        """Adds the masked positions' entropy of softmax(logits / T) (detached) to the
        first pass's diagnostics; an entropy collapse shows why groups stop differing."""
        if torch.isnan(self.old).any():
            with torch.no_grad():
                logp = torch.log_softmax(logits.detach() / self.temperature, dim=-1)
                ent = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)  # (K, L); the -inf mask logit gives 0 * -inf
                self.entropy_sum += float((ent * masks).sum())
                self.entropy_tokens += int(masks.sum())
    def _sample_terms(self, rows: list[int], cols: list[int]) -> torch.Tensor:
        """(K,) ELBO terms l_theta for (response rows[k], sample cols[k]); (K, L) token
        log-probs for diffu-grpo."""
        return self._terms_and_kl(rows, cols)[0]

    def _terms_and_kl(self, rows: list[int], cols: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """_sample_terms' values and each unit's KL estimate ((K,), None without a
        reference): ELBO-weighted sums over masked tokens / n_t, or for diffu-grpo the
        mean over the response's tokens."""
        logp, logits = self._token_logprobs(self.model, rows, cols)  # (K, L)
        masks = self.masks[rows, cols]
        self._record_entropy(logits, masks)
        weights = self.weights[rows, cols].to(logp.dtype)
        terms = logp if self.algo == "diffu-grpo" else weights * (logp * masks).sum(dim=-1)
        if self.reference is None:
            return terms, None
        with torch.no_grad():
            ref = self._token_logprobs(self.reference, rows, cols)[0].to(logp.dtype)
        r = ref - logp
        k3 = torch.exp(r) - r - 1.0  # (K, L)
        if self.algo == "diffu-grpo":
            return terms, k3.mean(dim=-1)
        return terms, weights * (k3 * masks).sum(dim=-1) / self.num_samples

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
            terms, kl = self._terms_and_kl(rows, cols)  # (K,)
            d = terms - self._old(terms, rows, cols)
            loss = -losses.bgpo_terms(d, adv[rows].to(d.dtype), self.num_samples).sum() / n
        else:
            rows = list(units)
            if self.algo == "full-elbo":
                k, m = len(rows), self.num_samples
                flat_rows = [i for i in rows for _ in range(m)]
                flat_cols = [j for _ in rows for j in range(m)]
                terms, kl = self._terms_and_kl(flat_rows, flat_cols)
                terms = terms.view(k, m)  # (K*n_t,) -> (K, n_t)
                d = terms - self._old(terms, rows, None)
                loss = losses.full_elbo_loss(d, adv[rows].to(d.dtype), num_responses=n)
            else:
                logp, kl = self._terms_and_kl(rows, [0] * len(rows))  # (K, L)
                loss = losses.diffu_grpo_loss(logp, self._old(logp, rows, None), adv[rows].to(logp.dtype), self.clip_eps, num_responses=n)
        if kl is None:
            return loss
        self.kl_sum += float(kl.detach().sum()) / n
        return loss + self.kl_coef * kl.sum() / n

    def backward(self, budget_bytes: int, sample_bytes: int) -> float:
        """Accumulate this batch's gradient into .grad; returns the loss value."""
        units = self.units()
        return accumulate_backward(units, self.unit_bytes(sample_bytes), budget_bytes, self.loss)
