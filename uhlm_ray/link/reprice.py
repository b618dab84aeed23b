"""Recorded uploads priced again on another channel, with the same fading draws.

A round's upload time is a function of its bits, the channel settings and the round's keyed generator
(`channel.upload`), so a record can be priced at another average SNR (Fig. 6 right), on another link model (a
sweep's trials share decoded prompts across channels) or on a share of the band (a cell), without decoding again.
The decisions stay as recorded: a round kept unverified after a missed deadline stays so and keeps its cost.
"""

from __future__ import annotations

import dataclasses
import math

from uhlm_ray.config import ChannelConfig
from uhlm_ray.link.channel import upload
from uhlm_ray.records import BlockRecord, PromptResult, RoundRecord
from uhlm_ray.sampling.rng import Purpose, SessionKey
from uhlm_ray.snr import linear_to_db


def upload_rng(*, record: RoundRecord | BlockRecord, key: SessionKey):
    """The generator a round's upload drew from: FADING for the paper's rounds, UPLINK for block rounds."""
    purpose = Purpose.UPLINK if isinstance(record, BlockRecord) else Purpose.FADING
    return key.rng(round_index=record.round, purpose=purpose)


def reprice(
    *, record: RoundRecord | BlockRecord, channel: ChannelConfig, mean_snr: float, key: SessionKey,
    bandwidth_hz: float | None = None,
) -> RoundRecord | BlockRecord:
    """A copy of the record with its uplink time and SNR for `channel` at `mean_snr` (an unsent round: its SNR)."""
    if record.method == "llm" or math.isnan(record.fading_gain):
        return record
    if not record.sent:
        return dataclasses.replace(record, snr_db=linear_to_db(mean_snr * record.fading_gain))
    up = upload(bits=record.payload_bits, channel=dataclasses.replace(channel, deadline_mode="wait"),
                mean_snr=mean_snr, rng=upload_rng(record=record, key=key), bandwidth_hz=bandwidth_hz)
    return dataclasses.replace(record, tau_up_s=up.seconds, snr_db=linear_to_db(mean_snr * up.gain),
                               upload_attempts=up.attempts)


def reprice_results(
    *, results: list[PromptResult], channel: ChannelConfig, mean_snr: float, seed: int,
) -> list[PromptResult]:
    """Copies of the results with every sent round repriced (see `reprice`)."""
    out = []
    for res in results:
        key = SessionKey(seed=seed, device=res.device_index, prompt=res.prompt_index)
        records = [reprice(record=r, channel=channel, mean_snr=mean_snr, key=key) for r in res.records]
        out.append(dataclasses.replace(res, records=records))
    return out
