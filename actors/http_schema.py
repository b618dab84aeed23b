"""The verifier's HTTP route: JSON schema (pydantic) and its translation to the core's VerifyRequest.

Endpoints (all JSON; nothing is unpickled):
  GET    /v1/health                      -> {"vocab_size", "eos_token_ids", "sessions", "max_batch_size"}
  POST   /v1/sessions                    OpenSession -> {"session_id", "prefill_s"}
  POST   /v1/sessions/{session_id}/verify  Verify    -> VerifyAnswer   (one draft: the paper's methods)
  POST   /v1/sessions/{session_id}/block   Block     -> BlockAnswer    (n drafts in one pass: the block method)
  DELETE /v1/sessions/{session_id}                   -> {"closed": bool}

A distribution names the precision it travels in (`dtype`: float32, float16 or bfloat16, payload.prob_dtype); a
half-precision one reaches the verifier in that dtype, as the device sent it.
A malformed body gets 422 with each error's `loc` naming the field (pydantic's format); values that depend on the
model (token ids < vocab size, a full distribution of exactly |V| entries) are checked against it and answered the
same way. Bodies over MAX_BODY_BYTES get 413; an unknown session gets 404.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from uhlm_ray.link.payload import TORCH_DTYPES
from uhlm_ray.protocol import BlockRequest, VerifyRequest
from uhlm_ray.sampling.rng import SessionKey

MAX_PROMPT_TOKENS = 8192
MAX_BLOCK_DRAFTS = 64  # block.max_drafts' upper limit
MAX_NEW_TOKENS_PER_CALL = 4096
MAX_DISTRIBUTION_ENTRIES = 262_144  # above every vocabulary we load (Qwen2.5: 151,936)
MAX_BODY_BYTES = 8 * 1024 * 1024  # a full fp32 distribution as JSON text is ~2-3 MB

TokenId = Annotated[int, Field(ge=0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
# The precision a distribution travels in (payload.prob_dtype). Each number is rounded to the nearest value of that
# dtype on arrival, so a client may send the exact value or any decimal that rounds to it (numpy's float16 repr);
# a half-precision distribution is verified as its values renormalised in float64, as the device drew from them.
ProbDtype = Annotated[Literal["float32", "float16", "bfloat16"], Field(
    description="the precision of probs: float32, or float16 / bfloat16 (rounded on arrival, renormalised in "
                "float64 before verification, as uhlm_ray.link.payload.payload_distribution)")]
SUM_TOLERANCE = {"float32": 1e-3, "float16": 1e-2, "bfloat16": 1e-2}  # |sum - 1| allowed; half: rounding, underflow


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
    dtype: ProbDtype = "float32"


class TruncatedDistribution(_Strict):
    """Top-k / top-p uploads: the kept tokens and their probabilities; the rest have probability zero."""

    format: Literal["truncated"]
    token_ids: list[TokenId] = Field(min_length=1, max_length=MAX_DISTRIBUTION_ENTRIES)
    probs: list[Probability] = Field(min_length=1, max_length=MAX_DISTRIBUTION_ENTRIES)
    dtype: ProbDtype = "float32"

    @model_validator(mode="after")
    def _same_length(self) -> TruncatedDistribution:
        if len(self.token_ids) != len(self.probs):
            raise ValueError(f"token_ids has {len(self.token_ids)} entries and probs {len(self.probs)}; they pair up")
        if len(set(self.token_ids)) != len(self.token_ids):
            raise ValueError("token_ids must not repeat")
        return self


class CoupledDistribution(_Strict):
    """Nothing but the id: the draft is the device's race winner on the noise both sides draw from the session's
    key at response position `round` (decode.sampling=coupled); it is kept iff it is the LLM's winner too."""

    format: Literal["coupled"]


class Verify(_Strict):
    round: int = Field(ge=1, description="t, from 1; keys the accept/resample draws (coupled: the position)")
    draft_token_id: TokenId
    new_token_ids: list[TokenId] = Field(default_factory=list, max_length=MAX_NEW_TOKENS_PER_CALL,
                                         description="response tokens the verifier has not seen, oldest first")
    distribution: FullDistribution | TruncatedDistribution | CoupledDistribution = Field(discriminator="format")
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
    replica: str  # the replica that holds the session


