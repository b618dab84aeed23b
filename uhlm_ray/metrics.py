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

from uhlm_ray.channel import db_to_linear
from uhlm_ray.records import PromptResult, RoundRecord
from uhlm_ray.throughput import round_seconds, run_throughput


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
    """Per-token compute times for eq. 4, in seconds."""

    tau_slm: float
    tau_llm: float


def measured_clock(records: list[RoundRecord]) -> ModelledClock:
    """Median one-token forward times seen in these records.

    Round 1 is left out (its logits come from the prompt prefill) and so are the LLM's multi-token catch-ups, unless
    the records have no one-token LLM pass at all (a rarely-sending method run alone, as in a cell): then the passes
    with the fewest catch-up tokens stand in, an upper bound on tau_LLM.
    """
    slm = [r.tau_slm_s for r in records if r.round > 1 and r.method != "llm"]
    passes = [r for r in records if r.catch_up_tokens >= 1]
    fewest = min((r.catch_up_tokens for r in passes), default=0)
    llm = [r.tau_llm_s for r in passes if r.catch_up_tokens == fewest]
    return ModelledClock(
        tau_slm=statistics.median(slm) if slm else math.nan, tau_llm=statistics.median(llm) if llm else math.nan
    )


def overhead_share(records: list[RoundRecord]) -> float:
    """Share of the rounds' wall time not spent in model forward passes (sampling, verification, bookkeeping)."""
    wall = sum(r.wall_s for r in records)
    forward = sum(r.tau_slm_s + r.tau_llm_s for r in records)
    return (wall - forward) / wall if wall > 0 else math.nan


def modelled_seconds(*, record: RoundRecord, clock: ModelledClock, uplink_scale: float = 1.0) -> float:
    """A round on the modelled clock: eq. 4's denominator. The LLM alone costs tau_LLM per token (no uplink).

    The uncertainty measure's measured time is added when the policy uses it (tau_uncertainty_s > 0): MC dropout and
    prompt perturbation cost K extra SLM passes; temperature perturbation's vectorised sampling costs milliseconds
    (the paper counts it as running in parallel with the forward pass). `uplink_scale` rescales the round's uplink
    time for another average SNR with the same fading draw.
    """
    if record.method == "llm":
        return clock.tau_llm
    return record.tau_uncertainty_s + round_seconds(
        sent=record.sent, tau_slm=clock.tau_slm, tau_up=record.tau_up_s * uplink_scale, tau_llm=clock.tau_llm)


def uplink_scale_for_snr(*, record: RoundRecord, base_mean_snr: float, target_mean_snr_db: float) -> float:
    """tau at the target average SNR / tau at the run's: eq. 3 with the same fading gain h(t)."""
    if not record.sent:
        return 1.0
    base = math.log2(1.0 + base_mean_snr * record.fading_gain)
    target = math.log2(1.0 + db_to_linear(target_mean_snr_db) * record.fading_gain)
    return base / target if target > 0 else math.inf


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def summarize(
    *, results: list[PromptResult], clock: ModelledClock, base_mean_snr: float, snr_sweep_db: list[float]
) -> dict[str, float]:
    """One flat dict of a method's metrics (MLflow-ready)."""
    records = [r for res in results for r in res.records]
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
        "mean_uplink_ms": _mean([r.tau_up_s * 1e3 for r in records if r.sent]),
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
    for snr_db in snr_sweep_db:
        seconds = sum(
            modelled_seconds(
                record=r,
                clock=clock,
                uplink_scale=uplink_scale_for_snr(record=r, base_mean_snr=base_mean_snr, target_mean_snr_db=snr_db),
            )
            for r in records
        )
        out[f"throughput_modelled_snr_{snr_db:g}dB"] = run_throughput(tokens=tokens, seconds=seconds)
    return out

