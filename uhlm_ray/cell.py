"""A cell: N devices at their own distances, each with its own Rayleigh fading, sharing one uplink and one LLM.

Sharing rule (default "equal"): rounds are slotted, a device's k-th round (counted over its prompts in order) is
slot k, and the devices that transmit in the same slot split the bandwidth W equally. The noise power N of eq. 3 is
taken over the whole band, so a device with a share W/n sees noise N/n and rate (W/n) log2(1 + n SNR). Slots are
defined by round counts, not by arrival times, so the modelled uplink does not depend on scheduling noise.

Everything here is a pure function of the per-round records; the Ray runtime (actors/, jobs/cell.py) produces them.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np

from uhlm_ray.channel import db_to_linear, mean_snr, mean_snr_db
from uhlm_ray.config import CellConfig, ChannelConfig
from uhlm_ray.metrics import ModelledClock, summarize
from uhlm_ray.records import PromptResult, RoundRecord
from uhlm_ray.throughput import run_throughput


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


def shared_uplink_seconds(*, bits: float, bandwidth_hz: float, snr: float, sharers: int) -> float:
    """Eq. 3 with an equal share of the band: B / ((W/n) log2(1 + n SNR)); n = 1 is eq. 3 itself."""
    rate = bandwidth_hz / sharers * math.log2(1.0 + sharers * snr)
    return bits / rate if rate > 0 else math.inf


def slot_transmitters(records_by_device: dict[int, list[RoundRecord]]) -> Counter:
    """How many devices transmit in each slot (a device's k-th round is slot k)."""
    return Counter(slot for records in records_by_device.values()
                   for slot, r in enumerate(records) if r.sent)


def apply_shared_uplink(
    *, records_by_device: dict[int, list[RoundRecord]], bandwidth_hz: float
) -> dict[int, list[RoundRecord]]:
    """Copies of the records with tau_up_s recomputed for the shared band (each record keeps its own SNR)."""
    sharers = slot_transmitters(records_by_device)
    out = {}
    for device, records in records_by_device.items():
        out[device] = [
            dataclasses.replace(r, tau_up_s=shared_uplink_seconds(
                bits=r.payload_bits, bandwidth_hz=bandwidth_hz, snr=db_to_linear(r.snr_db), sharers=sharers[slot]))
            if r.sent else r
            for slot, r in enumerate(records)
        ]
    return out


def summarize_cell(
    *,
    results: list[PromptResult],
    distances_m: list[float],
    channel: ChannelConfig,
    clock: ModelledClock,
) -> dict[str, dict]:
    """Per-device metrics and cell-wide ones (`cell`), on the modelled clock with the shared uplink.

    Cell-wide throughput is total tokens over the slowest device's modelled time (devices run in parallel);
    `throughput_modelled` inside each entry is that device's own tokens over its own time.
    """
    by_device: dict[int, list[PromptResult]] = {}
    for res in sorted(results, key=lambda r: (r.device_index, r.prompt_index)):
        by_device.setdefault(res.device_index, []).append(res)
    shared = apply_shared_uplink(
        records_by_device={d: [r for res in rs for r in res.records] for d, rs in by_device.items()},
        bandwidth_hz=channel.bandwidth_hz,
    )
    shared_results = {}
    for device, rs in by_device.items():
        records = iter(shared[device])
        shared_results[device] = [dataclasses.replace(res, records=[next(records) for _ in res.records]) for res in rs]

    devices = {}
    for device, rs in shared_results.items():
        ch = device_channel(channel=channel, distance_m=distances_m[device])
        summary = summarize(results=rs, clock=clock, base_mean_snr=mean_snr(ch), snr_sweep_db=[])
        summary["distance_m"] = distances_m[device]
        summary["mean_snr_db"] = mean_snr_db(ch)
        devices[device] = summary
    pooled = summarize(results=[res for rs in shared_results.values() for res in rs], clock=clock,
                       base_mean_snr=mean_snr(channel), snr_sweep_db=[])
    device_seconds = [devices[d]["modelled_s"] for d in devices]
    pooled["cell_throughput_modelled"] = run_throughput(tokens=pooled["num_tokens"], seconds=max(device_seconds))
    pooled["mean_device_throughput_modelled"] = float(np.mean([devices[d]["throughput_modelled"] for d in devices]))
    pooled["num_devices"] = len(devices)
    pooled["max_transmitters_per_slot"] = max(slot_transmitters(shared).values(), default=0)
    return {"cell": pooled, "devices": devices}
