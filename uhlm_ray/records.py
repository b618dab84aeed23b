"""What every round leaves behind, and what a prompt's run leaves behind. All metrics are functions of these.

The paper's methods leave one `RoundRecord` per response token (one draft a round); the block method leaves one
`BlockRecord` per round, which holds several drafts and emits several tokens.
"""

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
    verify_replica: str = ""  # the Serve replica that verified it ("" in process or not sent)
    kept_tokens: int = 0  # tokens in the uploaded distribution (|V| for a full upload; 0: not sent)
    sync_bits: int = 0  # of payload_bits, the ids of skipped tokens the LLM catches up on
    compression: float = NAN  # 1 - distribution bits / full payload bits, of a sent round
    upload_attempts: int = 0  # transmissions the upload took (ARQ), or fading blocks waited through plus one
    deadline_fallback: bool = False  # the upload missed channel.deadline_ms; the draft was kept unverified (lossy)
    tau_air_s: float = 0.0  # of tau_up_s, the seconds the radio transmitted (the radio's energy; channel.Upload.air_s)
    # modelled time (s since the prompt's first round began) the round decided to upload and read h(t) from
    up_start_s: float = 0.0
    # decode.sampling=coupled: the LLM's race winner at this position after this response's prefix (the verifier's
    # token when sent; from the evaluation score when skipped); -1 where unknown. A skipped draft != it is a token
    # the LLM alone would not have emitted here.
    llm_token: int = -1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BlockRecord:
    """One round of the block method: n drafts, at most one upload, one LLM pass, a + 1 tokens.

    Per-draft lists have n entries, in drafting order. y_d and accept_prob come from the LLM's pass (NaN when the
    block was not uploaded); a draft after the first rejection has a y_d in a context that was discarded.
    Times in seconds: tau_slm_s sums the round's n SLM steps, tau_llm_s is the measured LLM pass over
    `llm_pass_tokens` tokens (catch-up plus drafts), tau_up_s the modelled upload (0 when not uploaded).
    """

    method: str
    prompt_index: int
    round: int  # r, from 1
    position: int  # index (from 1) of the round's first response token
    drafts: list[int]
    uncertainty: list[float]  # u of each draft, NaN where the stop rule and the skip did not need it
    x_d: list[float]  # each draft's probability under what it was drawn from (x, or x~ when truncating)
    verified: list[bool]  # False: committed without verification (block.skip_u_th, lossy)
    sent: bool  # the block was uploaded and verified
    tokens: list[int]  # the round's response tokens: the kept drafts, then the recovered or bonus token
    num_accepted: int  # a, the leading drafts kept
    recovered: bool
    bonus: bool
    y_d: list[float]
    accept_prob: list[float]  # min(1, y_d / x_d), or y_d for an ids upload (a point mass)
    payload_bits: int  # the whole upload: the drafts, their distributions when sent, sync ids
    sync_bits: int
    kept_tokens: int  # entries of the uploaded distributions, over the block
    fading_gain: float
    snr_db: float
    upload_attempts: int
    deadline_fallback: bool  # the upload missed channel.deadline_ms; the drafts were kept unverified (lossy)
    tau_up_s: float
    tau_slm_s: float
    tau_uncertainty_s: float
    tau_llm_s: float
    llm_pass_tokens: int
    wall_s: float
    verify_batch_size: int = 0
    verify_wall_s: float = 0.0
    verify_replica: str = ""
    tau_air_s: float = 0.0  # of tau_up_s, the seconds the radio transmitted (channel.Upload.air_s)
    up_start_s: float = 0.0  # modelled time the block decided to upload (see RoundRecord.up_start_s)
    # decode.sampling=coupled: the LLM's race winner at each committed draft's position (-1: unknown or not committed)
    llm_tokens: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def record_from_dict(data: dict) -> RoundRecord | BlockRecord:
    return BlockRecord(**data) if "drafts" in data else RoundRecord(**data)


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
    records: list[RoundRecord] | list[BlockRecord] = field(default_factory=list)
    similarity: float = NAN
    device_index: int = 0  # the simulated device in a cell; 0 in single-device runs
    batch_size: int = 1  # the lockstep's width: prompts decoding at once (its tokens do not depend on it)
    # this prompt's part of its batch's decoding time, prefill and scoring included: each stretch between two
    # finishes is split equally among the prompts still decoding, so the parts add up to the batch's wall time;
    # NaN in stores written before it
    decode_s: float = NAN

    def to_dict(self) -> dict:
        out = asdict(self)
        out["records"] = [r.to_dict() for r in self.records]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> PromptResult:
        data = dict(data)
        data["records"] = [record_from_dict(r) for r in data["records"]]
        return cls(**data)


# what a record holds that depends on the machine's clock or on the batch it was decoded in, not on its draws
TIMING_FIELDS = frozenset({"tau_slm_s", "tau_llm_s", "tau_uncertainty_s", "wall_s", "verify_wall_s",
                           "verify_batch_size", "verify_replica"})


def record_outcome(records: list[RoundRecord] | list[BlockRecord]) -> list[dict]:
    """What a prompt's keyed draws decided, round by round: its records without `TIMING_FIELDS` (NaN written as
    "nan", since NaN != NaN, also after a round trip through JSON)."""

    def same(value: object) -> object:
        return "nan" if isinstance(value, float) and math.isnan(value) else value

    return [{k: same(v) for k, v in asdict(r).items() if k not in TIMING_FIELDS} for r in records]


def drawn_outcome(results: list[PromptResult]) -> list[tuple]:
    """Each prompt's tokens, stop reason and `record_outcome`: equal at any batch size."""
    return [(res.tokens, res.stop_reason, record_outcome(res.records)) for res in results]