class IdsPayload(_Strict):
    """Token ids only: each draft is verified as a point mass (exact whatever the device drew it from)."""

    format: Literal["ids"]


class CoupledBlockPayload(_Strict):
    """Token ids only, verified by the shared race (decode.sampling=coupled): drafts are kept while they are the
    LLM's race winners at their positions, from `position` (the first draft's response position) on."""

    format: Literal["coupled"]
    position: int = Field(ge=1, description="the response position of the first draft, from 1")


class FullBlockPayload(_Strict):
    """x_i for every draft: |V| probabilities each (a full block over HTTP fits the body limit for n <= 3)."""

    format: Literal["full"]
    probs: list[list[Probability]] = Field(min_length=1, max_length=MAX_BLOCK_DRAFTS)
    dtype: ProbDtype = "float32"


class TruncatedBlockPayload(_Strict):
    """x~_i for every draft: its kept tokens and their probabilities."""

    format: Literal["truncated"]
    token_ids: list[list[TokenId]] = Field(min_length=1, max_length=MAX_BLOCK_DRAFTS)
    probs: list[list[Probability]] = Field(min_length=1, max_length=MAX_BLOCK_DRAFTS)
    dtype: ProbDtype = "float32"


class Block(_Strict):
    round: int = Field(ge=1, description="r, from 1; keys the accept and final-token draws")
    new_token_ids: list[TokenId] = Field(default_factory=list, max_length=MAX_NEW_TOKENS_PER_CALL,
                                         description="response tokens the verifier has not seen, oldest first")
    draft_token_ids: list[TokenId] = Field(min_length=1, max_length=MAX_BLOCK_DRAFTS)
    payload: IdsPayload | CoupledBlockPayload | FullBlockPayload | TruncatedBlockPayload = Field(
        discriminator="format")
    verify: list[bool] | None = Field(default=None, description="false: committed unverified (lossy); null: all")
    score: bool = False

    @model_validator(mode="after")
    def _one_entry_per_draft(self) -> Block:
        n = len(self.draft_token_ids)
        lengths = {"verify": self.verify}
        if not isinstance(self.payload, IdsPayload | CoupledBlockPayload):
            lengths["payload.probs"] = self.payload.probs
        if isinstance(self.payload, TruncatedBlockPayload):
            lengths["payload.token_ids"] = self.payload.token_ids
        for name, values in lengths.items():
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries; it needs one per draft ({n})")
        return self


class BlockAnswer(BaseModel):
    token_ids: list[int]  # the kept drafts, then the recovered or bonus token
    num_accepted: int
    recovered: bool
    bonus: bool
    y_d: list[float]
    accept_prob: list[float]
    tau_llm_s: float
    pass_tokens: int
    batch_size: int
    new_token_probs: list[float]
    replica: str  # the replica that holds the session


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
    if isinstance(dist, CoupledDistribution):
        return VerifyRequest(session_id=session_id, round_index=body.round, draft=body.draft_token_id,
                             new_tokens=list(body.new_token_ids), draft_probs=None, score=body.score, coupled=True)
    if isinstance(dist, FullDistribution):
        if len(dist.probs) != vocab_size:
            raise FieldError(("body", "distribution", "full", "probs"),
                             f"has {len(dist.probs)} entries; a full distribution has exactly vocab_size="
                             f"{vocab_size}")
        x = _values(dist.probs, dtype=dist.dtype)  # [V]
    else:
        bad = [t for t in dist.token_ids if t >= vocab_size]
        if bad:
            raise FieldError(("body", "distribution", "truncated", "token_ids"),
                             f"token id {bad[0]} is outside [0, {vocab_size - 1}] (vocab_size)")
        x = torch.zeros(vocab_size, dtype=TORCH_DTYPES[dist.dtype])  # [V]
        x[torch.tensor(dist.token_ids)] = _values(dist.probs, dtype=dist.dtype)
    total = float(x.double().sum())
    if not math.isclose(total, 1.0, abs_tol=SUM_TOLERANCE[dist.dtype]):
        raise FieldError(("body", "distribution", dist.format, "probs"), f"sums to {total:.6g}; it must sum to 1")
    if float(x[body.draft_token_id]) <= 0.0:
        raise FieldError(("body", "draft_token_id"), "has probability 0 in the distribution it was drawn from")
    # float32 is renormalised here; half precision travels on as sent, and the verifier renormalises it in float64
    return VerifyRequest(session_id=session_id, round_index=body.round, draft=body.draft_token_id,
                         new_tokens=list(body.new_token_ids), draft_probs=x / total if dist.dtype == "float32" else x,
                         score=body.score)


