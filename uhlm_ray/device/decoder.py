"""The device's side of a hybrid round (the U-HLM paper's Step 1 and the bookkeeping of Step 3).

A `DeviceDecoder` decodes one prompt with one method on one (simulated) device. Each round it takes the SLM's
logits z, draws the draft d ~ x (CU-HLM: d ~ x~, the truncated x it would upload), measures u(t), draws the round's
fading, prices the upload (the distribution plus the ids of the tokens skipped since the last upload), asks its
policy whether to send, and, when it sends, builds the `VerifyRequest` (the draft, x or x~, and every response token
the LLM has not seen yet). `commit` turns the round into a RoundRecord. Evaluation mode asks the verifier to score
the caught-up tokens as well, so a skipped round's y_d arrives with the next catch-up (or with the final `score`
call) at no extra forward pass.

It holds no model and no transport: the caller runs the SLM forward (alone or batched over devices) and delivers
requests to a `Verifier` in-process or through Ray Serve.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from uhlm_ray.config import EvaluateConfig
from uhlm_ray.device.policies import ChannelAwareThreshold, SkipPolicy
from uhlm_ray.device.uncertainty import (
    confidence_uncertainty,
    draw_temperatures,
    entropy_uncertainty,
    sample_disagreement,
    temperature_perturbation,
)
from uhlm_ray.link.channel import expected_upload_seconds, upload
from uhlm_ray.link.fading import DecodeClock, process_for
from uhlm_ray.link.payload import (
    Truncated,
    full_payload_bits,
    index_bits,
    quantise,
    sync_bits,
    truncate,
    truncated_payload_bits,
)
from uhlm_ray.protocol import VerifyRequest, VerifyResult
from uhlm_ray.records import NAN, RoundRecord
from uhlm_ray.sampling.coupling import race_winner
from uhlm_ray.sampling.rng import Purpose, SessionKey
from uhlm_ray.sampling.verify import rejection_probability, sample_inverse_cdf
from uhlm_ray.snr import linear_to_db
from uhlm_ray.validation import ConfigError

PerturbedLogits = Callable[[np.random.Generator], torch.Tensor]  # rng -> [K, V] logits of K perturbed passes


def method_measure(*, method: str, cfg: EvaluateConfig) -> str:
    """The uncertainty a method measures: CU-HLM its own cheap one, every other method the configured one."""
    return cfg.cu_hlm.measure if method == "cu_hlm" else cfg.uncertainty.measure


def measure_uncertainty(
    *,
    logits: torch.Tensor,
    probs: torch.Tensor,
    draft: int,
    cfg: EvaluateConfig,
    rng: np.random.Generator,
    perturbed: PerturbedLogits | None = None,
    measure: str | None = None,
) -> float:
    """u(t) by `measure` (default: the configured one), from the logits z [V] and x [V] that produced the draft.

    MC dropout and prompt perturbation need K extra SLM passes, which the caller supplies as `perturbed`; eq. 7's
    disagreement is then counted over one sample from each pass.
    """
    measure = measure or cfg.uncertainty.measure
    if measure in ("mc_dropout", "prompt_perturbation"):
        if perturbed is None:
            raise ConfigError(f"uncertainty.measure={measure!r} needs the model's perturbed passes")
        z_k = perturbed(rng)  # [K, V]
        uniforms = torch.from_numpy(rng.random(size=z_k.shape[0]))  # [K]
        return sample_disagreement(probs=torch.softmax(z_k.float(), dim=-1), draft=draft, uniforms=uniforms)
    if measure == "entropy":
        return float(entropy_uncertainty(probs=probs.unsqueeze(0))[0])
    if measure == "confidence":
        return float(confidence_uncertainty(probs=probs.unsqueeze(0))[0])
    thetas = draw_temperatures(rng=rng, k=cfg.uncertainty.k, theta_max=cfg.uncertainty.theta_max)  # [1, K]
    uniforms = rng.random(size=thetas.shape)  # [1, K]
    u = temperature_perturbation(
        logits=logits.unsqueeze(0),
        draft=torch.tensor([draft]),
        thetas=torch.from_numpy(thetas),
        uniforms=torch.from_numpy(uniforms),
    )
    return float(u[0])


def keyed_uniform(*, key: SessionKey, round_index: int, purpose: Purpose, offset: int | None = None) -> torch.Tensor:
    """[1] float64: one keyed uniform in [0, 1), not rounded to float32 (which would make some of them 1.0)."""
    return torch.tensor([key.uniform(round_index=round_index, purpose=purpose, offset=offset)], dtype=torch.float64)


@dataclass
class Draft:
    """Step 1 of a round, before the LLM answers."""

    round_index: int
    draft: int
    probs: torch.Tensor  # [V] float32: what d was drawn from, x (or x~ when truncating) as its upload stands for it
    uncertainty: float
    sent: bool
    fading_gain: float
    snr: float  # linear, this round
    tau_slm_s: float
    tau_uncertainty_s: float  # on the clocks only when the policy uses u
    eval_s: float  # evaluation-only seconds spent in Step 1
    distribution_bits: int  # the upload's distribution and draft index (full or truncated)
    sync_bits: int  # the ids of the tokens skipped since the last upload
    kept_tokens: int  # tokens in the uploaded distribution
    upload_s: float  # the channel model's time for distribution_bits + sync_bits (eq. 3 in the paper's mode)
    upload_attempts: int
    deadline_fallback: bool  # the policy sent, the upload missed its deadline: the draft is kept unverified
    upload_air_s: float = 0.0  # of upload_s, the seconds the radio transmits
    sent_probs: torch.Tensor | None = None  # [V] the uploaded values in payload.prob_dtype (None: `probs` itself)
    upload_start_s: float = 0.0  # modelled time of the upload decision (the decode-time clock, link/fading.py)


class DeviceDecoder:
    """One prompt, one method, one device; the LLM-alone reference is not a device method (see decode.py)."""

    def __init__(
        self,
        *,
        key: SessionKey,
        method: str,
        cfg: EvaluateConfig,
        policy: SkipPolicy,
        mean_snr: float,
        vocab_size: int,
        eos_token_ids: frozenset[int],
        evaluate: bool,
        support: int | None = None,
    ) -> None:
        self.key, self.method, self.cfg, self.policy = key, method, cfg, policy
        self.mean_snr = mean_snr
        self.eos_token_ids = eos_token_ids
        self.evaluate = evaluate
        self.vocab_size = vocab_size
        self.support = vocab_size if support is None else support  # ids the SLM can draft: a dense upload's length
        self.measure = method_measure(method=method, cfg=cfg)
        self.coupled = cfg.decode.sampling == "coupled"
        self.truncation = cfg.cu_hlm if method == "cu_hlm" and cfg.cu_hlm.truncation != "none" else None
        self.full_bits = full_payload_bits(vocab_size=vocab_size, cfg=cfg.payload, support=self.support)
        self.tokens: list[int] = []
        self.records: list[RoundRecord] = []
        self.llm_seen = 0  # response tokens the verifier has processed (or been sent)
        self.uploaded = False  # a round has been sent
        self.stop_reason: str | None = None
        # the device's fading process in time (None: per_round or no fading) and its decode-time modelled clock
        self.process = process_for(channel=cfg.channel, key=key)
        self.decode_clock = DecodeClock.for_run(cfg, measure=self.measure, vocab_size=vocab_size)
        self.now_s = 0.0  # modelled time the next round starts

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    @property
    def next_round(self) -> int:
        return len(self.tokens) + 1

    def draft(self, *, logits: torch.Tensor, tau_slm_s: float, perturbed: PerturbedLogits | None = None) -> Draft:
        """Step 1 from the SLM's logits z [V] (float32): d ~ x, u(t), delta(t), the round's fading."""
        t, key = self.next_round, self.key
        x = torch.softmax(logits, dim=-1)  # [V] eq. 1
        # CU-HLM drafts from the distribution it would upload, so a verified draft stays exact
        truncated: Truncated | None = None
        if self.truncation is not None:
            truncated = truncate(probs=x, truncation=self.truncation.truncation, top_k=self.truncation.top_k,
                                 top_p=self.truncation.top_p)
        # what goes up, rounded to payload.prob_dtype, and the distribution those values stand for: the draft is drawn
        # from that, so verification against the upload stays exact (a coupled round uploads the id alone)
        upload_values = quantise(probs=truncated.probs if truncated is not None else x,
                                 dtype="float32" if self.coupled else self.cfg.payload.dtype)
        if truncated is not None and upload_values.sent is not truncated.probs:  # tokens that underflowed go unsent
            truncated = replace(truncated, probs=upload_values.probs,
                                kept=int(torch.count_nonzero(upload_values.sent)))
        draft_probs = upload_values.probs  # [V] float32
        if self.coupled:  # the race on the noise the verifier shares: t is the response position
            draft = race_winner(probs=draft_probs, key=key, position=t)
        else:
            draft = int(sample_inverse_cdf(probs=draft_probs.unsqueeze(0),
                                           uniform=keyed_uniform(key=key, round_index=t, purpose=Purpose.DRAFT))[0])
        # u(t) is recorded for every method (Fig. 3 and 5 need it) but is on the clocks only for policies using it
        start = time.perf_counter()
        u = measure_uncertainty(logits=logits, probs=x, draft=draft, cfg=self.cfg, measure=self.measure,
                                rng=key.rng(round_index=t, purpose=Purpose.TEMPERATURES), perturbed=perturbed)
        spent = time.perf_counter() - start
        tau_u, eval_s = (spent, 0.0) if self.policy.needs_uncertainty else (0.0, spent)
        if self.coupled:  # the verifier needs the draft's id only
            dist_bits = index_bits(vocab_size=self.vocab_size)
        elif truncated is None:
            dist_bits = self.full_bits
        else:
            dist_bits = truncated_payload_bits(kept=truncated.kept, vocab_size=self.vocab_size, cfg=self.cfg.payload,
                                               support=self.support)
        # the LLM chose the response token of the last sent round itself; every later token was a skipped draft
        skipped = len(self.tokens) - self.llm_seen - (1 if self.uploaded else 0)
        sync = sync_bits(skipped_tokens=skipped, vocab_size=self.vocab_size) if self.cfg.payload.sync_token_ids else 0
        channel = self.cfg.channel
        # the upload is decided after the SLM step and u (the decode-time clock): h is read from then on
        start_s = self.now_s + self.decode_clock.decision_seconds(steps=1, measured_s=tau_u)
        # the round's keyed fading (per_round: its first draw is h(t)), whatever the policy decides
        up = upload(bits=dist_bits + sync, channel=channel, mean_snr=self.mean_snr,
                    rng=key.rng(round_index=t, purpose=Purpose.FADING), process=self.process, start_s=start_s)
        upload_s = mean_upload_s = 0.0
        if isinstance(self.policy, ChannelAwareThreshold):  # the only policy that prices the upload
            upload_s = expected_upload_seconds(bits=dist_bits + sync, channel=channel, mean_snr=self.mean_snr,
                                               gain=up.gain, start_s=start_s)
            mean_upload_s = expected_upload_seconds(bits=dist_bits + sync, channel=channel, mean_snr=self.mean_snr)
            # a sent round also waits for its answer on the downlink: the link's time both ways
            answer_s = self.decode_clock.draft_answer_seconds()
            upload_s, mean_upload_s = upload_s + answer_s, mean_upload_s + answer_s
        sent = self.policy.should_send(uncertainty=u, rng=key.rng(round_index=t, purpose=Purpose.POLICY),
                                       upload_s=upload_s, mean_upload_s=mean_upload_s)
        return Draft(round_index=t, draft=draft, probs=draft_probs, uncertainty=u, sent=sent and up.delivered,
                     fading_gain=up.gain, snr=self.mean_snr * up.gain, tau_slm_s=tau_slm_s, tau_uncertainty_s=tau_u,
                     eval_s=eval_s, distribution_bits=dist_bits, sync_bits=sync,
                     kept_tokens=truncated.kept if truncated is not None else self.support, upload_s=up.seconds,
                     upload_attempts=up.attempts, deadline_fallback=sent and not up.delivered,
                     upload_air_s=up.air_s, sent_probs=upload_values.sent, upload_start_s=start_s)

    def request(self, *, session_id: str, draft: Draft) -> VerifyRequest:
        """Step 2's upload: the draft, x, and the response tokens the LLM has not seen yet."""
        return VerifyRequest(session_id=session_id, round_index=draft.round_index, draft=draft.draft,
                             new_tokens=self.tokens[self.llm_seen:],
                             draft_probs=None if self.coupled else
                             draft.sent_probs if draft.sent_probs is not None else draft.probs,
                             score=self.evaluate, coupled=self.coupled)

    def commit(self, *, draft: Draft, result: VerifyResult | None, wall_s: float) -> RoundRecord:
        """Step 3: the response token is final; one RoundRecord for the round.

        `wall_s` is the round's measured wall time; evaluation-only seconds are taken out here.
        """
        x_d = float(draft.probs[draft.draft])
        record = RoundRecord(
            method=self.method, prompt_index=self.key.prompt, round=draft.round_index, draft=draft.draft,
            token=draft.draft, uncertainty=draft.uncertainty, sent=draft.sent, x_d=x_d, y_d=NAN, beta=NAN,
            accepted=None, resampled=None, payload_bits=draft.distribution_bits + draft.sync_bits if draft.sent else 0,
            catch_up_tokens=0, fading_gain=draft.fading_gain, snr_db=linear_to_db(draft.snr),
            tau_up_s=draft.upload_s if draft.sent or draft.deadline_fallback else 0.0,
            tau_air_s=draft.upload_air_s if draft.sent or draft.deadline_fallback else 0.0,
            upload_attempts=draft.upload_attempts if draft.sent or draft.deadline_fallback else 0,
            deadline_fallback=draft.deadline_fallback, up_start_s=draft.upload_start_s,
            tau_slm_s=draft.tau_slm_s, tau_uncertainty_s=draft.tau_uncertainty_s, tau_llm_s=0.0,
            wall_s=wall_s - draft.eval_s - (result.scoring_s if result is not None else 0.0),
        )
        # the next round starts when this one ends on the decode-time clock (eq. 4's round, as measures/clock.py has it)
        self.now_s += self.decode_clock.round_seconds(record)
        if draft.sent:
            self.uploaded = True
            record.sync_bits, record.kept_tokens = draft.sync_bits, draft.kept_tokens
            record.compression = 1.0 - draft.distribution_bits / self.full_bits
        if result is not None:
            self._fill_scores(probs=result.new_token_probs, winners=result.new_token_winners)
            self.llm_seen = len(self.tokens)
            record.token, record.accepted, record.resampled = result.token, result.accepted, result.resampled
            record.y_d, record.beta = result.y_d, result.beta
            if self.coupled:  # the verifier saw no x: the rejection probability of eq. 5 is the device's to compute
                record.beta = float(rejection_probability(x_d=torch.tensor([x_d]), y_d=torch.tensor([result.y_d]))[0])
                record.llm_token = result.token  # the LLM's race winner, which it emitted
            record.tau_llm_s, record.catch_up_tokens = result.tau_llm_s, result.catch_up_tokens
            record.verify_batch_size, record.verify_replica = result.batch_size, result.replica
        self.records.append(record)
        self.tokens.append(record.token)
        if record.token in self.eos_token_ids:
            self.stop_reason = "eos"
        elif len(self.tokens) >= self.cfg.decode.max_new_tokens:
            self.stop_reason = "max_new_tokens"
        return record

    def unscored_tokens(self) -> list[int]:
        """Response tokens the LLM has not processed: evaluation mode scores them once the prompt is done."""
        return self.tokens[self.llm_seen:]

    def finish_scoring(self, *, probs: list[float], winners: list[int]) -> None:
        self._fill_scores(probs=probs, winners=winners)
        self.llm_seen = len(self.tokens)

    def _fill_scores(self, *, probs: list[float], winners: list[int]) -> None:
        """y of the tokens from index llm_seen on; a skipped round's token is its draft, so that is its y_d.
        `winners` (coupled sampling): the LLM's race winner at each of those positions."""
        for offset, winner in enumerate(winners):
            record = self.records[self.llm_seen + offset]
            if not record.sent:
                record.llm_token = winner
        for offset, y in enumerate(probs):
            record = self.records[self.llm_seen + offset]
            if not record.sent and not math.isnan(y):
                record.y_d = y
                record.beta = float(rejection_probability(x_d=torch.tensor([record.x_d]), y_d=torch.tensor([y]))[0])
