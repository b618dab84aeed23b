"""What crosses the link between the phone and the base station: the upload of a round (one draft, or a block of
drafts), the verdict that comes back, and the session errors a device recovers from.

Imported by both ends, so the device never imports the base station's module nor the base station the device's.
Terminology (vLLM's): accepted drafts, the recovered token that replaces a rejected one, the bonus token of a block
whose drafts were all accepted (see base_station/verifier.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


class SessionError(KeyError):
    """An unknown, duplicate or exhausted session id; the message names the session."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


class UnknownSession(SessionError):
    """This verifier does not hold the session (never opened, closed, or held by a replica that was lost): the
    device reopens it with its prompt and the response so far, then retries the round."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} is not open")
        self.session_id = session_id

    def __reduce__(self):  # crosses Ray processes with its session id
        return UnknownSession, (self.session_id,)


Reopen = Callable[[str], None]  # the caller's way to rebuild a lost session by its id (prompt + response so far)
# a scoring call's answer: y of each new token, the pass's seconds, and (coupled) the LLM's race winner at each
Scored = tuple[list[float], float, list[int]]


@dataclass
class VerifyRequest:
    session_id: str
    round_index: int  # t, from 1
    draft: int  # d
    new_tokens: list[int]  # response tokens the LLM has not processed, oldest first
    draft_probs: torch.Tensor | None  # x [V] in payload.prob_dtype, what d was drawn from; None with `coupled`
    score: bool = False  # also return y of each new token (evaluation mode)
    coupled: bool = False  # keep d iff it is the LLM's race winner at response position round_index (ids only)


@dataclass
class VerifyResult:
    token: int  # r(t): d if accepted, else the recovered token
    accepted: bool
    resampled: bool
    y_d: float
    beta: float  # rejection probability max(1 - y_d / x_d, 0)
    tau_llm_s: float  # the batched catch-up forward that produced y (wall)
    catch_up_tokens: int
    batch_size: int
    new_token_probs: list[float] = field(default_factory=list)  # y of each new token, with score=True
    # with score and coupled: the LLM's race winner at each new token's position given the same prefix (-1: unknown)
    new_token_winners: list[int] = field(default_factory=list)
    scoring_s: float = 0.0  # evaluation-only seconds inside this call
    replayed_s: float = 0.0  # of tau_llm_s, seconds replayed from a PrefixCache rather than spent here
    replica: str = ""  # the Serve replica that verified it ("" in process)


@dataclass
class BlockRequest:
    """A block round's upload: the drafts, what they were drawn from (or nothing: ids only), the catch-up tokens."""

    session_id: str
    round_index: int  # r, from 1: keys the accept and final-token draws
    new_tokens: list[int]  # response tokens the LLM has not processed, oldest first
    drafts: list[int]  # d_1 .. d_n
    draft_probs: torch.Tensor | None  # [n, V] q_i in payload.prob_dtype (dense or sparse); None: ids only
    verify: list[bool] | None = None  # False: committed unverified (lossy); None: verify every draft
    score: bool = False  # also return y of each catch-up token (evaluation mode)
    coupled: bool = False  # keep drafts while they are the LLM's race winners (ids only, sampling/coupling.py)
    position: int = 0  # with `coupled`: the response position of d_1 (from 1), which keys the shared noise


@dataclass
class BlockResult:
    tokens: list[int]  # the kept drafts, then the recovered or bonus token
    num_accepted: int
    recovered: bool
    bonus: bool
    y_d: list[float]  # per draft, in the block's context
    accept_prob: list[float]
    tau_llm_s: float  # the batched pass over catch-up and drafts (wall, or replayed)
    pass_tokens: int  # tokens in that pass for this session
    batch_size: int
    new_token_probs: list[float] = field(default_factory=list)  # y of each catch-up token, with score=True
    new_token_winners: list[int] = field(default_factory=list)  # with score and coupled, as in VerifyResult
    winners: list[int] = field(default_factory=list)  # coupled: the LLM's race winner t_i at each draft's position
    scoring_s: float = 0.0
    replayed_s: float = 0.0
    replica: str = ""  # the Serve replica that verified it ("" in process)
