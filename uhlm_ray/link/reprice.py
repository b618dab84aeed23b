"""Recorded uploads priced again on another channel, with the same fading realisation.

A round's upload time is a function of its bits, the channel settings, when it was decided on the modelled clock and
the device's keyed fading (`channel.upload`: the round's keyed generator under `channel.process=per_round`, the
prompt's fading process in time otherwise), so a record can be priced at another average SNR (Fig. 6 right), on
another link model or speed (a sweep's trials share decoded prompts across channels) or on a share of the band (a
cell), without decoding again. The decisions stay as recorded: a round kept unverified after a missed deadline stays
so and keeps its cost.

With a fading process in time a changed upload time moves every later round of the prompt, so `reprice_prompt`
re-walks a prompt's records in order on a modelled clock: each round starts when the one before ended, decides its
upload `clock.upload_offset` later and reads h(t) from there: on the decode-time clock (`DecodeClock`) a repriced
record equals one decoded on that channel, on the run's clock (`ModelledClock`, what the summaries pass) the
figures are exact for it. Under per_round time does not matter; `reprice` alone prices one record at the decision
time it is given, or the one it recorded (`up_start_s`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Protocol

from uhlm_ray.config import ChannelConfig, ClockConfig
from uhlm_ray.link.channel import upload
from uhlm_ray.link.fading import DecodeClock, FadingProcess, has_time_axis, shared_process
from uhlm_ray.records import BlockRecord, PromptResult, RoundRecord
from uhlm_ray.sampling.rng import Purpose, SessionKey
from uhlm_ray.snr import linear_to_db

Record = RoundRecord | BlockRecord


class RoundClock(Protocol):
    """What the re-walk needs of a modelled clock (`uhlm_ray.measures.clock.ModelledClock` has it)."""

    def upload_offset(self, record: Record) -> float: ...

    def round_seconds(self, record: Record) -> float: ...


def upload_rng(*, record: Record, key: SessionKey):
    """The generator a round's upload drew from under per_round: FADING for the paper's rounds, UPLINK for blocks."""
    purpose = Purpose.UPLINK if isinstance(record, BlockRecord) else Purpose.FADING
    return key.rng(round_index=record.round, purpose=purpose)


def reprice(
    *, record: Record, channel: ChannelConfig, mean_snr: float, key: SessionKey,
    bandwidth_hz: float | None = None, start_s: float | None = None, process: FadingProcess | None = None,
) -> Record:
    """A copy of the record with its uplink time and SNR for `channel` at `mean_snr` (an unsent round: its SNR).

    `start_s`: the modelled time the round decided to upload (None: the one it recorded); `process`: the device's
    fading process for the prompt (None: the keyed one of `key`). With a process in time the record's fading gain
    becomes h at `start_s` on it.
    """
    if record.method == "llm" or math.isnan(record.fading_gain):
        return record
    start = record.up_start_s if start_s is None else start_s
    in_time = has_time_axis(channel)
    if in_time and process is None:
        process = shared_process(channel=channel, key=key)
    if not record.sent:
        gain = process.gain_at(start) if in_time else record.fading_gain
        return dataclasses.replace(record, snr_db=linear_to_db(mean_snr * gain), fading_gain=gain, up_start_s=start)
    up = upload(bits=record.payload_bits, channel=dataclasses.replace(channel, deadline_mode="wait"),
                mean_snr=mean_snr, rng=None if in_time else upload_rng(record=record, key=key),
                bandwidth_hz=bandwidth_hz, process=process, start_s=start)
    return dataclasses.replace(record, tau_up_s=up.seconds, tau_air_s=up.air_s, up_start_s=start,
                               fading_gain=up.gain if in_time else record.fading_gain,
                               snr_db=linear_to_db(mean_snr * up.gain), upload_attempts=up.attempts)


def walk_prompt(*, records: list[Record], clock: RoundClock, price: Callable[[Record, float], Record]
                ) -> list[Record]:
    """One prompt's records in order on `clock`: round r starts when round r - 1 ended (the first at 0), decides
    its upload `clock.upload_offset` later, and `price(record, decision time)` gives its repriced copy."""
    now, out = 0.0, []
    for record in records:
        priced = price(record, now + clock.upload_offset(record))
        out.append(priced)
        now += clock.round_seconds(priced)
    return out


def reprice_prompt(
    *, records: list[Record], channel: ChannelConfig, mean_snr: float, key: SessionKey,
    clock: RoundClock | None = None, bandwidth_hz: float | None = None, only_moved: bool = False,
) -> list[Record]:
    """Copies of one prompt's records repriced (see `reprice`), re-walked on `clock` when the channel has a time
    axis (None: the decode-time clock of the default clock settings and no downlink; a device decoding walks
    `DecodeClock.for_run`, which the caller passes for repriced records to equal records decoded on that channel).
    `only_moved`: keep a
    record whose decision time did not move (the same channel, already priced there)."""
    if not has_time_axis(channel):
        return [reprice(record=r, channel=channel, mean_snr=mean_snr, key=key, bandwidth_hz=bandwidth_hz)
                for r in records]
    clock = DecodeClock.from_config(ClockConfig()) if clock is None else clock
    process = shared_process(channel=channel, key=key)

    def price(record: Record, start_s: float) -> Record:
        if only_moved and abs(start_s - record.up_start_s) <= 1e-9 * max(1.0, start_s):
            return record
        return reprice(record=record, channel=channel, mean_snr=mean_snr, key=key, bandwidth_hz=bandwidth_hz,
                       start_s=start_s, process=process)

    return walk_prompt(records=records, clock=clock, price=price)


def reprice_results(
    *, results: list[PromptResult], channel: ChannelConfig, mean_snr: float, seed: int,
    clock: RoundClock | None = None, only_moved: bool = False,
) -> list[PromptResult]:
    """Copies of the results with every sent round repriced, each prompt re-walked on `clock` when one is given
    (see `reprice_prompt`)."""
    out = []
    for res in results:
        key = SessionKey(seed=seed, device=res.device_index, prompt=res.prompt_index)
        records = reprice_prompt(records=res.records, channel=channel, mean_snr=mean_snr, key=key, clock=clock,
                                 only_moved=only_moved)
        out.append(dataclasses.replace(res, records=records))
    return out
