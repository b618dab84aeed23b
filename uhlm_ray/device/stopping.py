"""When the SLM stops drafting a block and uploads it: pluggable stopping rules (in the spirit of vLLM's draft-length
policies and Hugging Face's assistant stopping criteria).

Each round the device tells its rule what the round's upload would cost (`begin_round`), then after each draft asks
`go_on(step, block)`; the block so far (this draft included) is `block`. The device itself caps a block at
`block.max_drafts` and stops at an end-of-sequence draft or the token budget, so a rule only says whether one more
draft is worth it. After the verdict the device calls `observe`, which lets a rule re-fit itself online. No rule
can change what the verifier emits: the output stays exact whatever the block length, since the length is decided
from the SLM's side alone.

- `FixedLength`: n drafts.
- `UncertaintyStop`: go on while the draft's uncertainty u <= u_th (U-HLM's measure and threshold, eq. 8, read as
  "confident enough to build on"): a block ends with the first draft the SLM is unsure of.
- `ConfidenceStop`: Hugging Face's assistant confidence stop, go on while x_d >= the threshold; re-fit online on the
  verdicts by the ROC rule of `AssistedCandidateGenerator` (false negatives cost three times false positives).
- `ChannelAwareStop`: go on while one more draft raises the round's expected tokens per second. With estimated
  acceptances a_i, the block of k drafts yields E_k = 1 + sum_j prod_{i<=j} a_i tokens in C_k = k (tau_SLM + tau_u) +
  tau_up(k) + tau_LLM(pass of k drafts) + tau_down(k) seconds on the device's decode-time clock (`DecodeClock`: the
  configured `clock.tau_*_ms`, else the paper's taus; tau_u is the per-draft uncertainty measurement, K extra SLM
  passes under MC dropout or prompt perturbation; the pass costs tau_LLM per `clock.flat_pass_tokens` tokens under
  `clock.llm_pass=flat`, one tau_LLM otherwise; tau_down(k) is the answer on the downlink, the block's verdict and the
  LLM's own token, when `downlink.enabled`); one more draft adds prod_{i<=k} a_i * a_k tokens for C_{k+1} - C_k
  seconds, and is worth it when that marginal rate beats E_k / C_k. A costlier upload (deep fade, slow link,
  per-upload overhead) raises C_k and so lengthens blocks; a pass whose cost grows with its length (a compute-bound
  CPU, `clock.flat_pass_tokens=1`), or a costly measure, shortens them. Acceptances come from U-HLM's linear fit 1 -
  (a u + b) (Theorem 1), re-fitted online per uncertainty bin on verified drafts only (a draft committed unverified is
  kept without a test, which says nothing of its acceptance; it counts as kept, a_i = 1, in E_k). The costs are never
  measured while decoding, so the tokens are the same from run to run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from uhlm_ray.config import EvaluateConfig
from uhlm_ray.link.fading import DecodeClock
from uhlm_ray.validation import ConfigError


@dataclass(frozen=True)
class DraftStep:
    """What the device knows of one draft when it decides whether to draft another."""

    uncertainty: float  # u, NaN when not measured
    x_d: float  # the draft's probability under what it was drawn from
    tau_slm_s: float = 0.0  # the SLM step that produced it
    tau_uncertainty_s: float = 0.0  # its uncertainty measurement (MC dropout, paraphrases: K extra SLM passes)
    verified: bool = True  # False: committed without a test (lossy, block.skip_u_th): no verdict judges it


UploadSeconds = Callable[[int], float]  # expected upload time of a block of k drafts, this round


class StopRule(Protocol):
    needs_uncertainty: bool

    def begin_round(self, *, catch_up: int, upload_s: UploadSeconds) -> None: ...

    def go_on(self, *, step: DraftStep, block: list[DraftStep]) -> bool: ...

    def observe(self, *, block: list[DraftStep], num_accepted: int) -> None: ...


class _Unlearning:
    """A rule that neither prices the round nor learns from verdicts."""

    def begin_round(self, *, catch_up: int, upload_s: UploadSeconds) -> None:
        pass

    def observe(self, *, block: list[DraftStep], num_accepted: int) -> None:
        pass


@dataclass
class FixedLength(_Unlearning):
    drafts: int
    needs_uncertainty: bool = False

    def go_on(self, *, step: DraftStep, block: list[DraftStep]) -> bool:
        return len(block) < self.drafts


@dataclass
class UncertaintyStop(_Unlearning):
    u_th: float
    needs_uncertainty: bool = True

    def go_on(self, *, step: DraftStep, block: list[DraftStep]) -> bool:
        return step.uncertainty <= self.u_th


@dataclass
class ConfidenceStop(_Unlearning):
    """Hugging Face's `assistant_confidence_threshold` with its online re-fit (transformers' candidate_generator):
    every verified draft is a labelled sample (its x_d, accepted or not; drafts after the first rejection were never
    judged and are dropped), and once there are more than 5 with both labels the threshold moves to the ROC point
    that minimises fpr + 3 fnr."""

    threshold: float
    refit: bool = True
    needs_uncertainty: bool = False
    probs: list[float] = field(default_factory=list)
    matches: list[int] = field(default_factory=list)

    def go_on(self, *, step: DraftStep, block: list[DraftStep]) -> bool:
        return step.x_d >= self.threshold

    def observe(self, *, block: list[DraftStep], num_accepted: int) -> None:
        if not self.refit:
            return
        # the accepted drafts and the first rejected one; a draft committed unverified (lossy) was not judged
        judged = [(s, i < num_accepted) for i, s in enumerate(block[:num_accepted + 1]) if s.verified]
        self.probs += [s.x_d for s, _ in judged]
        self.matches += [int(kept) for _, kept in judged]
        if len(self.probs) > 5 and 0 in self.matches and 1 in self.matches:
            from sklearn.metrics import roc_curve

            fpr, tpr, thresholds = roc_curve(self.matches, self.probs)
            self.threshold = float(min(thresholds[int(np.argmin(fpr + 3 * (1 - tpr)))], 1.0))


@dataclass
class AcceptanceModel:
    """Estimated acceptance of a draft from its uncertainty: U-HLM's line 1 - (a u + b) as a prior in each of
    `bins` bins of u, worth `prior_weight` verdicts, updated with every verdict (an online re-fit)."""

    fit_a: float
    fit_b: float
    bins: int = 10
    prior_weight: float = 4.0
    accepted: np.ndarray = field(init=False)
    seen: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.accepted = np.zeros(self.bins)
        self.seen = np.zeros(self.bins)

    def _bin(self, u: float) -> int:
        return min(int(u * self.bins), self.bins - 1)

    def estimate(self, u: float) -> float:
        b = self._bin(u)
        prior = float(np.clip(1.0 - (self.fit_a * (b + 0.5) / self.bins + self.fit_b), 0.01, 0.99))
        return float((prior * self.prior_weight + self.accepted[b]) / (self.prior_weight + self.seen[b]))

    def update(self, u: float, accepted: bool) -> None:
        self.seen[self._bin(u)] += 1
        self.accepted[self._bin(u)] += float(accepted)


@dataclass
class ChannelAwareStop:
    """The marginal-rate rule priced on the device's decode-time clock (`DecodeClock`: the configured taus, else the
    paper's), never on wall time, so a block's length, and the fading every later upload reads, is the same in
    every run of the same command."""

    clock: DecodeClock
    acceptance: AcceptanceModel
    upload_s: UploadSeconds = lambda k: 0.0
    catch_up: int = 1  # tokens the LLM pass holds besides the drafts
    needs_uncertainty: bool = True

    def begin_round(self, *, catch_up: int, upload_s: UploadSeconds) -> None:
        self.catch_up, self.upload_s = catch_up, upload_s

    def expected_tokens(self, block: list[DraftStep]) -> tuple[float, float]:
        """(E_k, prod a_i) for the block so far."""
        tokens, alive = 1.0, 1.0
        for step in block:
            alive *= self.acceptance.estimate(step.uncertainty) if step.verified else 1.0  # unverified: kept
            tokens += alive
        return tokens, alive

    def round_seconds(self, drafts: int) -> float:
        """C_k: k drafts (an SLM step and its uncertainty measurement each), the upload, the LLM's pass and the
        answer on the downlink."""
        draft_s = self.clock.tau_slm_s + self.clock.tau_measure_s
        return drafts * draft_s + self.upload_s(drafts) + self.clock.llm_pass_seconds(self.catch_up + drafts) + \
            self.clock.block_answer_seconds(drafts)

    def go_on(self, *, step: DraftStep, block: list[DraftStep]) -> bool:
        k = len(block)
        tokens, alive = self.expected_tokens(block)
        seconds = self.round_seconds(k)
        if not math.isfinite(seconds):
            return True  # an upload that cannot finish now: keep drafting while the block may grow
        gain = alive * self.acceptance.estimate(step.uncertainty)  # the next draft's acceptance ~ this one's
        return bool(gain * seconds > tokens * (self.round_seconds(k + 1) - seconds))

    def observe(self, *, block: list[DraftStep], num_accepted: int) -> None:
        for i, step in enumerate(block[:num_accepted + 1]):
            if step.verified:  # a draft committed without a test is no evidence of acceptance
                self.acceptance.update(step.uncertainty, i < num_accepted)


def make_stop_rule(*, cfg: EvaluateConfig, vocab_size: int, fixed_drafts: int | None = None) -> StopRule:
    """The configured rule, fresh (rules that re-fit keep state per prompt, as Hugging Face's do per call);
    `vocab_size` prices the downlink's answer for the channel-aware rule; `fixed_drafts`, a device's own length
    for block.stop=fixed (a cell's Multi-SPIN plan, uhlm_ray/draft_control.py), else block.fixed_drafts."""
    block = cfg.block
    if block.stop == "fixed":
        return FixedLength(drafts=block.fixed_drafts if fixed_drafts is None else fixed_drafts)
    if block.stop == "uncertainty":
        return UncertaintyStop(u_th=block.stop_u_th)
    if block.stop == "confidence":
        return ConfidenceStop(threshold=block.confidence_threshold, refit=block.confidence_refit)
    if block.stop == "channel_aware":
        return ChannelAwareStop(clock=DecodeClock.for_run(cfg, measure=cfg.uncertainty.measure, vocab_size=vocab_size),
                                acceptance=AcceptanceModel(fit_a=cfg.policy.fit_a, fit_b=cfg.policy.fit_b))
    raise ConfigError(f"block.stop={block.stop!r} is not a stopping rule")
