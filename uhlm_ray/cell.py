"""A cell: N devices at their own distances, each with its own Rayleigh fading, sharing one uplink and one LLM.

Slots: rounds are slotted, a device's k-th round (counted over its prompts in order) is slot k. Slots are defined by
round counts, not by arrival times, so the modelled uplink does not depend on scheduling noise; a block round is one
slot, like a one-draft round. The devices that transmit in a slot share the band W by `cell.scheduler`, each a pure
function of the slot's records in one function below:

- `equal_shares`: w_i = 1/n (the default, and the only rule before);
- `round_robin_order`: TDMA, each sender takes the whole band in turn and waits for those ahead of it;
- `proportional_fair_shares`: w_i proportional to r_i / R_i, the classic PF metric;
- `multi_spin_shares`: the shares that minimise the slot's duration (Multi-SPIN's homogeneous case);
- `proportional_fair_pick`: opportunistic PF in time (TDMA), the whole band to the waiting sender with the largest
  r_i / R_i, the others waiting until it finishes, their fades read again then.

The noise power N is taken over the whole band, so a device with a share w W sees noise w N: its upload is priced on
the configured link model (uhlm_ray/link/channel.py) with bandwidth w W at SNR / w, which for eq. 3 is the rate
w W log2(1 + SNR / w) (`shared_rate`).

Verification (`verify_batches`): with `cell.verify_deadline_ms` set, the base station batches a slot's verifications
and one LLM pass serves a batch; by default every verification is priced alone (the single-device clock).

The cell's clock (`cell_figures`): a slot lasts as long as its slowest round, the cell's time is the sum of its slots,
and goodput is the verified tokens over that time. Everything here is a pure function of the per-round records; the
Ray runtime (actors/, jobs/cell.py) produces them.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from uhlm_ray.config import CellConfig, ChannelConfig, EvaluateConfig
from uhlm_ray.link.capacity import ergodic_capacity
from uhlm_ray.link.channel import expected_upload_seconds
from uhlm_ray.link.fading import shared_process
from uhlm_ray.link.reprice import reprice
from uhlm_ray.link.throughput import run_throughput
from uhlm_ray.measures.clock import ModelledClock, modelled_seconds
from uhlm_ray.measures.metrics import summarize
from uhlm_ray.records import BlockRecord, PromptResult, RoundRecord
from uhlm_ray.sampling.rng import SessionKey
from uhlm_ray.snr import mean_snr, mean_snr_db

Record = RoundRecord | BlockRecord


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


def scheduler_name(cell: CellConfig) -> str:
    """`cell.scheduler`, or the old `cell.bandwidth_sharing` where a config still sets it (validate_cell checks that
    the two do not disagree)."""
    return cell.bandwidth_sharing or cell.scheduler


def slot_transmitters(records_by_device: dict[int, list[Record]]) -> Counter:
    """How many devices transmit in each slot (a device's k-th round is slot k)."""
    return Counter(slot for records in records_by_device.values()
                   for slot, r in enumerate(records) if r.sent)


# --- the schedulers: one function each --------------------------------------------------------------------------

@dataclass(frozen=True)
class Sender:
    """One device's upload in one slot, as a scheduler sees it.

    `gain` is the fading gain at the start of its upload (the channel state the base station learns from the
    device's pilot); `fixed_s` the round's modelled time besides the upload (drafting, measure, LLM pass).
    """

    device: int
    bits: float
    mean_snr: float  # the device's average SNR over the whole band
    gain: float
    fixed_s: float = 0.0


def shared_rate(*, bandwidth_hz: float, share: float, snr: float) -> float:
    """Eq. 3 on a share w of the band with the noise taken over the band: w W log2(1 + SNR / w) bits/s, where SNR is
    the full-band SNR (p h d^-alpha / (N0 W)). It grows with w and is concave, so an equal split of a band among
    senders beats taking turns with all of it (TDMA) under eq. 3: each sender concentrates its power on less noise."""
    return share * bandwidth_hz * math.log2(1.0 + snr / share) if share > 0 else 0.0


def equal_shares(senders: list[Sender]) -> dict[int, float]:
    """Equal split: w_i = 1 / n for the n devices that transmit in the slot."""
    return {s.device: 1.0 / len(senders) for s in senders}


def round_robin_order(senders: list[Sender], *, slot: int) -> list[int]:
    """Round-robin TDMA: the slot's senders take the whole band W one after another, in device order rotated by the
    slot index (the device first in slot k is last but one in slot k + 1), so that no device always goes first.

    The i-th in the order waits for the uploads of the i - 1 before it: tau_i = sum_{j < i} tau_j + tau_i(W).
    """
    devices = sorted(s.device for s in senders)
    shift = slot % len(devices) if devices else 0
    return devices[shift:] + devices[:shift]


def proportional_fair_shares(senders: list[Sender], *, average_rate: dict[int, float]) -> dict[int, float]:
    """Proportional fair (Jalali, Padovani and Pankaj, VTC 2000; Tse and Viswanath, Fundamentals of Wireless
    Communication, 6.7): each sender's metric is its instantaneous rate over its average served rate,
    m_i = r_i / R_i, with r_i = log2(1 + SNR_i h_i) the full-band spectral efficiency in its current fade; the
    band is split in proportion to the metric, w_i = m_i / sum_j m_j (a fractional form of PF's "serve the
    largest m_i"). R_i is updated after each slot by `proportional_fair_average`; a device without history
    (R_i missing) has m_i = 1."""
    metric = {}
    for s in senders:
        instant = math.log2(1.0 + s.mean_snr * s.gain)
        average = average_rate.get(s.device)
        metric[s.device] = instant / average if average else 1.0
    total = sum(metric.values())
    if total <= 0 or not math.isfinite(total):  # every sender in a null fade: nobody can use the band better
        return equal_shares(senders)
    return {d: m / total for d, m in metric.items()}


def proportional_fair_average(*, average: float | None, served: float, window: float) -> float:
    """PF's exponentially weighted average served rate with window t_c (slots):
    R_i <- (1 - 1/t_c) R_i + (1/t_c) r_i^served, where r_i^served = w_i log2(1 + SNR_i h_i / w_i) (bits/s/Hz of the
    band). It is averaged over the slots in which the device transmits (a device is backlogged only when it has a
    draft to upload); the first one starts it at that slot's served rate."""
    if average is None:
        return served
    return (1.0 - 1.0 / window) * average + served / window


def proportional_fair_prior(sender: Sender, *, average_rate: dict[int, float], fading: str) -> float:
    """R_i, or for a device without history its ergodic rate E[log2(1 + SNR_i h)], so that its metric is its fade's
    quality from its first slot."""
    return average_rate.get(sender.device) or ergodic_capacity(mean_snr=sender.mean_snr, fading=fading)


def proportional_fair_pick(waiting: list[Sender], *, average_rate: dict[int, float], fading: str,
                           tie_order: list[int] | None = None) -> int:
    """Opportunistic proportional fair in time (the scheduler of HDR/EV-DO; Tse and Viswanath, 6.7): whenever the
    band frees up it goes whole to the waiting sender with the largest m_i = r_i / R_i, r_i = log2(1 + SNR_i h_i) at
    the gain it has now (R_i: `proportional_fair_prior`); the others wait and compete again when it finishes, with
    the gains they have then. Within a slot every sender is served, so the last one sends in whatever fade it has;
    what deferral buys is the order, and, under a fading process in time, fades read later. Equal metrics (no
    fading) go in `tie_order` (the slot's `round_robin_order`; default: by device), so that no device is always
    last."""
    rank = {d: i for i, d in enumerate(tie_order or sorted(s.device for s in waiting))}

    def metric(s: Sender) -> float:
        average = proportional_fair_prior(s, average_rate=average_rate, fading=fading)
        return math.log2(1.0 + s.mean_snr * s.gain) / average if average > 0 else 0.0

    return min(waiting, key=lambda s: (-metric(s), rank[s.device])).device


def eq3_upload_seconds(sender: Sender, share: float, *, bandwidth_hz: float, overhead_s: float = 0.0) -> float:
    """Eq. 3 on a share of the band at the sender's known gain: o + b / (w W log2(1 + SNR h / w))."""
    rate = shared_rate(bandwidth_hz=bandwidth_hz, share=share, snr=sender.mean_snr * sender.gain)
    return overhead_s + sender.bits / rate if rate > 0 else math.inf


MULTI_SPIN_GRID = tuple(2.0 ** (-k / 2) for k in range(25))  # shares 1 .. 1/4096, where the plan is tabulated


def least_shares(times: np.ndarray, grid: np.ndarray, t: float) -> np.ndarray:
    """Each row's least share that finishes by `t`, log-log interpolated: `times` [m, G] holds round times at the
    shares of `grid` (ascending, so each row is non-increasing); inf where even the whole band is slower."""
    fits = times <= t  # [m, G]
    hi = np.argmax(fits, axis=1)  # the least grid share that finishes by t
    rows = np.arange(times.shape[0])
    shares = interpolated_shares(grid=grid, hi=hi, t_lo=times[rows, np.maximum(hi - 1, 0)], t_hi=times[rows, hi], t=t)
    return np.where(fits.any(axis=1), shares, np.inf)


def interpolated_shares(*, grid: np.ndarray, hi: np.ndarray, t_lo: np.ndarray, t_hi: np.ndarray, t: float
                        ) -> np.ndarray:
    """The share that finishes by `t` between grid points hi - 1 (time t_lo, slower than t) and hi (t_hi, by t)
    [m], interpolated in log share against log time; grid[0] where even the least grid share finishes by t."""
    log_w, lt = np.log(grid), math.log(t)
    lo = np.maximum(hi - 1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        l_lo, l_hi = np.log(t_lo), np.log(t_hi)
        frac = np.where(np.isfinite(l_lo) & (l_lo > l_hi), (l_lo - lt) / (l_lo - l_hi), 1.0)
    shares = np.exp(log_w[lo] + np.clip(frac, 0.0, 1.0) * (log_w[hi] - log_w[lo]))
    return np.where(hi == 0, grid[0], shares)


def slot_seconds(times: np.ndarray, grid: np.ndarray, *, floor_s: float = 0.0,
                 iterations: int = 60) -> tuple[float, np.ndarray]:
    """T* = min_w max_i times_i(w_i) with sum_i w_i = 1, and the shares: `times` [n, G] holds each sender's round
    time at the shares of `grid` (ascending). See `min_max_slot`."""
    return min_max_slot(least=lambda t: least_shares(times, grid, t), n=times.shape[0],
                        whole_band_s=float(times[:, -1].max()), floor_s=floor_s, iterations=iterations)


def min_max_slot(*, least: Callable[[float], np.ndarray], n: int, whole_band_s: float, floor_s: float = 0.0,
                 iterations: int = 60) -> tuple[float, np.ndarray]:
    """T* = min_w max_i t_i(w_i) with sum_i w_i = 1, and the shares, by bisection on T: the senders' least shares
    for T (`least`: [n], inf where a sender cannot finish by T) must fit the band. The slot lasts at least as long
    as its slowest sender on the whole band (`whole_band_s`) and as `floor_s` (a round without an upload). (inf,
    equal shares) when no split of the band lets every sender finish."""
    even = np.full(n, 1.0 / n)
    low = max(floor_s, whole_band_s)
    high = low
    if not math.isfinite(low):
        return math.inf, even
    while least(high).sum() > 1.0:  # grow until the band holds every sender's least share
        high *= 2.0
        if high > 1e9:
            return math.inf, even
    for _ in range(iterations):
        mid = (low + high) / 2
        if least(mid).sum() <= 1.0:
            high = mid
        else:
            low = mid
    shares = least(high)
    return high, shares / shares.sum()


class PlannedTimes:
    """Round times t_i(w) of senders at the shares of a grid (ascending) [n, G], priced only where the min-max
    solver looks: each sender's time is non-increasing in its share, so its least grid share that finishes by T is
    found by a binary search that prices about log2(G) of the G shares, and the bisection on T keeps reading the
    same few. The plans are those of the full table (`least_shares`) at a fraction of the pricing."""

    def __init__(self, *, senders: list[Sender], grid: np.ndarray, upload_s: Callable[[Sender, float], float]) -> None:
        self.senders, self.grid, self.upload_s = senders, grid, upload_s
        self.times = np.full((len(senders), len(grid)), np.nan)  # [n, G]: NaN until priced
        self.priced = np.zeros(self.times.shape, dtype=bool)  # [n, G]

    def at(self, i: int, j: int) -> float:
        if not self.priced[i, j]:
            sender = self.senders[i]
            self.times[i, j] = sender.fixed_s + self.upload_s(sender, float(self.grid[j]))
            self.priced[i, j] = True
        return float(self.times[i, j])

    def least(self, t: float) -> np.ndarray:
        """`least_shares` of the full table at `t` [n]."""
        last = len(self.grid) - 1
        hi = np.full(len(self.senders), last)
        fits = np.zeros(len(self.senders), dtype=bool)
        for i in range(len(self.senders)):
            if not self.at(i, last) <= t:  # slower than t (or not a number), as `least_shares` reads it
                continue
            fits[i] = True
            lo, up = -1, last  # at(lo) > t (or before the grid), at(up) <= t
            while up - lo > 1:
                mid = (lo + up) // 2
                lo, up = (lo, mid) if self.at(i, mid) <= t else (mid, up)
            hi[i] = up
        t_lo = np.array([self.at(i, max(int(hi[i]) - 1, 0)) if fits[i] else math.inf for i in range(len(hi))])
        t_hi = np.array([self.at(i, int(hi[i])) for i in range(len(hi))])
        return np.where(fits, interpolated_shares(grid=self.grid, hi=hi, t_lo=t_lo, t_hi=t_hi, t=t), np.inf)


def multi_spin_shares(senders: list[Sender], *, upload_s: Callable[[Sender, float], float],
                      floor_s: float = 0.0) -> dict[int, float]:
    """Multi-SPIN-style bandwidth allocation (Multi-access speculative inference, arXiv 2606.04581, its
    homogeneous case): a slot's uploads are verified as one synchronised batch, so the slot lasts as long as its
    slowest round, and the sum goodput of the slot's fixed tokens is maximised by the FDMA shares that minimise it:

        min_w max_i  c_i + t_i(w_i)   s.t.  sum_i w_i = 1,  w_i > 0,

    with c_i the round's time besides its upload (`Sender.fixed_s`) and t_i(w) the upload's planned time on a
    share w of the band (`upload_s`: under eq. 3, o + b_i / (w W log2(1 + SNR_i h_i / w))). The optimum equalises
    the senders' finishing times, so weaker devices (far, in a fade, more bits, slower rounds) get more of the band,
    the paper's finding for this case. Solved by `min_max_slot` on t_i tabulated on `MULTI_SPIN_GRID` (priced where
    the solver looks: `PlannedTimes`); the equal split is kept where the plan does not beat it (so it never plans a
    slower slot). `floor_s` is a time the slot lasts anyway (a round without an upload): no sender needs to finish
    before it.
    """
    if len(senders) == 1:
        return {senders[0].device: 1.0}

    def slot_time(w: dict[int, float]) -> float:
        return max(s.fixed_s + upload_s(s, w[s.device]) for s in senders)

    equal = equal_shares(senders)
    table = PlannedTimes(senders=senders, grid=np.array(MULTI_SPIN_GRID)[::-1], upload_s=upload_s)  # ascending
    whole_band = max(table.at(i, len(MULTI_SPIN_GRID) - 1) for i in range(len(senders)))
    slot, shares = min_max_slot(least=table.least, n=len(senders), whole_band_s=whole_band, floor_s=floor_s)
    if not math.isfinite(slot):
        return equal
    plan = {s.device: float(w) for s, w in zip(senders, shares, strict=True)}
    return plan if slot_time(plan) <= slot_time(equal) else equal


def verify_batches(*, arrivals: list[float], passes: list[float], deadline_s: float, max_batch: int) -> list[float]:
    """The base station batches a slot's verifications (WISP-style deadline batching; Triton's max_queue_delay):
    a batch is dispatched when the LLM is free and either `max_batch` requests have arrived or the oldest waiting one
    has waited `deadline_s`; it holds every request that arrived by then (at most `max_batch`, oldest first), and one
    LLM pass serves it in the time of its longest request's pass (verification is memory-bound: the weights are read
    once per pass, so a batch costs about what one request costs). Returns each request's wait beyond its own solo
    pass: dispatch + pass_batch - arrival - pass_i. Times are from the slot's start; the LLM is idle when it starts.
    """
    order = sorted(range(len(arrivals)), key=lambda i: (arrivals[i], i))
    waits = [0.0] * len(arrivals)
    free, k = 0.0, 0
    while k < len(order):
        pending = order[k:]
        full = arrivals[pending[max_batch - 1]] if len(pending) >= max_batch else math.inf
        dispatch = max(free, min(arrivals[pending[0]] + deadline_s, full))
        batch = [i for i in pending[:max_batch] if arrivals[i] <= dispatch]
        longest = max(passes[i] for i in batch)
        for i in batch:
            waits[i] = dispatch + longest - arrivals[i] - passes[i]
        free = dispatch + longest
        k += len(batch)
    return waits


def jain_index(values: list[float]) -> float:
    """Jain's fairness index (Jain, Chiu and Hawe, DEC-TR-301, 1984): (sum x_i)^2 / (n sum x_i^2), 1 when every x_i
    is equal, 1/n when one device has everything; NaN for no values or all zero."""
    x = np.asarray(values, dtype=float)
    square = float((x**2).sum())
    return float(x.sum() ** 2 / (len(x) * square)) if len(x) and square > 0 else math.nan


def verified_tokens(record: Record) -> int:
    """Tokens of a round the LLM verified or produced (goodput's numerator): a sent round's accepted drafts and its
    recovered or bonus token; none for a draft kept without verification (a skipped round, a missed deadline)."""
    if record.method == "llm":
        return 1
    if isinstance(record, BlockRecord):
        return record.num_accepted + int(record.recovered or record.bonus) if record.sent and \
            not record.deadline_fallback else 0
    return int(record.sent and record.accepted is not None)


def round_tokens(record: Record) -> int:
    return len(record.tokens) if isinstance(record, BlockRecord) else 1


# --- the schedule of a cell ---------------------------------------------------------------------------------------

@dataclass
class ScheduledCell:
    """The records with each upload priced under the scheduler, and what the base station added."""

    records: dict[int, list[Record]]  # tau_up_s includes a round-robin turn's wait
    shares: dict[int, list[float]]  # each round's share of the band (1: a TDMA turn; 0: not sent)
    verify_wait_s: dict[int, list[float]]  # each round's wait for its batched verification (0: priced alone)
    slot_seconds: list[float]  # each slot's duration: its slowest round


def _key(*, seed: int, device: int, record: Record) -> SessionKey:
    return SessionKey(seed=seed, device=device, prompt=record.prompt_index)


def _priced(*, record: Record, channel: ChannelConfig, mean_snr: float, share: float, key: SessionKey,
            start_s: float) -> Record:
    """The record's upload on a share of the band (noise over the band: SNR / w on w W), decided at `start_s`."""
    return reprice(record=record, channel=channel, mean_snr=mean_snr / share, key=key,
                   bandwidth_hz=channel.bandwidth_hz * share, start_s=start_s)


def _known_gain(*, record: Record, channel: ChannelConfig, mean_snr: float, key: SessionKey, start_s: float
                ) -> float:
    """The fading gain when the round decides to upload, the channel state a scheduler knows from the device's
    pilot before it shares the band: the gain the upload priced alone starts with. On a process in time that is
    h(start_s), read without pricing the upload (opportunistic PF asks again for every waiting sender at every
    turn); per round, the upload's own keyed draw. 1 where it is not defined (after an upload that never ends)."""
    process = shared_process(channel=channel, key=key)
    if process is not None:
        gain = process.gain_at(start_s)
        return gain if math.isfinite(gain) and gain > 0 else 1.0
    alone = reprice(record=record, channel=channel, mean_snr=mean_snr, key=key, start_s=start_s)
    return 10 ** (alone.snr_db / 10) / mean_snr if math.isfinite(alone.snr_db) else 1.0


def _planned_upload(sender: Sender, share: float, *, channel: ChannelConfig) -> float:
    """multi_spin's plan: the configured link model's expected upload time on a share of the band at the sender's
    known gain (`expected_upload_seconds`: eq. 3 and inversion use the gain, ARQ sends blind)."""
    return expected_upload_seconds(bits=sender.bits, channel=channel, mean_snr=sender.mean_snr / share,
                                   gain=sender.gain, bandwidth_hz=channel.bandwidth_hz * share)


def _phases(record: Record, clock: ModelledClock) -> tuple[float, float]:
    """(before the upload: drafting and measure; after it: the solo LLM pass and the answer's way back) of a round
    on `clock`."""
    before = modelled_seconds(record=dataclasses.replace(record, sent=False, tau_up_s=0.0, deadline_fallback=False),
                              clock=clock)
    whole = modelled_seconds(record=dataclasses.replace(record, tau_up_s=0.0, deadline_fallback=False), clock=clock)
    return before, whole - before


def _llm_pass(record: Record, clock: ModelledClock) -> float:
    """The round's LLM pass alone on `clock` (what a batch shares)."""
    if isinstance(record, BlockRecord):
        return clock.llm_pass_seconds(measured_s=record.tau_llm_s, tokens=record.llm_pass_tokens)
    return clock.tau_llm


def schedule_uplink(
    *, records_by_device: dict[int, list[Record]], cell: CellConfig, channel: ChannelConfig,
    mean_snrs: dict[int, float], seed: int, clock: ModelledClock | None = None,
) -> ScheduledCell:
    """Every slot's uploads priced under `cell.scheduler` (see the module docstring), the verification waits under
    `cell.verify_deadline_ms`, and each slot's duration on `clock` (NaN durations without a clock). `mean_snrs`
    holds each device's average SNR over the whole band; fading draws are each round's own keyed ones.

    With a fading process in time (channel.process) each device's prompt is walked on `clock` as in
    `reprice_prompt`: a round starts when the device's round before it ended (waits for its TDMA turn and its
    batched verification included) and reads h from its upload decision on, a TDMA turn from the moment it gets the
    band; without a clock each round keeps the decision time it recorded."""
    scheduler = scheduler_name(cell)
    if clock is None and (scheduler == "multi_spin" or cell.verify_deadline_ms is not None):
        raise ValueError(f"cell.scheduler={scheduler!r} / cell.verify_deadline_ms need the modelled clock")
    out = {d: list(rs) for d, rs in records_by_device.items()}
    shares = {d: [0.0] * len(rs) for d, rs in records_by_device.items()}
    waits = {d: [0.0] * len(rs) for d, rs in records_by_device.items()}
    slot_seconds: list[float] = []
    average_rate: dict[int, float] = {}
    elapsed: dict[int, float] = {}  # per device: modelled seconds since its current prompt's first round began
    prompt_of: dict[int, int] = {}
    depth = max((len(rs) for rs in records_by_device.values()), default=0)
    for slot in range(depth):
        present = {d: rs[slot] for d, rs in records_by_device.items() if slot < len(rs)}
        sending = {d: r for d, r in present.items() if r.sent}
        decided = {}  # each sender's upload decision on its prompt's time axis
        for d, r in sending.items():
            if prompt_of.get(d) != r.prompt_index:
                prompt_of[d], elapsed[d] = r.prompt_index, 0.0
            decided[d] = elapsed[d] + clock.upload_offset(r) if clock is not None else r.up_start_s
        senders = [Sender(device=d, bits=float(r.payload_bits), mean_snr=mean_snrs[d],
                          gain=_known_gain(record=r, channel=channel, mean_snr=mean_snrs[d],
                                           key=_key(seed=seed, device=d, record=r), start_s=decided[d])
                          if scheduler in ("proportional_fair", "multi_spin") else 1.0,
                          fixed_s=sum(_phases(r, clock)) if scheduler == "multi_spin" else 0.0)
                   for d, r in sending.items()]
        if scheduler in ("round_robin", "proportional_fair_tdma") and senders:
            ahead = 0.0  # the band is busy with the turns before this one
            rotation = round_robin_order(senders, slot=slot)
            waiting = list(rotation)
            while waiting:
                if scheduler == "round_robin":
                    d = waiting[0]
                else:  # opportunistic PF: the deferred senders' fades are read again when the band frees up
                    now = [Sender(device=w, bits=float(sending[w].payload_bits), mean_snr=mean_snrs[w],
                                  gain=_known_gain(record=sending[w], channel=channel, mean_snr=mean_snrs[w],
                                                   key=_key(seed=seed, device=w, record=sending[w]),
                                                   start_s=decided[w] + ahead)) for w in waiting]
                    d = proportional_fair_pick(now, average_rate=average_rate, fading=channel.fading,
                                               tie_order=rotation)
                    served = next(s for s in now if s.device == d)
                    average_rate[d] = proportional_fair_average(
                        average=proportional_fair_prior(served, average_rate=average_rate, fading=channel.fading),
                        served=math.log2(1.0 + served.mean_snr * served.gain), window=cell.pf_window)
                waiting.remove(d)
                r = sending[d]
                own = reprice(record=r, channel=channel, mean_snr=mean_snrs[d], key=_key(seed=seed, device=d, record=r),
                              start_s=decided[d] + ahead)
                out[d][slot] = dataclasses.replace(own, tau_up_s=ahead + own.tau_up_s, up_start_s=decided[d])
                shares[d][slot] = 1.0
                ahead += own.tau_up_s
        elif senders:
            if scheduler == "equal":
                w = equal_shares(senders)
            elif scheduler == "proportional_fair":
                w = proportional_fair_shares(senders, average_rate=average_rate)
                for s in senders:
                    served = w[s.device] * math.log2(1.0 + s.mean_snr * s.gain / w[s.device])
                    average_rate[s.device] = proportional_fair_average(
                        average=average_rate.get(s.device), served=served, window=cell.pf_window)
            else:
                floor = max((modelled_seconds(record=r, clock=clock) for d, r in present.items() if not r.sent),
                            default=0.0)
                w = multi_spin_shares(senders, upload_s=partial(_planned_upload, channel=channel), floor_s=floor)
            for s in senders:
                r = sending[s.device]
                out[s.device][slot] = _priced(record=r, channel=channel, mean_snr=mean_snrs[s.device],
                                              share=w[s.device], key=_key(seed=seed, device=s.device, record=r),
                                              start_s=decided[s.device])
                shares[s.device][slot] = w[s.device]
        if clock is None:
            slot_seconds.append(math.nan)
            continue
        if cell.verify_deadline_ms is not None and sending:
            devices = list(sending)
            arrivals = [_phases(out[d][slot], clock)[0] + out[d][slot].tau_up_s for d in devices]
            batch_waits = verify_batches(arrivals=arrivals, passes=[_llm_pass(out[d][slot], clock) for d in devices],
                                         deadline_s=cell.verify_deadline_ms / 1e3, max_batch=cell.verify_max_batch)
            for d, wait in zip(devices, batch_waits, strict=True):
                waits[d][slot] = wait
        rounds = {d: modelled_seconds(record=out[d][slot], clock=clock) + waits[d][slot] for d in present}
        for d, seconds in rounds.items():
            if prompt_of.get(d) != present[d].prompt_index:
                prompt_of[d], elapsed[d] = present[d].prompt_index, 0.0
            elapsed[d] += seconds
        slot_seconds.append(max(rounds.values()))
    return ScheduledCell(records=out, shares=shares, verify_wait_s=waits, slot_seconds=slot_seconds)


def apply_shared_uplink(
    *, records_by_device: dict[int, list[Record]], channel: ChannelConfig, mean_snrs: dict[int, float], seed: int,
    cell: CellConfig | None = None, clock: ModelledClock | None = None,
) -> dict[int, list[Record]]:
    """Copies of the records with each upload priced on its slot's share of the band (equal split by default: W/n
    at n times the device's SNR, the round's own fading draws); `mean_snrs` holds each device's average SNR."""
    return schedule_uplink(records_by_device=records_by_device, cell=cell or CellConfig(), channel=channel,
                           mean_snrs=mean_snrs, seed=seed, clock=clock).records


def cell_figures(*, scheduled: ScheduledCell, clock: ModelledClock) -> dict[str, object]:
    """The cell-wide figures on the cell's clock, where slot k lasts as long as its slowest round (uploads, batched
    verification) and the cell's time is the sum of its slots:

    - `goodput`: verified tokens (`verified_tokens`) of every device over the cell's time (tok/s of the cell);
    - `cell_throughput`: every token (verified or kept unverified) over the cell's time;
    - `device_throughputs`: each device's tokens over its own modelled time (its rounds, waits included), and
      `jain_index` over them (`jain_index`); `mean_device_throughput` their mean.
    """
    cell_s = float(sum(scheduled.slot_seconds))
    per_device, verified, tokens = {}, 0, 0
    for d, records in scheduled.records.items():
        seconds = sum(modelled_seconds(record=r, clock=clock) for r in records) + sum(scheduled.verify_wait_s[d])
        device_tokens = sum(round_tokens(r) for r in records)
        per_device[d] = run_throughput(tokens=device_tokens, seconds=seconds)
        verified += sum(verified_tokens(r) for r in records)
        tokens += device_tokens
    values = [per_device[d] for d in sorted(per_device)]
    waits = [w for d in scheduled.records for w, r in zip(scheduled.verify_wait_s[d], scheduled.records[d],
                                                           strict=True) if r.sent]
    return {
        "goodput": run_throughput(tokens=verified, seconds=cell_s),
        "goodput_tokens": verified,
        "cell_throughput": run_throughput(tokens=tokens, seconds=cell_s),
        "cell_modelled_s": cell_s,
        "device_throughputs": values,
        "mean_device_throughput": float(np.mean(values)) if values else math.nan,
        "jain_index": jain_index(values),
        "mean_verify_wait_ms": float(np.mean(waits)) * 1e3 if waits else math.nan,
    }


def virtual_cell(*, results: list[PromptResult], n_devices: int, prompts_per_device: int = 1) -> list[PromptResult]:
    """A cell built from prompts decoded once (by one device): device i's k-th prompt is prompt p = k N + i, as in
    the cell job, its records those of decoded prompt p modulo the number decoded. Only the uplink is priced again
    (under device i's keyed fading draws, at its own distance), so this prices schedulers and device counts without
    decoding; the tokens are those decoded under device 0's draws, not device i's (the same distribution)."""
    ordered = sorted(results, key=lambda r: r.prompt_index)
    if not ordered:
        return []
    out = []
    for k in range(prompts_per_device):
        for i in range(n_devices):
            p = k * n_devices + i
            out.append(dataclasses.replace(ordered[p % len(ordered)], device_index=i, prompt_index=p))
    return out


def summarize_cell(
    *,
    results: list[PromptResult],
    distances_m: list[float],
    channel: ChannelConfig,
    clock: ModelledClock,
    seed: int,
    cell: CellConfig | None = None,
    per_device_summaries: bool = True,
) -> dict[str, dict]:
    """Per-device metrics and cell-wide ones (`cell`), on the modelled clock with the shared uplink.

    Throughputs, named apart: `aggregate_throughput_modelled` (the cell entry) is every device's tokens over the
    slowest device's modelled time (devices run in parallel); `throughput_modelled` is one device's own tokens over
    its own time (in the cell entry: pooled over devices, i.e. the rate of an average device); `goodput` and
    `cell_throughput` are over the cell's slotted clock (`cell_figures`), and `jain_index` is Jain's fairness over
    the per-device throughputs. A device's `modelled_s` and `throughput_modelled` include its verification waits.
    `per_device_summaries=False` skips the per-device and pooled accuracy summaries (a sweep or bench that only
    wants the cell-wide figures).
    """
    cell = cell or CellConfig()
    by_device: dict[int, list[PromptResult]] = {}
    for res in sorted(results, key=lambda r: (r.device_index, r.prompt_index)):
        by_device.setdefault(res.device_index, []).append(res)
    channels = {d: device_channel(channel=channel, distance_m=distances_m[d]) for d in by_device}
    scheduled = schedule_uplink(
        records_by_device={d: [r for res in rs for r in res.records] for d, rs in by_device.items()}, cell=cell,
        channel=channel, mean_snrs={d: mean_snr(ch) for d, ch in channels.items()}, seed=seed, clock=clock,
    )
    figures = cell_figures(scheduled=scheduled, clock=clock)
    device_throughputs = dict(zip(sorted(by_device), figures.pop("device_throughputs"), strict=True))
    headline = {
        **figures, "scheduler": scheduler_name(cell), "num_devices": len(by_device),
        "max_transmitters_per_slot": max(slot_transmitters(scheduled.records).values(), default=0),
        "verify_deadline_ms": math.nan if cell.verify_deadline_ms is None else cell.verify_deadline_ms,
    }
    if not per_device_summaries:
        return {"cell": headline, "devices": {d: {"throughput_modelled": t} for d, t in device_throughputs.items()}}
    shared_results = {}
    for device, rs in by_device.items():
        records = iter(scheduled.records[device])
        shared_results[device] = [dataclasses.replace(res, records=[next(records) for _ in res.records]) for res in rs]

    devices = {}
    for device, rs in shared_results.items():
        # already priced on the scheduler's shares and the modelled clock: no re-walk on the whole band
        summary = summarize(results=rs, clock=clock, channel=channels[device], seed=seed, snr_sweep_db=[],
                            rewalk=False)
        wait = float(sum(scheduled.verify_wait_s[device]))
        summary["verify_wait_s"] = wait
        summary["modelled_s"] += wait
        summary["throughput_modelled"] = device_throughputs[device]
        summary["distance_m"] = distances_m[device]
        summary["mean_snr_db"] = mean_snr_db(channels[device])
        summary["mean_band_share"] = float(np.mean([w for w, r in zip(scheduled.shares[device],
                                                                         scheduled.records[device], strict=True)
                                                    if r.sent] or [math.nan]))
        devices[device] = summary
    pooled = summarize(results=[res for rs in shared_results.values() for res in rs], clock=clock,
                       channel=channel, seed=seed, snr_sweep_db=[], rewalk=False)
    device_seconds = [devices[d]["modelled_s"] for d in devices]
    pooled["modelled_s"] = float(sum(device_seconds))
    pooled["throughput_modelled"] = run_throughput(tokens=pooled["num_tokens"], seconds=pooled["modelled_s"])
    pooled["aggregate_throughput_modelled"] = run_throughput(tokens=pooled["num_tokens"], seconds=max(device_seconds))
    pooled["mean_device_throughput_modelled"] = headline.pop("mean_device_throughput")
    pooled.update(headline)
    return {"cell": pooled, "devices": devices}



# a sweep trial's cell figures: the metric's name, the cell summary's key
CELL_FIGURES = {"cell_goodput": "goodput", "cell_throughput": "cell_throughput", "cell_jain_index": "jain_index",
                "cell_mean_device_throughput": "mean_device_throughput", "cell_modelled_s": "cell_modelled_s",
                "cell_mean_verify_wait_ms": "mean_verify_wait_ms"}


def virtual_cell_figures(*, results: list[PromptResult], cfg: EvaluateConfig, clock: ModelledClock
                         ) -> dict[str, float]:
    """A sweep trial's cell figures (`CELL_FIGURES`): its decoded prompts of one method made into `cfg.cell`'s
    cell (`virtual_cell`: cell.n_devices devices at their distances, cell.prompts_per_device prompts each) and
    priced under cfg.cell.scheduler; NaN for no results. tune_spaces/schedulers.yaml sweeps the scheduler and the
    number of devices this way, decoding each prompt once for the whole sweep. NaN under
    cell.draft_lengths=multi_spin too: its devices decode at their own planned lengths, which only jobs/cell.py
    does; a trial's prompts were decoded at one length."""
    cell = cfg.cell
    cell_results = virtual_cell(results=results, n_devices=cell.n_devices, prompts_per_device=cell.prompts_per_device)
    if not cell_results or cell.draft_lengths != "configured":
        return dict.fromkeys(CELL_FIGURES, math.nan)
    summary = summarize_cell(results=cell_results, distances_m=device_distances(cell), channel=cfg.channel,
                             clock=clock, seed=cfg.decode.seed, cell=cell, per_device_summaries=False)["cell"]
    return {name: float(summary[key]) for name, key in CELL_FIGURES.items()}
