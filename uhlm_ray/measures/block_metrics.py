"""Metrics of the block method from its BlockRecords, named as vLLM's spec-decode metrics name them.

- num_drafts: draft tokens sent for verification (vLLM's num_draft_tokens); num_uploads: verified blocks (vLLM's
  num_drafts, one speculation each).
- num_accepted_tokens, num_recovered_tokens (a rejected draft's replacement), num_bonus_tokens (from y_{n+1} when
  every draft of a block was accepted), num_skipped (drafts committed unverified: lossy settings only).
- acceptance_rate = accepted / drafts sent; mean_accepted_length = tokens per verified block = 1 + accepted / uploads
  (vLLM's mean acceptance length); acceptance_pos_k = accepted at position k / blocks that drafted position k.
- uploads_per_token and bits_per_token: what the uplink carried per generated token.
- exact: 1 when no token was committed unverified (no skip threshold, no deadline fallback), so the output is
  distributed as the LLM's.
Clocks as for the paper's methods (clock.py): modelled with n SLM steps, the upload and the priced LLM pass per
round; wall from the rounds' measured time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from uhlm_ray.link.throughput import run_throughput
from uhlm_ray.measures.clock import ModelledClock, modelled_seconds, uplink_stats, wall_figures
from uhlm_ray.measures.energy import energy_summary
from uhlm_ray.records import BlockRecord, PromptResult


@dataclass
class BlockStats:
    """vLLM-style counts over block rounds."""

    num_rounds: int = 0
    num_uploads: int = 0
    num_drafts: int = 0
    num_accepted_tokens: int = 0
    num_recovered_tokens: int = 0
    num_bonus_tokens: int = 0
    num_skipped: int = 0
    num_tokens: int = 0
    accepted_per_position: list[int] = field(default_factory=list)
    drafts_per_position: list[int] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted_tokens / self.num_drafts if self.num_drafts else math.nan

    @property
    def mean_accepted_length(self) -> float:
        return 1.0 + self.num_accepted_tokens / self.num_uploads if self.num_uploads else math.nan

    @classmethod
    def from_records(cls, records: list[BlockRecord]) -> BlockStats:
        stats = cls()
        for r in records:
            stats.num_rounds += 1
            stats.num_tokens += len(r.tokens)
            skipped = [not v for v in r.verified[:r.num_accepted]] if r.sent else [True] * len(r.tokens)
            stats.num_skipped += sum(skipped)
            if not r.sent:
                continue
            stats.num_uploads += 1
            stats.num_drafts += sum(r.verified)
            stats.num_recovered_tokens += int(r.recovered)
            stats.num_bonus_tokens += int(r.bonus)
            for k, verified in enumerate(r.verified):
                if not verified:
                    continue
                while len(stats.drafts_per_position) <= k:
                    stats.drafts_per_position.append(0)
                    stats.accepted_per_position.append(0)
                stats.drafts_per_position[k] += 1
                if k < r.num_accepted:
                    stats.accepted_per_position[k] += 1
                    stats.num_accepted_tokens += 1
        return stats


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def unverified_risks(records: list[BlockRecord]) -> list[float]:
    """Lossy settings: each draft committed unverified is scored by the LLM afterwards (evaluation mode); its
    rejection probability 1 - accept_prob is the risk it took (NaN where it was not scored)."""
    return [1.0 - r.accept_prob[i] for r in records for i in range(r.num_accepted if r.sent else len(r.drafts))
            if not (r.sent and r.verified[i])]


def summarize_blocks(*, results: list[PromptResult], clock: ModelledClock) -> dict[str, float]:
    """The block method's metrics: the keys the paper's methods report where they mean the same, and vLLM's."""
    records: list[BlockRecord] = [r for res in results for r in res.records]
    stats = BlockStats.from_records(records)
    tokens = sum(len(res.tokens) for res in results)  # the last round's tokens may be cut at the budget
    modelled = sum(modelled_seconds(record=r, clock=clock) for r in records)
    sent = [r for r in records if r.sent]
    risks = unverified_risks(records)
    scored = not any(math.isnan(x) for x in risks)
    out = {
        "accuracy": _mean([res.similarity for res in results]),
        "num_prompts": len(results),
        "num_tokens": tokens,
        "transmission_rate": stats.num_uploads / tokens if tokens else math.nan,
        "uploads_per_token": stats.num_uploads / tokens if tokens else math.nan,
        "bits_per_token": sum(r.payload_bits for r in records) / tokens if tokens else math.nan,
        "rejection_risk": sum(risks) / tokens if tokens and scored else math.nan,
        "exact": float(stats.num_skipped == 0),
        "mean_uncertainty": _mean([u for r in records for u in r.uncertainty]),
        "acceptance_rate": stats.acceptance_rate,
        "num_rounds": stats.num_rounds,
        "num_uploads": stats.num_uploads,
        "num_drafts": stats.num_drafts,
        "num_accepted_tokens": stats.num_accepted_tokens,
        "num_recovered_tokens": stats.num_recovered_tokens,
        "num_bonus_tokens": stats.num_bonus_tokens,
        "num_skipped": stats.num_skipped,
        "mean_accepted_length": stats.mean_accepted_length,
        "mean_block_length": _mean([float(len(r.drafts)) for r in records]),
        "mean_catch_up_tokens": _mean([float(r.llm_pass_tokens - len(r.drafts)) for r in sent]),
        "throughput_modelled": run_throughput(tokens=tokens, seconds=modelled),
        "tau_slm_ms": clock.tau_slm * 1e3,
        "tau_llm_ms": clock.tau_llm * 1e3,
        "llm_pass_flat_tokens": float(clock.flat_pass_tokens if clock.llm_pass == "flat" else 0),
        "mean_llm_pass_ms": _mean([clock.llm_pass_seconds(measured_s=r.tau_llm_s, tokens=r.llm_pass_tokens) * 1e3
                                   for r in sent]),
        **uplink_stats(records),
        "mean_upload_attempts": _mean([float(r.upload_attempts) for r in sent]),
        "deadline_fallbacks": float(sum(r.deadline_fallback for r in records)),
        "mean_uncertainty_ms": _mean([r.tau_uncertainty_s * 1e3 / len(r.drafts) for r in records]),
        "mean_payload_bits": _mean([float(r.payload_bits) for r in sent]),
        "mean_kept_tokens": _mean([r.kept_tokens / len(r.drafts) for r in sent]),
        "mean_sync_bits": _mean([float(r.sync_bits) for r in sent]),
        "mean_prefill_s": _mean([res.prefill_s for res in results]),
        "modelled_s": modelled,
        **wall_figures(results=results, records=records, tokens=tokens),
        **energy_summary(results=results, clock=clock, tokens=tokens),  # link/energy.py
    }
    for k, (accepted, drafted) in enumerate(zip(stats.accepted_per_position, stats.drafts_per_position,
                                                strict=True)):
        out[f"acceptance_pos_{k + 1}"] = accepted / drafted
    return out
