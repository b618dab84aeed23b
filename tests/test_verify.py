"""Exactness of speculative verification (eq. 2): with every draft sent, the output is distributed as y.

Chi-square goodness of fit over 200,000 draws per case, fixed seeds, significance alpha = 0.001 per test.
"""

import numpy as np
import pytest
import torch
from scipy import stats

from uhlm_ray.sampling.verify import rejection_probability, residual_distribution, sample_inverse_cdf, verify_draft
from uhlm_ray.validation import ConfigError

ALPHA = 1e-3
DRAWS = 200_000


def _hlm_outputs(x: np.ndarray, y: np.ndarray, *, seed: int, rule=verify_draft) -> tuple[np.ndarray, torch.Tensor]:
    """DRAWS rounds of HLM with every token sent: d ~ x, then verification against y."""
    rng = np.random.default_rng(seed)
    xb = torch.tensor(np.tile(x, (DRAWS, 1)), dtype=torch.float32)  # [N, V]
    yb = torch.tensor(np.tile(y, (DRAWS, 1)), dtype=torch.float32)  # [N, V]
    draft = sample_inverse_cdf(probs=xb, uniform=torch.from_numpy(rng.random(DRAWS)))  # [N]
    verdict = rule(x=xb, y=yb, draft=draft, u_accept=torch.from_numpy(rng.random(DRAWS)),
                   u_resample=torch.from_numpy(rng.random(DRAWS)))
    counts = np.bincount(verdict.token.numpy(), minlength=len(y))
    return counts, verdict.recovered


def _p_value(counts: np.ndarray, probs: np.ndarray) -> float:
    probs = probs.astype(np.float64) / probs.astype(np.float64).sum()
    support = probs > 0
    assert counts[~support].sum() == 0, "a token of zero LLM probability was emitted"
    return stats.chisquare(counts[support], probs[support] * counts.sum()).pvalue


def _dirichlet_pair(seed: int, vocab: int, concentration: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.dirichlet(np.full(vocab, concentration))
    y = rng.dirichlet(np.full(vocab, concentration))
    return x.astype(np.float32) / x.astype(np.float32).sum(), y.astype(np.float32) / y.astype(np.float32).sum()


@pytest.mark.parametrize(("seed", "vocab", "concentration"), [(1, 8, 1.0), (2, 20, 0.3), (3, 50, 2.0)])
def test_output_distribution_equals_llm(seed, vocab, concentration):
    x, y = _dirichlet_pair(seed, vocab, concentration)
    counts, recovered = _hlm_outputs(x, y, seed=seed)
    # the resampling branch is really exercised: the rejection rate matches sum_v max(x_v - y_v, 0)
    expected_rejections = np.clip(x - y, 0, None).sum() * DRAWS
    assert recovered.sum().item() == pytest.approx(expected_rejections, rel=0.05)
    assert _p_value(counts, y) > ALPHA


def test_exact_when_supports_differ():
    """Tokens the SLM never drafts are reached only through resampling; tokens the LLM excludes never appear."""
    x = np.array([0.5, 0.3, 0.2, 0.0, 0.0], dtype=np.float32)
    y = np.array([0.0, 0.2, 0.3, 0.25, 0.25], dtype=np.float32)
    counts, recovered = _hlm_outputs(x, y, seed=7)
    assert counts[0] == 0
    assert recovered.float().mean().item() == pytest.approx(0.6, abs=0.01)  # sum max(x - y, 0) = 0.5 + 0.1
    assert _p_value(counts, y) > ALPHA


def test_chi_square_detects_a_wrong_rule():
    """The test has power: always accepting the draft reproduces x, not y, and is rejected."""
    x, y = _dirichlet_pair(1, 8, 1.0)

    def always_accept(**kw):
        out = verify_draft(**kw)
        return type(out)(token=kw["draft"], accepted=torch.ones_like(out.accepted),
                         recovered=torch.zeros_like(out.recovered), beta=out.beta)

    counts, _ = _hlm_outputs(x, y, seed=1, rule=always_accept)
    assert _p_value(counts, y) < 1e-12


def test_immediate_and_probabilistic_acceptance():
    x = torch.tensor([[0.2, 0.8], [0.8, 0.2]])
    y = torch.tensor([[0.5, 0.5], [0.4, 0.6]])
    draft = torch.tensor([0, 0])
    # row 0: x_d = 0.2 <= y_d = 0.5, accepted even with the largest uniform
    # row 1: x_d = 0.8 > y_d = 0.4, accepted iff u < 0.5
    high = verify_draft(x=x, y=y, draft=draft, u_accept=torch.tensor([0.999, 0.6]), u_resample=torch.tensor([0.3, 0.3]))
    assert high.accepted.tolist() == [True, False]
    assert high.token.tolist() == [0, 1]  # row 1 resampled from norm(max(y - x, 0)) = [0, 1]
    low = verify_draft(x=x, y=y, draft=draft, u_accept=torch.tensor([0.999, 0.4]), u_resample=torch.tensor([0.3, 0.3]))
    assert low.accepted.tolist() == [True, True]
    assert low.beta.tolist() == pytest.approx([0.0, 0.5])


def test_residual_distribution_by_hand():
    x = torch.tensor([[0.5, 0.3, 0.2]])
    y = torch.tensor([[0.2, 0.4, 0.4]])
    # max(y - x, 0) = [0, 0.1, 0.2] -> normalised [0, 1/3, 2/3]
    assert residual_distribution(x=x, y=y)[0].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3])


