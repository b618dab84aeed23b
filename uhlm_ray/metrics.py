"""Metrics of a method's run, all computed from its PromptResults and RoundRecords.

Names follow vLLM's spec-decode metrics where they overlap: num_drafts (drafts sent for verification),
num_accepted_tokens, num_recovered_tokens (the paper's resampled tokens), acceptance_rate = accepted / drafts.

- transmission rate (TR): share of rounds whose draft was sent (delta = 1).
- true skip rate (TSR): the probability that a round whose draft would be accepted is skipped,
  sum_skipped (1 - beta) / sum_all (1 - beta), with 1 - beta = min(1, y_d / x_d) the chance the draft is accepted
  if sent (an expectation, so it needs y_d on every round: evaluation mode).
- skip precision: among skipped rounds, the expected share that would have been accepted.
- rejection risk: (1/T) sum over skipped rounds of beta(t), the rejections skipped per token; the empirical
  counterpart of eq. 12, which integrates beta = a u + b against the density of u over the skipped range.
- throughput on two clocks: modelled (eq. 4 with tau_SLM, tau_LLM and eq. 3's uplink time) and wall (the measured
  round times). Both count generation only: each prompt's prefill (time to first round) is reported apart.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

from uhlm_ray.config import ChannelConfig
from uhlm_ray.records import BlockRecord, PromptResult, RoundRecord
from uhlm_ray.snr import db_to_linear
from uhlm_ray.throughput import round_seconds, run_throughput
from uhlm_ray.uplink import reprice_results


@dataclass
class SpecDecodeStats:
    """Counts a speculative-decoding user expects, for the rounds of one method."""

    num_rounds: int = 0
    num_drafts: int = 0  # sent for verification
    num_accepted_tokens: int = 0
    num_recovered_tokens: int = 0  # rejected and resampled from norm(max(y - x, 0))
    num_skipped: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted_tokens / self.num_drafts if self.num_drafts else math.nan

    @classmethod
    def from_records(cls, records: list[RoundRecord]) -> SpecDecodeStats:
        stats = cls()
        for r in records:
            stats.num_rounds += 1
            stats.num_drafts += int(r.sent)
            stats.num_skipped += int(not r.sent)
            stats.num_accepted_tokens += int(bool(r.accepted))
            stats.num_recovered_tokens += int(bool(r.resampled))
        return stats


@dataclass(frozen=True)
class ModelledClock:
    """Per-token compute times for eq. 4, in seconds, and how a block round's LLM pass is priced.

    `llm_pass` "measured": a pass costs its measured time times `llm_scale` (tau_LLM over the measured one-token
    pass, 1 when tau_LLM is measured); "flat": tau_LLM per `flat_pass_tokens` tokens or fewer (a memory-bound GPU).
    """

    tau_slm: float
    tau_llm: float
    llm_pass: str = "measured"
    flat_pass_tokens: int = 16
    llm_scale: float = 1.0

    def llm_pass_seconds(self, *, measured_s: float, tokens: int) -> float:
        """A block round's LLM pass over `tokens` tokens on this clock."""
        if self.llm_pass == "flat":
            return self.tau_llm * math.ceil(tokens / self.flat_pass_tokens)
        return measured_s * self.llm_scale


def _llm_pass_tokens(record: RoundRecord | BlockRecord) -> int:
    return record.llm_pass_tokens if isinstance(record, BlockRecord) else record.catch_up_tokens


