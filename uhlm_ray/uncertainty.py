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

from uhlm_ray.validation import check_range
from uhlm_ray.verify import sample_inverse_cdf

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
    for the K sample draws. Returns u as float32 [B]. All K samples are drawn in one vectorised pass.
    """
    batch, vocab = logits.shape
    k = thetas.shape[-1]
    z = logits.float()
    shifted = z - z.max(dim=-1, keepdim=True).values  # [B, V], <= 0 with a 0 at the argmax
    # eq. 6 up to its normaliser, which inverse-CDF sampling does not need: exp((z - max z) / theta_k) in (0, 1],
    # exactly 1 at the argmax, so no row is ever all zero (about 3x cheaper than a [B, K, V] softmax)
    weights = torch.exp(shifted.unsqueeze(1) / thetas.float().clamp_min(_MIN_THETA).unsqueeze(-1))  # [B, K, V]
    perturbed = weights.reshape(batch * k, vocab)  # [B*K, V]
    samples = sample_inverse_cdf(probs=perturbed, uniform=uniforms.reshape(-1)).reshape(batch, k)  # [B, K]
    return (samples != draft.unsqueeze(-1)).float().mean(dim=-1)  # [B] eq. 7


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
