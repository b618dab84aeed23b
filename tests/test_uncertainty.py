"""The uncertainty measures (eq. 6-7 and the entropy / confidence baselines) and their limits."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from uhlm_ray.device.uncertainty import (
    confidence_uncertainty,
    draw_temperatures,
    entropy_uncertainty,
    temperature_perturbation,
)
from uhlm_ray.validation import ConfigError

ALPHA = 1e-3


def _u(logits: torch.Tensor, draft: int, thetas: np.ndarray, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return temperature_perturbation(
        logits=logits.unsqueeze(0), draft=torch.tensor([draft]), thetas=torch.from_numpy(thetas).reshape(1, -1),
        uniforms=torch.from_numpy(rng.random(thetas.size)).reshape(1, -1),
    )


def test_theta_to_zero_samples_the_argmax():
    logits = torch.tensor([0.3, 2.0, 1.9, -1.0])
    zeros = np.zeros(20)
    assert _u(logits, 1, zeros, seed=0).item() == 0.0  # every d_k is the argmax = the draft
    assert _u(logits, 2, zeros, seed=0).item() == 1.0  # every d_k differs from a non-argmax draft
    assert _u(logits, 1, np.full(20, 1e-9), seed=0).item() == 0.0


def test_samples_follow_the_tempered_softmax():
    """At a fixed theta, P(d_k != d) = 1 - softmax(z / theta)_d: a binomial test over 100,000 samples."""
    logits = torch.tensor([1.0, 0.5, 0.0, -0.5, 2.0])
    theta, k = 0.7, 100_000
    u = _u(logits, 4, np.full(k, theta), seed=3).item()
    p_differ = 1.0 - torch.softmax(logits / theta, dim=-1)[4].item()
    assert stats.binomtest(round(u * k), k, p_differ).pvalue > ALPHA


def test_u_rises_with_the_slm_entropy():
    """Flatter SLM distributions (higher entropy) give higher mean uncertainty, as eq. 7 intends."""
    base = torch.tensor([3.0, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, -3.0])
    rng = np.random.default_rng(11)
    means, entropies = [], []
    for sharpness in (4.0, 2.0, 1.0, 0.5, 0.25):
        logits = base * sharpness
        entropies.append(entropy_uncertainty(probs=torch.softmax(logits, -1).unsqueeze(0)).item())
        thetas = draw_temperatures(rng=rng, k=2000, theta_max=2.0)[0]
        means.append(_u(logits, 0, thetas, seed=int(sharpness * 100)).item())
    assert entropies == sorted(entropies)
    assert means == sorted(means)
    assert means[0] < 0.1 and means[-1] > 0.5


def test_temperatures_are_uniform_on_zero_theta_max():
    thetas = draw_temperatures(rng=np.random.default_rng(5), k=20, theta_max=2.0, batch=2000).ravel()
    assert thetas.min() >= 0.0 and thetas.max() <= 2.0
    assert stats.kstest(thetas, stats.uniform(loc=0, scale=2).cdf).pvalue > ALPHA


def test_same_seed_same_uncertainty():
    logits = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    thetas = draw_temperatures(rng=np.random.default_rng(1), k=20, theta_max=2.0)[0]
    assert _u(logits, 3, thetas, seed=9).item() == _u(logits, 3, thetas, seed=9).item()


def test_batched_rows_are_independent_of_each_other():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    thetas = torch.rand(3, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2
    uniforms = torch.rand(3, 20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    draft = torch.tensor([0, 1, 2])
    batched = temperature_perturbation(logits=logits, draft=draft, thetas=thetas, uniforms=uniforms)
    for row in range(3):
        single = temperature_perturbation(logits=logits[row : row + 1], draft=draft[row : row + 1],
                                          thetas=thetas[row : row + 1], uniforms=uniforms[row : row + 1])
        assert single.item() == batched[row].item()


def test_entropy_and_confidence_limits():
    uniform = torch.full((1, 16), 1 / 16)
    one_hot = torch.zeros(1, 16)
    one_hot[0, 3] = 1.0
    assert entropy_uncertainty(probs=uniform).item() == pytest.approx(1.0)
    assert entropy_uncertainty(probs=one_hot).item() == pytest.approx(0.0)
    assert confidence_uncertainty(probs=uniform).item() == pytest.approx(1 - 1 / 16)
    assert confidence_uncertainty(probs=one_hot).item() == pytest.approx(0.0)
    half = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    assert entropy_uncertainty(probs=half).item() == pytest.approx(math.log(2) / math.log(4))


@pytest.mark.parametrize(("k", "theta_max", "field"), [(0, 2.0, "uncertainty.k"), (20, 0.0, "uncertainty.theta_max"),
                                                       (20, -1.0, "uncertainty.theta_max")])
def test_bad_settings_name_the_field(k, theta_max, field):
    with pytest.raises(ConfigError, match=field):
        draw_temperatures(rng=np.random.default_rng(0), k=k, theta_max=theta_max)


def test_the_two_pass_measure_draws_what_an_inverse_cdf_sampler_draws():
    """Eq. 7 from two weight sums per temperature (uncertainty.py) against the K x |V| sampler it replaces: the same
    uniforms give the same d_k == d verdicts, on bf16 logits (the bincount path) and on float32 ones."""
    from uhlm_ray.sampling.verify import sample_inverse_cdf

    rng = np.random.default_rng(21)
    for dtype in (torch.bfloat16, torch.float32):
        logits = (torch.randn(4000, generator=torch.Generator().manual_seed(3)) * 4).to(dtype).float()  # [V]
        thetas = rng.uniform(0.0, 2.0, size=400)
        uniforms = rng.random(400)
        for draft in (int(torch.argmax(logits)), 17, 3999):
            u = _u_from(logits, draft, thetas, uniforms)
            weights = torch.exp((logits - logits.max()).unsqueeze(0) / torch.from_numpy(thetas).float().unsqueeze(-1))
            samples = sample_inverse_cdf(probs=weights, uniform=torch.from_numpy(uniforms))  # [K] the full sampler
            assert u == pytest.approx(float((samples != draft).float().mean()), abs=2 / 400)  # rounding at edges


def _u_from(logits, draft, thetas, uniforms) -> float:
    return float(temperature_perturbation(logits=logits.unsqueeze(0), draft=torch.tensor([draft]),
                                          thetas=torch.from_numpy(thetas).reshape(1, -1),
                                          uniforms=torch.from_numpy(uniforms).reshape(1, -1))[0])
