"""Multi-token speculative sampling of a block of drafts in one LLM pass (Leviathan et al., 2023; Chen et al., 2023).

Terminology (vLLM's spec-decode metrics):

- *draft* d_i, i = 1..n: the SLM's i-th token of the round, drawn from q_i, the distribution it uploads (x_i, or
  the truncated x~_i), or from anything at all when only its id is uploaded (a *point mass* q_i = delta(d_i)).
- *accepted*: d_i is kept, with probability min(1, y_i(d_i) / q_i(d_i)); for a point mass that is y_i(d_i).
  Verification stops at the first rejection.
- *recovered*: the token that replaces the first rejected draft, drawn from norm(max(y_i - q_i, 0)); for a point
  mass that is y_i with d_i removed, renormalised.
- *bonus*: when every draft is accepted, one more token drawn from y_{n+1}, the LLM's distribution after the block,
  which the same pass computed.
- *committed unverified* (lossy, U-HLM's skip inside a block): a draft whose uncertainty is below the skip threshold
  is kept without a test; it still sits in the LLM's context, so a rejection before it discards it.

Every emitted token is distributed exactly as the LLM's next token given the emitted prefix, whatever q was, as long
as each q_i is what d_i was drawn from (point mass: always) and no draft is committed unverified. A round emits
a + 1 tokens, a = the number of drafts kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uhlm_ray.sampling.verify import residual_distribution, sample_inverse_cdf


@dataclass(frozen=True)
class BlockVerdict:
    """Outcome of verifying a batch of blocks padded to N drafts."""

    tokens: torch.Tensor  # [B, N + 1] int64: the kept drafts, then the recovered or bonus token; -1 after
    num_accepted: torch.Tensor  # [B] int64: a, the leading drafts kept
    recovered: torch.Tensor  # [B] bool: a < n, the token after them was resampled
    bonus: torch.Tensor  # [B] bool: a = n, the token after them came from y_{n+1}
    accept_prob: torch.Tensor  # [B, N] float32: min(1, y_d / q_d) per draft (y_d for a point mass)
    y_d: torch.Tensor  # [B, N] float32: the LLM's probability of each draft in the block's context
    winners: torch.Tensor | None = None  # [B, N + 1] int64: coupled rule only, the LLM's race winners t_1 .. t_{N+1}


def verify_block(
    *,
    target: torch.Tensor,
    drafts: torch.Tensor,
    num_drafts: torch.Tensor,
    draft_probs: torch.Tensor | None,
    u_accept: torch.Tensor,
    u_final: torch.Tensor,
    verify: torch.Tensor | None = None,
) -> BlockVerdict:
    """Accept a prefix of each block, then a recovered or a bonus token.

    target: [B, N + 1, V] the LLM's y_1 .. y_{N+1} (row i predicts draft i; row n predicts the bonus);
    drafts: [B, N] int64, padded past each row's n; num_drafts: [B] int64, n >= 1 per row;
    draft_probs: [B, N, V] each draft's q_i, or None when only ids were uploaded (point masses);
    u_accept: [B, N] uniforms in [0, 1) for the accept tests; u_final: [B] uniforms for the last token;
    verify: [B, N] bool, False for drafts committed unverified (lossy); None verifies every draft.
    """
    batch, n_max = drafts.shape
    y = target.float()  # [B, N + 1, V]
    y_d = y[:, :n_max].gather(-1, drafts.unsqueeze(-1)).squeeze(-1)  # [B, N]
    if draft_probs is None:
        accept_prob = y_d  # [B, N] a point mass q_d = 1
    else:
        q_d = draft_probs.float().gather(-1, drafts.unsqueeze(-1)).squeeze(-1)  # [B, N]
        accept_prob = torch.clamp(y_d / q_d, max=1.0)  # [B, N]
    in_block = torch.arange(n_max).unsqueeze(0) < num_drafts.unsqueeze(-1)  # [B, N]
    kept = u_accept.double() < accept_prob.double()  # [B, N] float64: a uniform below 1 stays below 1
    if verify is not None:
        kept |= ~verify
    kept &= in_block
    num_accepted = kept.long().cumprod(dim=-1).sum(dim=-1)  # [B] the leading run of kept drafts
    recovered = num_accepted < num_drafts  # [B]
    rows = torch.arange(batch)
    final_probs = y[rows, num_accepted].clone()  # [B, V] y at the first rejection, or y_{n+1} for the bonus
    if bool(recovered.any()):
        r = recovered.nonzero().squeeze(-1)  # [R]
        rejected = drafts[r, num_accepted[r]]  # [R]
        if draft_probs is None:  # norm(max(y - delta_d, 0)): y without the rejected draft
            final_probs[r, rejected] = 0.0
        else:
            final_probs[r] = residual_distribution(x=draft_probs[r, num_accepted[r]], y=final_probs[r])  # [R, V]
    final = sample_inverse_cdf(probs=final_probs, uniform=u_final)  # [B]
    positions = torch.arange(n_max + 1).unsqueeze(0)  # [1, N + 1]
    padded = torch.cat([drafts, drafts.new_zeros(batch, 1)], dim=-1)  # [B, N + 1]
    tokens = torch.where(positions < num_accepted.unsqueeze(-1), padded, torch.full_like(padded, -1))  # [B, N+1]
    tokens[rows, num_accepted] = final
    return BlockVerdict(tokens=tokens, num_accepted=num_accepted, recovered=recovered, bonus=~recovered,
                        accept_prob=accept_prob, y_d=y_d)
