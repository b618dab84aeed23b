"""The verifier's HTTP route: JSON schema (pydantic) and its translation to the core's VerifyRequest.

Endpoints (all JSON; nothing is unpickled):
  GET    /v1/health                      -> {"vocab_size", "eos_token_ids", "sessions", "max_batch_size"}
  POST   /v1/sessions                    OpenSession -> {"session_id", "prefill_s"}
  POST   /v1/sessions/{session_id}/verify  Verify    -> VerifyAnswer
  DELETE /v1/sessions/{session_id}                   -> {"closed": bool}

A malformed body gets 422 with each error's `loc` naming the field (pydantic's format); values that depend on the
model (token ids < vocab size, a full distribution of exactly |V| entries) are checked against it and answered the
same way. Bodies over MAX_BODY_BYTES get 413; an unknown session gets 404.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from uhlm_ray.verifier import SessionKey, VerifyRequest

MAX_PROMPT_TOKENS = 8192
MAX_NEW_TOKENS_PER_CALL = 4096
MAX_DISTRIBUTION_ENTRIES = 262_144  # above every vocabulary we load (Qwen2.5: 151,936)
MAX_BODY_BYTES = 8 * 1024 * 1024  # a full fp32 distribution as JSON text is ~2-3 MB

TokenId = Annotated[int, Field(ge=0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenSession(_Strict):
    session_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    prompt_token_ids: list[TokenId] = Field(min_length=1, max_length=MAX_PROMPT_TOKENS)
    seed: int = Field(default=0, ge=0)
    device_index: int = Field(default=0, ge=0)
    prompt_index: int = Field(default=0, ge=0)


class FullDistribution(_Strict):
    format: Literal["full"]
    probs: list[Probability] = Field(min_length=1, max_length=MAX_DISTRIBUTION_ENTRIES)


class TruncatedDistribution(_Strict):
    """Top-k / top-p uploads: the kept tokens and their probabilities; the rest have probability zero."""

    format: Literal["truncated"]
    token_ids: list[TokenId] = Field(min_length=1, max_length=MAX_DISTRIBUTION_ENTRIES)
    probs: list[Probability] = Field(min_length=1, max_length=MAX_DISTRIBUTION_ENTRIES)

    @model_validator(mode="after")
    def _same_length(self) -> TruncatedDistribution:
        if len(self.token_ids) != len(self.probs):
            raise ValueError(f"token_ids has {len(self.token_ids)} entries and probs {len(self.probs)}; they pair up")
        if len(set(self.token_ids)) != len(self.token_ids):
            raise ValueError("token_ids must not repeat")
        return self


class Verify(_Strict):
    round: int = Field(ge=1, description="t, from 1; keys the accept/resample draws")
    draft_token_id: TokenId
    new_token_ids: list[TokenId] = Field(default_factory=list, max_length=MAX_NEW_TOKENS_PER_CALL,
                                         description="response tokens the verifier has not seen, oldest first")
    distribution: FullDistribution | TruncatedDistribution = Field(discriminator="format")
    score: bool = False


class VerifyAnswer(BaseModel):
    token_id: int
    accepted: bool
    resampled: bool
    y_d: float
    beta: float
    tau_llm_s: float
    catch_up_tokens: int
    batch_size: int
    new_token_probs: list[float]


class FieldError(ValueError):
    """A value valid in shape but not for this model; `loc` names the field as pydantic would."""

    def __init__(self, loc: tuple, message: str) -> None:
        super().__init__(message)
        self.loc = loc


def to_request(*, session_id: str, body: Verify, vocab_size: int) -> VerifyRequest:
    """Check model-dependent ranges and build the dense x [V] the core verifies against."""
    for name, ids in (("new_token_ids", body.new_token_ids), ("draft_token_id", [body.draft_token_id])):
        bad = [t for t in ids if t >= vocab_size]
        if bad:
            raise FieldError(("body", name), f"token id {bad[0]} is outside [0, {vocab_size - 1}] (vocab_size)")
    dist = body.distribution
    if isinstance(dist, FullDistribution):
        if len(dist.probs) != vocab_size:
            raise FieldError(("body", "distribution", "full", "probs"),
                             f"has {len(dist.probs)} entries; a full distribution has exactly vocab_size="
                             f"{vocab_size}")
        x = torch.tensor(dist.probs, dtype=torch.float32)  # [V]
    else:
        bad = [t for t in dist.token_ids if t >= vocab_size]
        if bad:
            raise FieldError(("body", "distribution", "truncated", "token_ids"),
                             f"token id {bad[0]} is outside [0, {vocab_size - 1}] (vocab_size)")
        x = torch.zeros(vocab_size, dtype=torch.float32)  # [V]
        x[torch.tensor(dist.token_ids)] = torch.tensor(dist.probs, dtype=torch.float32)
    total = float(x.sum())
    if not math.isclose(total, 1.0, abs_tol=1e-3):
        raise FieldError(("body", "distribution", dist.format, "probs"), f"sums to {total:.6g}; it must sum to 1")
    if float(x[body.draft_token_id]) <= 0.0:
        raise FieldError(("body", "draft_token_id"), "has probability 0 in the distribution it was drawn from")
    return VerifyRequest(session_id=session_id, round_index=body.round, draft=body.draft_token_id,
                         new_tokens=list(body.new_token_ids), draft_probs=x / total, score=body.score)


def session_key(body: OpenSession) -> SessionKey:
    return SessionKey(seed=body.seed, device=body.device_index, prompt=body.prompt_index)