def _values(probs: list[float], *, dtype: str) -> torch.Tensor:
    """JSON numbers -> a tensor in `dtype`, each rounded once to its nearest value there (from float64)."""
    return torch.tensor(probs, dtype=torch.float64).to(TORCH_DTYPES[dtype])


def _check_ids(name: tuple, ids: list[int], vocab_size: int) -> None:
    bad = [t for t in ids if t >= vocab_size]
    if bad:
        raise FieldError(name, f"token id {bad[0]} is outside [0, {vocab_size - 1}] (vocab_size)")


def to_block_request(*, session_id: str, body: Block, vocab_size: int) -> BlockRequest:
    """Check model-dependent ranges and build the drafts' q [n, V] (None for ids) the core verifies against."""
    _check_ids(("body", "new_token_ids"), body.new_token_ids, vocab_size)
    _check_ids(("body", "draft_token_ids"), body.draft_token_ids, vocab_size)
    payload, n = body.payload, len(body.draft_token_ids)
    probs = None
    if isinstance(payload, FullBlockPayload):
        probs = torch.zeros(n, vocab_size, dtype=TORCH_DTYPES[payload.dtype])  # [n, V]
        for i, row in enumerate(payload.probs):
            if len(row) != vocab_size:
                raise FieldError(("body", "payload", "full", "probs", i),
                                 f"has {len(row)} entries; a full distribution has exactly vocab_size={vocab_size}")
            probs[i] = _values(row, dtype=payload.dtype)
    elif isinstance(payload, TruncatedBlockPayload):
        probs = torch.zeros(n, vocab_size, dtype=TORCH_DTYPES[payload.dtype])  # [n, V]
        for i, (ids, row) in enumerate(zip(payload.token_ids, payload.probs, strict=True)):
            where = ("body", "payload", "truncated")
            if len(ids) != len(row) or len(set(ids)) != len(ids):
                raise FieldError((*where, "token_ids", i), "must pair up with probs, without repeats")
            _check_ids((*where, "token_ids", i), ids, vocab_size)
            probs[i, torch.tensor(ids, dtype=torch.long)] = _values(row, dtype=payload.dtype)
    if probs is not None:
        for i, total in enumerate(probs.double().sum(dim=-1).tolist()):
            if not math.isclose(total, 1.0, abs_tol=SUM_TOLERANCE[payload.dtype]):
                raise FieldError(("body", "payload", payload.format, "probs", i), f"sums to {total:.6g}; it must sum "
                                 "to 1")
            if float(probs[i, body.draft_token_ids[i]]) <= 0.0:
                raise FieldError(("body", "draft_token_ids", i), "has probability 0 in the distribution it was "
                                 "drawn from")
        if payload.dtype == "float32":  # half precision travels on as sent (the verifier renormalises it)
            probs = probs / probs.sum(dim=-1, keepdim=True)
    coupled = isinstance(payload, CoupledBlockPayload)
    return BlockRequest(session_id=session_id, round_index=body.round, new_tokens=list(body.new_token_ids),
                        drafts=list(body.draft_token_ids), draft_probs=probs, verify=body.verify, score=body.score,
                        coupled=coupled, position=payload.position if coupled else 0)


def session_key(body: OpenSession) -> SessionKey:
    return SessionKey(seed=body.seed, device=body.device_index, prompt=body.prompt_index)
