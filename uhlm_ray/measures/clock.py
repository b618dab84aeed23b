"""The costs of a round on the two clocks: the modelled clock (eq. 4's denominator with tau_SLM, tau_LLM and the
priced upload), the tau values measured in records, the wall clock (one stream's, or experiment throughput) and its
overhead share, and upload-time statistics.

Shared by the paper's metrics (metrics.py) and the block metrics (block_metrics.py), so neither imports the other
for them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from uhlm_ray.link.downlink import DownlinkLink, downlink_seconds
from uhlm_ray.link.throughput import round_seconds, run_throughput
from uhlm_ray.records import BlockRecord, PromptResult, RoundRecord

if TYPE_CHECKING:  # link/energy.py: the coefficients measures/energy.py prices rounds with
    from uhlm_ray.link.energy import EnergyModel


@dataclass(frozen=True)
class ModelledClock:
    """Per-token compute times for eq. 4, in seconds, and how a block round's LLM pass is priced.

    `llm_pass` "measured": a pass costs its solo cost for its length, `llm_pass_s[tokens - 1]` when calibrated
    (linear beyond the table) or else the record's measured time, times `llm_scale` (tau_LLM over the one-token
    pass, 1 when tau_LLM is that pass); "flat": tau_LLM per `flat_pass_tokens` tokens or fewer (a memory-bound GPU).
    `tau_measure`: seconds of one uncertainty measurement by method, configured or calibrated; a method missing
    from it is charged the record's measured time.
    `downlink`: the answer's way back (`link/downlink.py`), None when the downlink is off; `energy`: the run's energy
    coefficients (`link/energy.py`, walked in `measures/energy.py`), None for no energy figures.
    """

    tau_slm: float
    tau_llm: float
    llm_pass: str = "measured"
    flat_pass_tokens: int = 16
    llm_scale: float = 1.0
    llm_pass_s: tuple[float, ...] = ()
    tau_measure: Mapping[str, float] = field(default_factory=dict)
    downlink: DownlinkLink | None = None
    energy: EnergyModel | None = None

    def llm_pass_seconds(self, *, measured_s: float, tokens: int) -> float:
        """A block round's LLM pass over `tokens` tokens on this clock."""
        if self.llm_pass == "flat":
            return self.tau_llm * math.ceil(tokens / self.flat_pass_tokens)
        if not self.llm_pass_s:
            return measured_s * self.llm_scale
        table = self.llm_pass_s
        if tokens <= len(table):
            return table[max(tokens, 1) - 1] * self.llm_scale
        slope = table[-1] - table[-2] if len(table) > 1 else table[-1]
        return (table[-1] + slope * (tokens - len(table))) * self.llm_scale

    def measure_seconds(self, record: RoundRecord | BlockRecord) -> float:
        """The uncertainty measure's cost in a round whose policy or stop rule used it (tau_uncertainty_s > 0);
        a block round measures each of its drafts."""
        if record.tau_uncertainty_s <= 0.0:
            return 0.0
        per = self.tau_measure.get(record.method)
        if per is None:
            return record.tau_uncertainty_s
        return per * (len(record.drafts) if isinstance(record, BlockRecord) else 1)

    def upload_offset(self, record: RoundRecord | BlockRecord) -> float:
        """Seconds from a round's start to its upload decision: its SLM steps and uncertainty measures (the time
        axis of the fading process, uhlm_ray/link/fading.py)."""
        if record.method == "llm":
            return 0.0
        steps = len(record.drafts) if isinstance(record, BlockRecord) else 1
        return steps * self.tau_slm + self.measure_seconds(record)

    def round_seconds(self, record: RoundRecord | BlockRecord) -> float:
        """`modelled_seconds` of the record on this clock."""
        return modelled_seconds(record=record, clock=self)


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

    The uncertainty measure's cost is added when the policy uses it (`ModelledClock.measure_seconds`): MC dropout and
    prompt perturbation cost K extra SLM passes; temperature perturbation's vectorised sampling costs milliseconds
    (the paper counts it as running in parallel with the forward pass). An upload that missed its deadline is
    charged the deadline. A block round costs n SLM steps, its upload and one LLM pass priced by `clock.llm_pass`.
    A sent round then waits for its answer on the downlink (`clock.downlink`; `link/downlink.py`).
    """
    if record.method == "llm":
        return clock.tau_llm
    lost = record.tau_up_s if record.deadline_fallback else 0.0
    if isinstance(record, BlockRecord):
        llm = clock.llm_pass_seconds(measured_s=record.tau_llm_s, tokens=record.llm_pass_tokens) if record.sent \
            else 0.0
        return len(record.drafts) * clock.tau_slm + clock.measure_seconds(record) + lost + \
            (record.tau_up_s + llm if record.sent else 0.0) + downlink_seconds(record=record, link=clock.downlink)
    return clock.measure_seconds(record) + lost + round_seconds(
        sent=record.sent, tau_slm=clock.tau_slm, tau_up=record.tau_up_s, tau_llm=clock.tau_llm) + \
        downlink_seconds(record=record, link=clock.downlink)


def uplink_stats(records: list[RoundRecord | BlockRecord]) -> dict[str, float]:
    """Mean, median and p95 upload time (ms) over sent rounds: under eq. 3 the mean is infinite in expectation
    (it grows with the number of rounds), so the median and p95 say more."""
    ups = np.array([r.tau_up_s * 1e3 for r in records if r.sent])
    if not ups.size:
        return {"mean_uplink_ms": math.nan, "median_uplink_ms": math.nan, "p95_uplink_ms": math.nan}
    return {"mean_uplink_ms": float(ups.mean()), "median_uplink_ms": float(np.median(ups)),
            "p95_uplink_ms": float(np.percentile(ups, 95))}


def wall_figures(*, results: list[PromptResult], records: list[RoundRecord | BlockRecord], tokens: int
                 ) -> dict[str, float]:
    """The wall clock, which is one stream's real time or no figure at all, and experiment throughput.

    `throughput_wall` (generation only) exists when every prompt was decoded alone (batch 1): a lockstep round's
    time is shared by every prompt of its batch, so it is not one stream's. `throughput_experiment` is generated
    tokens per second of decoding time, batched or not, prefill and evaluation scoring included: the prompts'
    `decode_s` shares add up to their batches' wall time. NaN where a prompt came from an older store without it.
    """
    solo = all(res.batch_size == 1 for res in results)
    wall = sum(r.wall_s for r in records)
    decode = sum(res.decode_s for res in results)
    return {
        "throughput_wall": run_throughput(tokens=tokens, seconds=wall) if solo else math.nan,
        "wall_s": wall if solo else math.nan,
        "round_overhead_share": overhead_share(records) if solo else math.nan,
        "throughput_experiment": run_throughput(tokens=tokens, seconds=decode) if math.isfinite(decode)
        else math.nan,
        "decode_s": decode,
        "max_batch_size": float(max((res.batch_size for res in results), default=1)),
    }
