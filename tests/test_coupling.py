"""The shared-noise race (sampling/coupling.py): exact samples, the agreement bounds, and a block verification whose
emitted tokens are the LLM's own race winners whatever was drafted. Statistical tests use fixed seeds and state
their significance; each has a negative control that the same test rejects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from uhlm_ray.sampling.coupling import coupled_sample, race_exponentials, verify_coupled_block
from uhlm_ray.sampling.rng import SessionKey

ALPHA = 1e-3  # significance of the goodness-of-fit tests


def _noise(n: int, vocab: int, *, seed: int = 0) -> torch.Tensor:
    """n positions' race noise [n, V], one session key per position as a run would have."""
    return torch.stack([race_exponentials(key=SessionKey(seed=seed, device=0, prompt=i), position=1,
                                          vocab_size=vocab) for i in range(n)])


def test_the_race_winner_is_an_exact_sample():
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05, 0.0])
    noise = _noise(20_000, len(p))
    winners = coupled_sample(probs=p.expand(len(noise), -1), exponentials=noise)
    counts = np.bincount(winners.numpy(), minlength=len(p))
    assert counts[-1] == 0  # a zero-probability id never wins
    assert stats.chisquare(counts[:-1], f_exp=len(noise) * p[:-1].numpy()).pvalue > ALPHA
    # the test has power: the same counts are far from a slightly different distribution
    other = np.array([0.45, 0.25, 0.15, 0.1, 0.05])
    assert stats.chisquare(counts[:-1], f_exp=len(noise) * other).pvalue < 1e-6


def test_noise_depends_on_the_position_and_key_only():
    key = SessionKey(seed=3, device=1, prompt=7)
    assert torch.equal(race_exponentials(key=key, position=5, vocab_size=10),
                       race_exponentials(key=key, position=5, vocab_size=10))
    assert not torch.equal(race_exponentials(key=key, position=5, vocab_size=10),
                           race_exponentials(key=key, position=6, vocab_size=10))
    assert not torch.equal(race_exponentials(key=key, position=5, vocab_size=10),
                           race_exponentials(key=SessionKey(seed=3, device=1, prompt=8), position=5, vocab_size=10))


@pytest.mark.parametrize("concentration", [0.1, 0.5, 2.0])
def test_agreement_lies_between_the_coupling_bounds(concentration):
    """P(d = t) for random LLM-like pairs: at least (1 - TV) / (1 + TV), at most 1 - TV (Monte Carlo, 4000 draws
    per pair, a 4-sigma margin), and well above a point mass's E_x[y_d] when the two disagree."""
    rng = np.random.default_rng(5)
    vocab, n = 64, 4000
    noise = _noise(n, vocab, seed=11)
    for _ in range(4):
        x = torch.from_numpy(rng.dirichlet(np.full(vocab, concentration)))
        y = torch.from_numpy(rng.dirichlet(np.full(vocab, concentration)))
        y = 0.6 * y + 0.4 * x  # related, as an SLM and its LLM are
        tv = 0.5 * float((x - y).abs().sum())
        agree = float((coupled_sample(probs=x.expand(n, -1), exponentials=noise)
                       == coupled_sample(probs=y.expand(n, -1), exponentials=noise)).double().mean())
        margin = 4 * np.sqrt(0.25 / n)
        assert (1 - tv) / (1 + tv) - margin <= agree <= 1 - tv + margin, (tv, agree)
        point_mass = float((x * y).sum())  # what an ids-only upload verified as a point mass accepts
        assert agree > point_mass


def test_a_block_emits_the_llms_race_winners_whatever_was_drafted():
    torch.manual_seed(0)
    batch, n, vocab = 64, 4, 12
    target = torch.softmax(torch.randn(batch, n + 1, vocab) * 2, dim=-1)  # [B, N + 1, V]
    noise = torch.from_numpy(np.random.default_rng(1).standard_exponential((batch, n + 1, vocab)))
    winners = coupled_sample(probs=target, exponentials=noise)  # [B, N + 1]
    # half the rows draft the winners themselves for a while, then anything
    drafts = torch.randint(0, vocab, (batch, n))
    agree_for = torch.randint(0, n + 1, (batch,))
    for b in range(batch):
        drafts[b, :agree_for[b]] = winners[b, :agree_for[b]]
    num_drafts = torch.full((batch,), n)
    verdict = verify_coupled_block(target=target, drafts=drafts, num_drafts=num_drafts, exponentials=noise)
    for b in range(batch):
        a = int(verdict.num_accepted[b])
        assert a >= int(agree_for[b])
        assert verdict.tokens[b, :a + 1].tolist() == winners[b, :a + 1].tolist()  # the LLM's own tokens
        assert bool(verdict.bonus[b]) == (a == n)
        assert (verdict.tokens[b, a + 1:] == -1).all()
    assert bool(verdict.bonus.any()) and bool(verdict.recovered.any())


def test_a_draft_committed_unverified_is_kept_even_when_it_differs():
    target = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])  # the LLM is sure: 1, 2, 0
    noise = torch.ones(1, 3, 3, dtype=torch.float64)
    drafts = torch.tensor([[0, 2]])  # the first differs from the LLM's 1
    verified = verify_coupled_block(target=target, drafts=drafts, num_drafts=torch.tensor([2]), exponentials=noise)
    assert verified.tokens[0].tolist() == [1, -1, -1] and bool(verified.recovered[0])
    lossy = verify_coupled_block(target=target, drafts=drafts, num_drafts=torch.tensor([2]), exponentials=noise,
                                 verify=torch.tensor([[False, True]]))
    assert lossy.tokens[0].tolist() == [0, 2, 0] and bool(lossy.bonus[0])
