"""Shared-randomness coupling: the phone and the base station draw a position's token from the same keyed noise
(Daliri, Musco and Suresh, "Coupling without communication and drafter-invariant speculative decoding", 2024).

Terminology (as in block_verify.py): at response position j both sides hold the same noise, keyed by (session key,
j) alone, never by round, block, method or batch. The phone's *draft* is d_j = the race winner under x_j; the base
station computes t_j = the race winner under y_j from the pass that verifies the block. A draft is *accepted* while
d_j = t_j; at the first mismatch the base station emits t_j (the *recovered* token), and when every draft matched,
t_{n+1} (the *bonus* token). Every emitted token is t at its position, so the response is the LLM's own sample under
that noise, token for token, whatever the SLM drafted: only ids need to cross the link, and the LLM alone, HLM and
the block method with any stopping rule emit the same response for the same seed.

The race is Gumbel-max written with exponentials: argmax_v log p(v) + g(v) with g = -log E is argmin_v E(v) / p(v)
with E(v) ~ Exp(1) i.i.d., an exact sample from p. Two distributions racing on the same E agree with probability at
least (1 - TV) / (1 + TV) (Daliri et al.) and at most 1 - TV (no coupling of x and y does better).
"""

from __future__ import annotations

import torch

from uhlm_ray.sampling.block_verify import BlockVerdict
from uhlm_ray.sampling.rng import Purpose, SessionKey


def race_exponentials(*, key: SessionKey, position: int, vocab_size: int) -> torch.Tensor:
    """The race's noise E [V] float64 at response position `position` (1 = the first response token): keyed by the
    session key and the position only, so the device and the verifier draw the same E without exchanging it."""
    rng = key.rng(round_index=position, purpose=Purpose.COUPLED)
    return torch.from_numpy(rng.standard_exponential(size=vocab_size))


def coupled_sample(*, probs: torch.Tensor, exponentials: torch.Tensor) -> torch.Tensor:
    """The race winner argmax_v p(v) / E(v) of each row: probs [..., V], exponentials [..., V] -> [...] int64.

    Equal to argmin E / p; ids with p = 0 never win. Computed in float64: p / E in float32 would tie often among the
    many tiny probabilities of a large vocabulary, and a tie broken by id order is not the race's winner.
    """
    score = torch.where(probs > 0, probs.double() / exponentials, torch.full_like(exponentials, -1.0))  # [..., V]
    return score.argmax(dim=-1)


def race_winner(*, probs: torch.Tensor, key: SessionKey, position: int) -> int:
    """The token a model with distribution probs [V] emits at response position `position` under the session's noise."""
    return int(coupled_sample(probs=probs, exponentials=race_exponentials(key=key, position=position,
                                                                          vocab_size=probs.shape[-1])))


def verify_coupled_block(
    *,
    target: torch.Tensor,
    drafts: torch.Tensor,
    num_drafts: torch.Tensor,
    exponentials: torch.Tensor,
    verify: torch.Tensor | None = None,
) -> BlockVerdict:
    """Keep each block's drafts while they equal the LLM's race winners, then emit the LLM's winner.

    target: [B, N + 1, V] the LLM's y_1 .. y_{N+1}; drafts: [B, N] int64, padded past each row's n; num_drafts: [B]
    int64, n >= 1; exponentials: [B, N + 1, V] float64, the noise of the block's positions (row i of a block is
    response position p + i); verify: [B, N] bool, False for drafts committed unverified (lossy), None for all.
    `accept_prob` of the verdict is 1 where d = t and 0 where not (the coupled test is deterministic given E).
    """
    batch, n_max = drafts.shape
    y = target.float()  # [B, N + 1, V]
    winners = coupled_sample(probs=y, exponentials=exponentials)  # [B, N + 1] t_1 .. t_{N+1}
    y_d = y[:, :n_max].gather(-1, drafts.unsqueeze(-1)).squeeze(-1)  # [B, N]
    matched = drafts == winners[:, :n_max]  # [B, N] d_i = t_i
    in_block = torch.arange(n_max).unsqueeze(0) < num_drafts.unsqueeze(-1)  # [B, N]
    kept = matched | ~verify if verify is not None else matched.clone()  # [B, N]
    kept &= in_block
    num_accepted = kept.long().cumprod(dim=-1).sum(dim=-1)  # [B] the leading run of kept drafts
    rows = torch.arange(batch)
    positions = torch.arange(n_max + 1).unsqueeze(0)  # [1, N + 1]
    padded = torch.cat([drafts, drafts.new_zeros(batch, 1)], dim=-1)  # [B, N + 1]
    tokens = torch.where(positions < num_accepted.unsqueeze(-1), padded, torch.full_like(padded, -1))  # [B, N+1]
    tokens[rows, num_accepted] = winners[rows, num_accepted]
    recovered = num_accepted < num_drafts  # [B]
    return BlockVerdict(tokens=tokens, num_accepted=num_accepted, recovered=recovered, bonus=~recovered,
                        accept_prob=matched.float(), y_d=y_d, winners=winners)
