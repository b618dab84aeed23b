"""A cell: N devices at their own distances, each with its own Rayleigh fading, sharing one uplink and one LLM.

Sharing rule (default "equal"): rounds are slotted, a device's k-th round (counted over its prompts in order) is
slot k, and the devices that transmit in the same slot split the bandwidth W equally. The noise power N is taken
over the whole band, so a device with a share W/n sees noise N/n: its upload is priced on the configured link model
(uhlm_ray/link/channel.py) with bandwidth W/n at n times its SNR, which for eq. 3 is the rate (W/n) log2(1 + n SNR).
Slots are defined by round counts, not by arrival times, so the modelled uplink does not depend on scheduling
noise. A block round is one slot, like a one-draft round.

Everything here is a pure function of the per-round records; the Ray runtime (actors/, jobs/cell.py) produces them.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

from uhlm_ray.config import CellConfig, ChannelConfig
from uhlm_ray.link.reprice import reprice
from uhlm_ray.link.throughput import run_throughput
from uhlm_ray.measures.clock import ModelledClock
from uhlm_ray.measures.metrics import summarize
from uhlm_ray.records import BlockRecord, PromptResult, RoundRecord
from uhlm_ray.sampling.rng import SessionKey
from uhlm_ray.snr import mean_snr, mean_snr_db


def device_distances(cell: CellConfig) -> list[float]:
    """The configured distances, or N draws uniform over the annulus min_distance_m <= r <= radius_m (by area)."""
    if cell.distances_m is not None:
        return [float(d) for d in cell.distances_m]
    rng = np.random.default_rng(np.random.SeedSequence([cell.placement_seed, 0xCE11]))
    low, high = cell.min_distance_m**2, cell.radius_m**2
    return [float(r) for r in np.sqrt(low + (high - low) * rng.random(cell.n_devices))]


def device_channel(*, channel: ChannelConfig, distance_m: float) -> ChannelConfig:
    """The cell's channel settings at one device's distance."""
    return dataclasses.replace(channel, distance_m=distance_m)


Record = RoundRecord | BlockRecord


def slot_transmitters(records_by_device: dict[int, list[Record]]) -> Counter:
    """How many devices transmit in each slot (a device's k-th round is slot k)."""
    return Counter(slot for records in records_by_device.values()
                   for slot, r in enumerate(records) if r.sent)


def apply_shared_uplink(
    *, records_by_device: dict[int, list[Record]], channel: ChannelConfig, mean_snrs: dict[int, float], seed: int
) -> dict[int, list[Record]]:
    """Copies of the records with each upload priced on its slot's share of the band (W/n at n times the device's
    SNR, the round's own fading draws); `mean_snrs` holds each device's average SNR."""
    sharers = slot_transmitters(records_by_device)
    out = {}
    for device, records in records_by_device.items():
        out[device] = [
            reprice(record=r, channel=channel, mean_snr=sharers[slot] * mean_snrs[device],
                    key=SessionKey(seed=seed, device=device, prompt=r.prompt_index),
                    bandwidth_hz=channel.bandwidth_hz / sharers[slot]) if r.sent else r
            for slot, r in enumerate(records)
        ]
    return out


def summarize_cell(
    *,
    results: list[PromptResult],
    distances_m: list[float],
    channel: ChannelConfig,
    clock: ModelledClock,
    seed: int,
) -> dict[str, dict]:
    """Per-device metrics and cell-wide ones (`cell`), on the modelled clock with the shared uplink.

    Two throughputs, named apart: `aggregate_throughput_modelled` (the cell entry) is every device's tokens over
    the slowest device's modelled time (devices run in parallel); `throughput_modelled` is one device's own tokens
    over its own time (in the cell entry: pooled over devices, i.e. the rate of an average device).
    """
    by_device: dict[int, list[PromptResult]] = {}
    for res in sorted(results, key=lambda r: (r.device_index, r.prompt_index)):
        by_device.setdefault(res.device_index, []).append(res)
    channels = {d: device_channel(channel=channel, distance_m=distances_m[d]) for d in by_device}
    shared = apply_shared_uplink(
        records_by_device={d: [r for res in rs for r in res.records] for d, rs in by_device.items()},
        channel=channel, mean_snrs={d: mean_snr(ch) for d, ch in channels.items()}, seed=seed,
    )
    shared_results = {}
    for device, rs in by_device.items():
        records = iter(shared[device])
        shared_results[device] = [dataclasses.replace(res, records=[next(records) for _ in res.records]) for res in rs]

    devices = {}
    for device, rs in shared_results.items():
        summary = summarize(results=rs, clock=clock, channel=channels[device], seed=seed, snr_sweep_db=[])
        summary["distance_m"] = distances_m[device]
        summary["mean_snr_db"] = mean_snr_db(channels[device])
        devices[device] = summary
    pooled = summarize(results=[res for rs in shared_results.values() for res in rs], clock=clock,
                       channel=channel, seed=seed, snr_sweep_db=[])
    device_seconds = [devices[d]["modelled_s"] for d in devices]
    pooled["aggregate_throughput_modelled"] = run_throughput(tokens=pooled["num_tokens"], seconds=max(device_seconds))
    pooled["mean_device_throughput_modelled"] = float(np.mean([devices[d]["throughput_modelled"] for d in devices]))
    pooled["num_devices"] = len(devices)
    pooled["max_transmitters_per_slot"] = max(slot_transmitters(shared).values(), default=0)
    return {"cell": pooled, "devices": devices}
