"""The SLM's uncertainty about its draft, computed from the logits that produced the draft (no extra forward pass).

- temperature perturbation (U-HLM paper, eq. 6-7): K temperatures theta_k ~ U[0, theta_max], one sample token d_k
  from softmax(z / theta_k) each; u = share of the K samples that differ from the draft d. theta -> 0 is argmax.
- entropy: H(x) / log |V|, in [0, 1].
- confidence: 1 - max_v x_v, in [0, 1 - 1/|V|].
"""

from __future__ import annotations

import math

import numpy as np
import torch

from uhlm_ray.sampling.verify import sample_inverse_cdf
from uhlm_ray.validation import check_range

# Below this temperature softmax(z / theta) is one-hot at the argmax in float32 for any realistic logit gap;
# clamping keeps theta = 0 (the argmax limit) free of division by zero.
_MIN_THETA = 1e-6


def draw_temperatures(*, rng: np.random.Generator, k: int, theta_max: float, batch: int = 1) -> np.ndarray:
    """Eq. 6's temperatures: K draws per row, uniform in [0, theta_max]; returns [batch, K] float64."""
    check_range(k, field="uncertainty.k", low=1)
    check_range(theta_max, field="uncertainty.theta_max", low=0.0, low_open=True)
    return rng.uniform(0.0, theta_max, size=(batch, k))


def temperature_perturbation(
    *, logits: torch.Tensor, draft: torch.Tensor, thetas: torch.Tensor, uniforms: torch.Tensor
) -> torch.Tensor:
    """Eq. 6-7: u = (1/K) sum_k 1(d_k != d), with d_k ~ softmax(z / theta_k).

    logits: [B, V] the SLM's logits z; draft: [B] int64; thetas: [B, K] temperatures; uniforms: [B, K] in [0, 1)
    for the K sample draws. Returns u as float32 [B].

    Each d_k is the inverse-CDF draw over the vocabulary in id order, and eq. 7 only asks whether it is d: that is
    the case exactly when U_k Z_k falls in [W_<d, W_<d + w_d), with w_v = exp((z_v - max z) / theta_k), W_<d the
    weight of the ids below d and Z_k the total. Those two sums are all that is needed, not the K x |V| table of
    samples: for logits that are bf16 values (what a bf16 model emits) they are sums over the few thousand distinct
    values, weighted by how often each occurs (a bincount of the bit patterns), so a round costs two passes over
    the vocabulary instead of K. The draws are the ones a full inverse-CDF sampler makes (up to float rounding).
    """
    out = torch.empty(thetas.shape[0], dtype=torch.float32)
    for b in range(thetas.shape[0]):
        z, d = logits[b].float(), int(draft[b])
        theta = thetas[b].double().clamp_min(_MIN_THETA).unsqueeze(-1)  # [K, 1]
        top = z.max().double()
        w_below, w_total = _weight_sums(z, draft=d, theta=theta, top=top)  # [K] each: W_<d and Z_k
        w_draft = torch.exp((z[d].double() - top) / theta.squeeze(-1))  # [K]
        target = uniforms[b].double() * w_total  # [K] U_k Z_k
        same = (target >= w_below) & (target < w_below + w_draft)  # [K] d_k == d
        out[b] = 1.0 - same.double().mean()  # eq. 7
    return out


def _weight_sums(z: torch.Tensor, *, draft: int, theta: torch.Tensor, top: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """sum_{v < draft} w_v and sum_v w_v for each temperature theta [K, 1], w_v = exp((z_v - top) / theta)."""
    as_bf16 = z.to(torch.bfloat16)
    if bool((as_bf16.float() == z).all()):  # bf16 logits: sums over at most 65,536 distinct values
        patterns = as_bf16.view(torch.int16).long() & 0xFFFF  # [V]
        total = torch.bincount(patterns, minlength=65536)  # [65536]
        present = total.nonzero().squeeze(-1)  # [J]
        below = torch.bincount(patterns[:draft], minlength=65536)[present].double()  # [J]
        values = present.to(torch.int32).to(torch.int16).view(torch.bfloat16).double()  # [J]
        weights = torch.exp((values.unsqueeze(0) - top) / theta)  # [K, J]
        return weights @ below, weights @ total[present].double()
    weights = torch.exp((z.unsqueeze(0) - top.float()) / theta.float())  # [K, V] any other dtype: each id alone
    return weights[:, :draft].sum(dim=-1).double(), weights.sum(dim=-1).double()  # cascade sums in float32


def entropy_uncertainty(*, probs: torch.Tensor) -> torch.Tensor:
    """Normalised Shannon entropy H(x) / log |V| of each row of probs [B, V]; returns float32 [B] in [0, 1]."""
    p = probs.float()
    plogp = torch.where(p > 0, p * torch.log(p.clamp_min(torch.finfo(torch.float32).tiny)), torch.zeros_like(p))
    return (-plogp.sum(dim=-1) / math.log(p.shape[-1])).clamp(0.0, 1.0)


def confidence_uncertainty(*, probs: torch.Tensor) -> torch.Tensor:
    """1 - max_v x_v for each row of probs [B, V]: low when the SLM puts most mass on one token; float32 [B]."""
    return 1.0 - probs.float().max(dim=-1).values


def sample_disagreement(*, probs: torch.Tensor, draft: int, uniforms: torch.Tensor) -> float:
    """Eq. 7 for any K perturbed distributions probs [K, V] (MC-dropout passes, paraphrased prompts): one sample
    d_k from each row with uniforms [K]; u = share of samples differing from the draft d."""
    samples = sample_inverse_cdf(probs=probs.float(), uniform=uniforms)  # [K]
    return float((samples != draft).float().mean())


def draw_dropout_probs(*, rng: np.random.Generator, k: int, p_max: float) -> np.ndarray:
    """MC dropout's K dropout probabilities, uniform in [0, p_max] (the paper: 20 models, p in [0, 0.1])."""
    check_range(k, field="uncertainty.k", low=1)
    check_range(p_max, field="uncertainty.dropout_max", low=0.0, high=1.0, high_open=True)
    return rng.uniform(0.0, p_max, size=k)
