"""Multi-token speculative sampling (uhlm_ray/sampling/block_verify.py): worked by hand, and statistically exact.

Chi-square goodness of fit over DRAWS draws per case, fixed seeds, significance ALPHA per test.
"""

import numpy as np
import pytest
import torch
from scipy import stats

from uhlm_ray.sampling.block_verify import verify_block
from uhlm_ray.sampling.verify import sample_inverse_cdf

ALPHA = 1e-3
DRAWS = 200_000
F64 = torch.float64


def test_accepted_prefix_then_recovered_token_by_hand():
    # two drafts over V = 3; y rows: y_1, y_2, y_3 (bonus)
    y = torch.tensor([[[0.5, 0.5, 0.0], [0.1, 0.1, 0.8], [0.0, 0.0, 1.0]]])
    q = torch.tensor([[[0.25, 0.75, 0.0], [0.0, 1.0, 0.0]]])
    drafts = torch.tensor([[0, 1]])
    # d_1 = 0: q = 0.25 <= y = 0.5, kept; d_2 = 1: accept prob 0.1 / 1.0, u = 0.5 rejects it;
    # recovered from norm(max(y_2 - q_2, 0)) = [0.1, 0, 0.8] / 0.9: u = 0.5 -> 0.45 falls in token 2's interval
    v = verify_block(target=y, drafts=drafts, num_drafts=torch.tensor([2]), draft_probs=q,
                     u_accept=torch.tensor([[0.9, 0.5]], dtype=F64), u_final=torch.tensor([0.5], dtype=F64))
    assert v.num_accepted.tolist() == [1] and v.recovered.tolist() == [True] and v.bonus.tolist() == [False]
    assert v.tokens.tolist() == [[0, 2, -1]]
    assert v.accept_prob[0].tolist() == pytest.approx([1.0, 0.1])
    assert v.y_d[0].tolist() == pytest.approx([0.5, 0.1])


def test_every_draft_accepted_gives_a_bonus_token_from_the_last_row():
    y = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])
    v = verify_block(target=y, drafts=torch.tensor([[1, 2]]), num_drafts=torch.tensor([2]), draft_probs=None,
                     u_accept=torch.tensor([[0.3, 0.3]], dtype=F64), u_final=torch.tensor([0.7], dtype=F64))
    assert v.tokens.tolist() == [[1, 2, 0]] and v.bonus.tolist() == [True] and v.num_accepted.tolist() == [2]


def test_point_mass_rejection_resamples_from_y_without_the_draft():
    y = torch.tensor([[[0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3]]])
    # ids only: accepted with probability y_d = 0.5; u = 0.6 rejects; y without token 2 is [0.4, 0.6]
    v = verify_block(target=y, drafts=torch.tensor([[2]]), num_drafts=torch.tensor([1]), draft_probs=None,
                     u_accept=torch.tensor([[0.6]], dtype=F64), u_final=torch.tensor([0.5], dtype=F64))
    assert v.tokens.tolist() == [[1, -1]] and v.accept_prob[0].tolist() == pytest.approx([0.5])


def test_padded_rows_and_unverified_drafts():
    """Blocks of different lengths in one batch; a draft committed unverified is kept whatever the uniform."""
    y = torch.full((2, 4, 3), 1 / 3)
    drafts = torch.tensor([[0, 1, 2], [2, 0, 0]])
    verify = torch.tensor([[True, False, True], [True, True, True]])
    v = verify_block(target=y, drafts=drafts, num_drafts=torch.tensor([3, 1]), draft_probs=None,
                     u_accept=torch.tensor([[0.1, 0.99, 0.99], [0.1, 0.0, 0.0]], dtype=F64),
                     u_final=torch.tensor([0.0, 0.0], dtype=F64), verify=verify)
    # row 0: d_1 kept (0.1 < 1/3), d_2 committed unverified, d_3 rejected (0.99) and recovered
    # row 1: its one draft kept, the padding beyond n = 1 never judged: a bonus token
    assert v.num_accepted.tolist() == [2, 1]
    assert v.recovered.tolist() == [True, False] and v.bonus.tolist() == [False, True]
    assert v.tokens[1].tolist()[:2] == [2, 0] and v.tokens[1, 2].item() == -1


def _first_token_counts(x: np.ndarray, y: np.ndarray, *, seed: int, point_mass: bool) -> np.ndarray:
    """DRAWS one-draft blocks: d ~ x, verified against y[0] (y[1] is the bonus row); counts of the first token."""
    rng = np.random.default_rng(seed)
    vocab = len(x)
    xb = torch.tensor(np.tile(x, (DRAWS, 1)), dtype=torch.float32)  # [N, V]
    drafts = sample_inverse_cdf(probs=xb, uniform=torch.from_numpy(rng.random(DRAWS)))  # [N]
    target = torch.tensor(np.tile(y, (DRAWS, 1, 1)), dtype=torch.float32)  # [N, 2, V]
    v = verify_block(target=target, drafts=drafts.unsqueeze(-1), num_drafts=torch.ones(DRAWS, dtype=torch.long),
                     draft_probs=None if point_mass else xb.unsqueeze(1),
                     u_accept=torch.from_numpy(rng.random((DRAWS, 1))), u_final=torch.from_numpy(rng.random(DRAWS)))
    return np.bincount(v.tokens[:, 0].numpy(), minlength=vocab)


@pytest.mark.parametrize("point_mass", [False, True])
def test_first_token_is_distributed_as_y_with_and_without_draft_probabilities(point_mass):
    rng = np.random.default_rng(5)
    x = rng.dirichlet(np.full(12, 0.5)).astype(np.float32)
    y = rng.dirichlet(np.full(12, 0.5), size=2).astype(np.float32)
    counts = _first_token_counts(x / x.sum(), y / y.sum(-1, keepdims=True), seed=6, point_mass=point_mass)
    expected = y[0].astype(np.float64) / y[0].astype(np.float64).sum() * DRAWS
    support = expected > 0
    assert counts[~support].sum() == 0
    assert stats.chisquare(counts[support], expected[support]).pvalue > ALPHA


def test_the_test_has_power_a_point_mass_treated_as_accepted_is_caught():
    """verify_block told to keep every point-mass draft (accept uniforms of 0, the bug of treating an ids upload as
    accepted) returns x, not y: the chi-square above detects it at this sample size."""
    rng = np.random.default_rng(5)
    x = rng.dirichlet(np.full(12, 0.5)).astype(np.float32)
    y = rng.dirichlet(np.full(12, 0.5), size=2).astype(np.float32)
    xb = torch.tensor(np.tile(x / x.sum(), (DRAWS, 1)))  # [N, V]
    drafts = sample_inverse_cdf(probs=xb, uniform=torch.from_numpy(rng.random(DRAWS)))  # [N]
    v = verify_block(target=torch.tensor(np.tile(y, (DRAWS, 1, 1))), drafts=drafts.unsqueeze(-1),
                     num_drafts=torch.ones(DRAWS, dtype=torch.long), draft_probs=None,
                     u_accept=torch.zeros(DRAWS, 1, dtype=F64), u_final=torch.from_numpy(rng.random(DRAWS)))
    assert bool(v.bonus.all())
    counts = np.bincount(v.tokens[:, 0].numpy(), minlength=12)
    expected = y[0].astype(np.float64) / y[0].astype(np.float64).sum() * DRAWS
    assert stats.chisquare(counts[expected > 0] + 0.0, expected[expected > 0]).pvalue < 1e-12