def measured_clock(records: list[RoundRecord | BlockRecord]) -> ModelledClock:
    """Median one-token forward times seen in these records.

    Round 1 is left out (its logits come from the prompt prefill) and so are the LLM's multi-token catch-ups, unless
    the records have no one-token LLM pass at all (a rarely-sending method run alone, as in a cell, or blocks
    alone): then the passes with the fewest tokens stand in, an upper bound on tau_LLM. A block round's SLM time
    is the sum of its n steps, so it counts as n steps of its mean.
    """
    slm: list[float] = []
    for r in records:
        if r.round > 1 and r.method != "llm":
            steps = len(r.drafts) if isinstance(r, BlockRecord) else 1
            slm += [r.tau_slm_s / steps] * steps
    passes = [r for r in records if _llm_pass_tokens(r) >= 1]
    fewest = min((_llm_pass_tokens(r) for r in passes), default=0)
    llm = [r.tau_llm_s for r in passes if _llm_pass_tokens(r) == fewest]
    return ModelledClock(
        tau_slm=statistics.median(slm) if slm else math.nan, tau_llm=statistics.median(llm) if llm else math.nan
    )


def overhead_share(records: list[RoundRecord]) -> float:
    """Share of the rounds' wall time not spent in model forward passes (sampling, verification, bookkeeping)."""
    wall = sum(r.wall_s for r in records)
    forward = sum(r.tau_slm_s + r.tau_llm_s for r in records)
    return (wall - forward) / wall if wall > 0 else math.nan


def modelled_seconds(*, record: RoundRecord | BlockRecord, clock: ModelledClock) -> float:
    """A round on the modelled clock: eq. 4's denominator. The LLM alone costs tau_LLM per token (no uplink).

    The uncertainty measure's measured time is added when the policy uses it (tau_uncertainty_s > 0): MC dropout and
    prompt perturbation cost K extra SLM passes; temperature perturbation's vectorised sampling costs milliseconds
    (the paper counts it as running in parallel with the forward pass). An upload that missed its deadline is
    charged the deadline. A block round costs n SLM steps, its upload and one LLM pass priced by `clock.llm_pass`.
    """
    if record.method == "llm":
        return clock.tau_llm
    lost = record.tau_up_s if record.deadline_fallback else 0.0
    if isinstance(record, BlockRecord):
        llm = clock.llm_pass_seconds(measured_s=record.tau_llm_s, tokens=record.llm_pass_tokens) if record.sent \
            else 0.0
        return len(record.drafts) * clock.tau_slm + record.tau_uncertainty_s + lost + \
            (record.tau_up_s + llm if record.sent else 0.0)
    return record.tau_uncertainty_s + lost + round_seconds(
        sent=record.sent, tau_slm=clock.tau_slm, tau_up=record.tau_up_s, tau_llm=clock.tau_llm)


def uplink_stats(records: list[RoundRecord | BlockRecord]) -> dict[str, float]:
    """Mean, median and p95 upload time (ms) over sent rounds: under eq. 3 the mean is infinite in expectation
    (it grows with the number of rounds), so the median and p95 say more."""
    ups = np.array([r.tau_up_s * 1e3 for r in records if r.sent])
    if not ups.size:
        return {"mean_uplink_ms": math.nan, "median_uplink_ms": math.nan, "p95_uplink_ms": math.nan}
    return {"mean_uplink_ms": float(ups.mean()), "median_uplink_ms": float(np.median(ups)),
            "p95_uplink_ms": float(np.percentile(ups, 95))}


