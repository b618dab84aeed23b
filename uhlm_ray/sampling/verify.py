"""Speculative verification of one draft token (U-HLM paper, Step 2 and eq. 2).

Terminology (as vLLM's spec-decode metrics use it):

- *draft*: the token d the SLM sampled from its distribution x.
- *accepted*: the LLM keeps the draft, immediately (x_d <= y_d) or probabilistically (with probability y_d / x_d).
- *recovered* (the paper's "resampled"): the draft was rejected and the LLM drew the target token
  d* ~ norm(max(y - x, 0)) instead (eq. 2).
- *rejection probability* beta = max(1 - y_d / x_d, 0): the chance that a sent draft is replaced.

With these rules the response token is distributed exactly as y, whatever x is (Leviathan et al., 2023).
All arithmetic is float32, whatever dtype the models use (torch's CPU cumsum accumulates float32 in double, so the
inverse-CDF table is exact up to its final rounding).
Randomness enters only through explicit uniforms in [0, 1), so callers decide how draws are keyed and seeded. The
accept test compares them in float64, so a uniform stays strictly below 1 and a draft with x_d <= y_d is always kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uhlm_ray.validation import check_distribution


@dataclass(frozen=True)
class Verdict:
    """Outcome of verifying a batch of drafts; every tensor has shape [B]."""

    token: torch.Tensor  # int64: the response token r(t)
    accepted: torch.Tensor  # bool: the draft was kept
    recovered: torch.Tensor  # bool: the draft was rejected and the token resampled from eq. 2
    beta: torch.Tensor  # float32: rejection probability max(1 - y_d / x_d, 0)


def sample_inverse_cdf(*, probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Draw one token per row of `probs` [B, V] (need not be normalised) from uniforms [B] in [0, 1).

    Returns int64 [B]. A token of zero probability is never drawn.
    """
    cdf = torch.cumsum(probs.float(), dim=-1)  # [B, V]
    target = (uniform.float() * cdf[:, -1]).unsqueeze(-1)  # [B, 1]
    # right=True: the first index whose cdf exceeds the target, which skips zero-probability tokens
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)  # [B]
    # A uniform just below 1 can round up to 1.0 in float32 (about 3e-8 of draws), and the target then reaches
    # the total: the limit of the inverse CDF there is the last token of positive probability, not the last id.
    over = index >= probs.shape[-1]  # [B]
    if bool(over.any()):
        positive = probs[over] > 0  # [R, V]
        index[over] = probs.shape[-1] - 1 - positive.flip(-1).int().argmax(dim=-1)
    return index


def rejection_probability(*, x_d: torch.Tensor, y_d: torch.Tensor) -> torch.Tensor:
    """beta = max(1 - y_d / x_d, 0), the paper's rejection probability (Section III-A); shapes [B] -> [B]."""
    x_d = x_d.float()
    y_d = y_d.float()
    return torch.clamp(1.0 - y_d / x_d, min=0.0)


def residual_distribution(*, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 2: P = norm(max(y - x, 0)) over the vocabulary; [B, V] -> [B, V] float32.

    Where y == x exactly the residual is all zeros; the draft is then always accepted, so we fall back to y to keep
    the result a distribution.
    """
    residual = torch.clamp(y.float() - x.float(), min=0.0)  # [B, V]
    # each row summed alone: torch splits one row's sum over |V| across threads but gives each of several rows one
    # thread, which rounds differently, and a recovered token must not depend on how many rows were rejected with
    # it (batch invariance, uhlm_ray/models/batch_invariance.py)
    mass = torch.cat([residual[i:i + 1].sum(dim=-1, keepdim=True) for i in range(residual.shape[0])])  # [B, 1]
    return torch.where(mass > 0, residual / mass.clamp_min(torch.finfo(torch.float32).tiny), y.float())


def verify_draft(
    *,
    x: torch.Tensor,
    y: torch.Tensor,
    draft: torch.Tensor,
    u_accept: torch.Tensor,
    u_resample: torch.Tensor,
    validate: bool = True,
) -> Verdict:
    """Verify drafts against the LLM (Step 2 and eq. 2). Batched over rows.

    x: [B, V] SLM distribution the drafts were sampled from; y: [B, V] LLM distribution; draft: [B] int64;
    u_accept, u_resample: [B] uniforms in [0, 1) for the accept test and for resampling.
    """
    if validate:
        check_distribution(x, field="x")
        check_distribution(y, field="y", size=x.shape[-1])
    x = x.float()
    y = y.float()
    rows = torch.arange(x.shape[0])
    x_d = x[rows, draft]  # [B]
    y_d = y[rows, draft]  # [B]
    # immediate acceptance when x_d <= y_d; otherwise accept with probability y_d / x_d
    accept_prob = torch.clamp(y_d / x_d, max=1.0)  # [B]
    accepted = u_accept.double() < accept_prob.double()  # [B] float64: a uniform below 1 stays below 1
    token = draft.clone()  # [B]
    rejected = ~accepted  # [B]
    if bool(rejected.any()):  # the residual costs O(V) per row: build it only for rejected rows
        residual = residual_distribution(x=x[rejected], y=y[rejected])  # [R, V]
        token[rejected] = sample_inverse_cdf(probs=residual, uniform=u_resample[rejected])  # [R]
    return Verdict(token=token, accepted=accepted, recovered=rejected, beta=1.0 - accept_prob)
