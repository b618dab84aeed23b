"""What every round leaves behind, and what a prompt's run leaves behind. All metrics are functions of these."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

NAN = math.nan


@dataclass
class RoundRecord:
    """One round t of decoding one prompt with one method.

    Probabilities are the SLM's x_d and the LLM's y_d for the draft d; y_d and beta are NaN when the LLM did not
    score the round (a skipped round outside evaluation mode). Times in seconds: tau_slm_s / tau_llm_s are measured
    forward passes (wall), tau_up_s is the modelled uplink time of eq. 3 (zero when skipped), wall_s is the whole
    round on the wall clock (never including evaluation-only work).
    """

    method: str
    prompt_index: int
    round: int  # t, from 1
    draft: int  # d (for the LLM alone: the token it sampled)
    token: int  # r(t), the response token
    uncertainty: float  # u(t), NaN where not measured
    sent: bool  # delta(t)
    x_d: float
    y_d: float
    beta: float  # max(1 - y_d / x_d, 0)
    accepted: bool | None  # None: not verified
    resampled: bool | None  # "recovered" in vLLM's terms
    payload_bits: int
    catch_up_tokens: int  # tokens the LLM processed in this round's verification forward (1 = nothing skipped)
    fading_gain: float  # h(t), Exp(1) under Rayleigh fading
    snr_db: float
    tau_up_s: float
    tau_slm_s: float
    tau_uncertainty_s: float
    tau_llm_s: float
    wall_s: float
    verify_batch_size: int = 0  # requests in the verifier batch that scored this draft (0: not sent)
    verify_wall_s: float = 0.0  # the verification call's round trip (transport, batching wait, LLM forward)
    kept_tokens: int = 0  # tokens in the uploaded distribution (|V| for a full upload; 0: not sent)
    sync_bits: int = 0  # of payload_bits, the ids of skipped tokens the LLM catches up on
    compression: float = NAN  # 1 - distribution bits / full payload bits, of a sent round

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PromptResult:
    method: str
    prompt_index: int
    example_id: str
    reference: str
    response: str
    tokens: list[int]
    stop_reason: str  # "eos" or "max_new_tokens"
    prompt_tokens: int
    prefill_s: float  # SLM and LLM prompt prefill (wall), not part of any round
    records: list[RoundRecord] = field(default_factory=list)
    similarity: float = NAN
    device_index: int = 0  # the simulated device in a cell; 0 in single-device runs

    def to_dict(self) -> dict:
        out = asdict(self)
        out["records"] = [r.to_dict() for r in self.records]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> PromptResult:
        data = dict(data)
        data["records"] = [RoundRecord(**r) for r in data["records"]]
        return cls(**data)