def snr_sweep(*, results: list[PromptResult], clock: ModelledClock, channel: ChannelConfig, seed: int,
              snr_sweep_db: list[float]) -> dict[str, float]:
    """Modelled throughput at other average SNRs, every upload priced again with its own fading draws (Fig. 6)."""
    tokens = sum(len(res.tokens) for res in results)
    out = {}
    for snr_db in snr_sweep_db:
        repriced = reprice_results(results=results, channel=channel, mean_snr=db_to_linear(snr_db), seed=seed)
        seconds = sum(modelled_seconds(record=r, clock=clock) for res in repriced for r in res.records)
        out[f"throughput_modelled_snr_{snr_db:g}dB"] = run_throughput(tokens=tokens, seconds=seconds)
    return out


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def summarize(
    *, results: list[PromptResult], clock: ModelledClock, channel: ChannelConfig, seed: int,
    snr_sweep_db: list[float],
) -> dict[str, float]:
    """One flat dict of a method's metrics (MLflow-ready); `channel` and `seed` reprice uploads for the SNR sweep."""
    records = [r for res in results for r in res.records]
    if records and isinstance(records[0], BlockRecord):
        from uhlm_ray.block_metrics import summarize_blocks

        out = summarize_blocks(results=results, clock=clock)
        out.update(snr_sweep(results=results, clock=clock, channel=channel, seed=seed, snr_sweep_db=snr_sweep_db))
        return out
    stats = SpecDecodeStats.from_records(records)
    hybrid = bool(records) and records[0].method != "llm"
    tokens = len(records)

    accept_if_sent = [1.0 - r.beta for r in records if not math.isnan(r.beta)]
    skipped_accept = [1.0 - r.beta for r in records if not r.sent and not math.isnan(r.beta)]
    scored = len(accept_if_sent) == tokens and tokens > 0
    wall = sum(r.wall_s for r in records)  # generation only: prompt prefills are reported apart
    modelled = sum(modelled_seconds(record=r, clock=clock) for r in records)

    out = {
        "accuracy": _mean([res.similarity for res in results]),
        "num_prompts": len(results),
        "num_tokens": tokens,
        "transmission_rate": stats.num_drafts / tokens if hybrid and tokens else math.nan,
        "true_skip_rate": (sum(skipped_accept) / sum(accept_if_sent)) if hybrid and scored else math.nan,
        "skip_precision": _mean(skipped_accept) if hybrid else math.nan,
        "rejection_risk": (sum(r.beta for r in records if not r.sent) / tokens) if hybrid and scored else math.nan,
        "mean_uncertainty": _mean([r.uncertainty for r in records]),
        "acceptance_rate": stats.acceptance_rate,
        "num_drafts": stats.num_drafts,
        "num_accepted_tokens": stats.num_accepted_tokens,
        "num_recovered_tokens": stats.num_recovered_tokens,
        "num_skipped": stats.num_skipped if hybrid else 0,
        "mean_catch_up_tokens": _mean([float(r.catch_up_tokens) for r in records if r.sent]),
        "throughput_modelled": run_throughput(tokens=tokens, seconds=modelled),
        "throughput_wall": run_throughput(tokens=tokens, seconds=wall),
        "tau_slm_ms": clock.tau_slm * 1e3,
        "tau_llm_ms": clock.tau_llm * 1e3,
        **uplink_stats(records),
        "uploads_per_token": stats.num_drafts / tokens if hybrid and tokens else math.nan,
        "bits_per_token": sum(r.payload_bits for r in records) / tokens if hybrid and tokens else math.nan,
        "deadline_fallbacks": float(sum(r.deadline_fallback for r in records)),
        "exact": float(not hybrid or stats.num_skipped == 0),  # every token verified (or the LLM's own)
        # the uncertainty measure's time per round when the policy uses it (on both clocks), else 0
        "mean_uncertainty_ms": _mean([r.tau_uncertainty_s * 1e3 for r in records]) if hybrid else math.nan,
        "mean_payload_bits": _mean([float(r.payload_bits) for r in records if r.sent]),
        # CU-HLM's vocabulary compression: 1 - the upload's distribution bits / a full upload's, over sent rounds
        "compression_rate": _mean([r.compression for r in records if r.sent]) if hybrid else math.nan,
        "mean_kept_tokens": _mean([float(r.kept_tokens) for r in records if r.sent]) if hybrid else math.nan,
        "mean_sync_bits": _mean([float(r.sync_bits) for r in records if r.sent]) if hybrid else math.nan,
        "wall_s": wall,
        "mean_prefill_s": _mean([res.prefill_s for res in results]),
        "modelled_s": modelled,
        "round_overhead_share": overhead_share(records),
    }
    out.update(snr_sweep(results=results, clock=clock, channel=channel, seed=seed, snr_sweep_db=snr_sweep_db))
    return out