def test_rejection_probability():
    beta = rejection_probability(x_d=torch.tensor([0.5, 0.2, 0.4]), y_d=torch.tensor([0.25, 0.3, 0.0]))
    assert beta.tolist() == pytest.approx([0.5, 0.0, 1.0])


def test_inverse_cdf_sampling_matches_distribution():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    rng = np.random.default_rng(0)
    tokens = sample_inverse_cdf(probs=probs.expand(DRAWS, 4), uniform=torch.from_numpy(rng.random(DRAWS)))
    counts = np.bincount(tokens.numpy(), minlength=4)
    assert _p_value(counts, probs.numpy()) > ALPHA


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.tensor([[0.5, float("nan")]]), "x contains NaN"),
        (torch.tensor([[0.5, 0.6]]), "x must sum to 1"),
        (torch.tensor([[1.2, -0.2]]), "x contains negative"),
    ],
)
def test_bad_distributions_name_the_field(x, message):
    with pytest.raises(ConfigError, match=message):
        verify_draft(x=x, y=torch.tensor([[0.5, 0.5]]), draft=torch.tensor([0]), u_accept=torch.zeros(1),
                     u_resample=torch.zeros(1))


def test_wrong_length_names_the_field():
    with pytest.raises(ConfigError, match="y has length 3, expected the vocabulary size 2"):
        verify_draft(x=torch.tensor([[0.5, 0.5]]), y=torch.tensor([[0.2, 0.3, 0.5]]), draft=torch.tensor([0]),
                     u_accept=torch.zeros(1), u_resample=torch.zeros(1))


def test_a_uniform_just_below_one_never_draws_a_zero_probability_token():
    """The largest float64 below 1 rounds to 1.0 in float32: the draw must still be the last token of positive
    probability, never the last id of the vocabulary."""
    below_one = torch.tensor([np.nextafter(1.0, 0.0)], dtype=torch.float64)
    assert float(below_one.float()) == 1.0  # the edge this test is about
    probs = torch.tensor([[0.2, 0.5, 0.3, 0.0, 0.0]])
    assert sample_inverse_cdf(probs=probs, uniform=below_one).item() == 2
    assert sample_inverse_cdf(probs=torch.tensor([[0.0, 1.0, 0.0]]), uniform=below_one).item() == 1
    # the rest of the range is unchanged: the first positive token at 0, the token whose cdf interval holds u
    assert sample_inverse_cdf(probs=probs, uniform=torch.tensor([0.0], dtype=torch.float64)).item() == 0
    assert sample_inverse_cdf(probs=probs, uniform=torch.tensor([0.69], dtype=torch.float64)).item() == 1


def test_a_draft_with_x_d_at_most_y_d_is_kept_whatever_the_uniform():
    below_one = torch.tensor([np.nextafter(1.0, 0.0)], dtype=torch.float64)
    x, y = torch.tensor([[0.4, 0.6]]), torch.tensor([[0.4, 0.6]])
    verdict = verify_draft(x=x, y=y, draft=torch.tensor([1]), u_accept=below_one, u_resample=below_one)
    assert verdict.accepted.item() and verdict.token.item() == 1


def test_keyed_uniforms_stay_below_one_in_float64():
    from uhlm_ray.device.decoder import keyed_uniform
    from uhlm_ray.sampling.rng import Purpose, SessionKey

    u = keyed_uniform(key=SessionKey(seed=0, device=0, prompt=0), round_index=1, purpose=Purpose.ACCEPT)
    assert u.dtype == torch.float64 and 0.0 <= u.item() < 1.0
