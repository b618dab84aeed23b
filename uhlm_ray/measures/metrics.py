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
from dataclasses import dataclass

from uhlm_ray.config import ChannelConfig
from uhlm_ray.link.fading import has_time_axis
from uhlm_ray.link.reprice import reprice_results
from uhlm_ray.link.throughput import run_throughput
from uhlm_ray.measures.block_metrics import summarize_blocks
from uhlm_ray.measures.clock import ModelledClock, modelled_seconds, uplink_stats, wall_figures
from uhlm_ray.measures.energy import energy_summary
from uhlm_ray.records import BlockRecord, PromptResult, RoundRecord
from uhlm_ray.snr import db_to_linear, mean_snr


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


def snr_sweep(*, results: list[PromptResult], clock: ModelledClock, channel: ChannelConfig, seed: int,
              snr_sweep_db: list[float]) -> dict[str, float]:
    """Modelled throughput at other average SNRs, every upload priced again with its own fading draws (Fig. 6)."""
    tokens = sum(len(res.tokens) for res in results)
    out = {}
    for snr_db in snr_sweep_db:
        repriced = reprice_results(results=results, channel=channel, mean_snr=db_to_linear(snr_db), seed=seed,
                                   clock=clock)
        seconds = sum(modelled_seconds(record=r, clock=clock) for res in repriced for r in res.records)
        out[f"throughput_modelled_snr_{snr_db:g}dB"] = run_throughput(tokens=tokens, seconds=seconds)
    return out


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def acceptance_if_sent(records: list[RoundRecord]) -> tuple[list[float], list[float], bool]:
    """1 - beta of every scored round and of the skipped ones, and whether every round was scored (TSR, risk)."""
    accept_if_sent = [1.0 - r.beta for r in records if not math.isnan(r.beta)]
    skipped_accept = [1.0 - r.beta for r in records if not r.sent and not math.isnan(r.beta)]
    return accept_if_sent, skipped_accept, bool(records) and len(accept_if_sent) == len(records)


def rewalked(*, results: list[PromptResult], clock: ModelledClock, channel: ChannelConfig, seed: int
             ) -> list[PromptResult]:
    """The results with each prompt re-walked on `clock` where the channel has a fading process in time (every
    upload decided at another time than the decoder's clock put it priced again there); as they are otherwise.
    Summaries and their intervals must read the same re-walked records."""
    if not has_time_axis(channel):
        return results
    return reprice_results(results=results, channel=channel, mean_snr=mean_snr(channel), seed=seed, clock=clock,
                           only_moved=True)


def summarize(
    *, results: list[PromptResult], clock: ModelledClock, channel: ChannelConfig, seed: int,
    snr_sweep_db: list[float], rewalk: bool = True,
) -> dict[str, float]:
    """One flat dict of a method's metrics (MLflow-ready); `channel` and `seed` reprice uploads for the SNR sweep.

    `rewalk`: with a fading process in time, each prompt's rounds are first re-walked on `clock`
    (`uhlm_ray.link.reprice.reprice_prompt`): an upload decided at another time than the decoder's own clock put it
    is priced again there, so the modelled figures are exact for this clock. Pass False for records already priced
    on this clock by the caller (a cell's shared uplink)."""
    if rewalk:
        results = rewalked(results=results, clock=clock, channel=channel, seed=seed)
    records = [r for res in results for r in res.records]
    if records and isinstance(records[0], BlockRecord):
        out = summarize_blocks(results=results, clock=clock)
        out.update(snr_sweep(results=results, clock=clock, channel=channel, seed=seed, snr_sweep_db=snr_sweep_db))
        return out
    stats = SpecDecodeStats.from_records(records)
    hybrid = bool(records) and records[0].method != "llm"
    tokens = len(records)

    accept_if_sent, skipped_accept, scored = acceptance_if_sent(records)
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
        "mean_prefill_s": _mean([res.prefill_s for res in results]),
        "modelled_s": modelled,
        **wall_figures(results=results, records=records, tokens=tokens),
        # device J per token and per round with their parts, base-station J per verified token (link/energy.py)
        **energy_summary(results=results, clock=clock, tokens=tokens),
    }
    out.update(snr_sweep(results=results, clock=clock, channel=channel, seed=seed, snr_sweep_db=snr_sweep_db))
    return out
