"""The uplink: path loss, Rayleigh block fading, and how long an upload of B bits takes under three link models.

A round's received SNR is  SNR(t) = p * rho^(-alpha) * h(t) / N  with h(t) ~ Exp(1), the power gain of a Rayleigh
fading channel, drawn once per round (block fading). The paper's defaults, W = 1 MHz, p = 23 dBm, N = -104 dBm,
alpha = 4, rho = 2.5 km, give an average SNR of about -8.9 dB (see `uhlm_ray.snr.mean_snr_db`).

Link models (`channel.model`):

- `shannon`, the U-HLM paper's eq. 3: the device knows h(t) and sends at exactly the capacity W log2(1 + SNR(t)).
  Under Rayleigh fading its mean upload time is infinite: E[1 / log2(1 + s h)] diverges at h -> 0, so a run's mean
  is set by its deepest fade and keeps growing with the number of rounds, while the median stays put.
- `arq`: fixed-rate transmission without channel knowledge, R bit/s/Hz (given, or the rate that minimises the
  expected upload time). An attempt succeeds when log2(1 + SNR h) >= R, otherwise the base station answers NACK
  (`arq_feedback_ms`) and the device retransmits in a new fading block. Attempts are geometric, the mean is finite.
- `inversion`: truncated channel inversion. The device sends only when h >= h0 (the cut-off, given or the one that
  maximises the rate), inverting the fading so the received SNR is constant; in a fade below h0 it waits a
  coherence time (`coherence_ms`) for the next block. With an average power constraint the constant SNR is
  s / E1(h0) (Goldsmith, Wireless Communications, 4.2.4), so the rate is W log2(1 + s / E1(h0)).

Every upload also pays `upload_overhead_ms` (scheduling request, grant and round trip) once: without it n uploads of
one draft would cost what one upload of n drafts does. A deadline (`deadline_ms`) either waits (exact) or gives
up and lets the device keep its draft unverified (`deadline_mode=fallback`, lossy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import exp1

from uhlm_ray.config import ChannelConfig


def draw_fading_gain(*, rng: np.random.Generator, fading: str) -> float:
    """h(t): the round's channel power gain, Exp(1) under Rayleigh block fading, 1 without fading."""
    return float(rng.exponential(1.0)) if fading == "rayleigh" else 1.0


def uplink_seconds(*, bits: float, bandwidth_hz: float, snr: float) -> float:
    """Eq. 3: tau(t) = B / (W log2(1 + SNR(t))); infinite when the SNR is zero."""
    rate = bandwidth_hz * math.log2(1.0 + snr)
    return bits / rate if rate > 0 else math.inf


@dataclass(frozen=True)
class Upload:
    """One upload on the modelled clock."""

    seconds: float  # from the scheduling request to the last bit (or to the deadline, when it gave up)
    attempts: int  # transmissions (ARQ), or fading blocks waited through plus one (inversion)
    gain: float  # h of the first fading block
    delivered: bool  # False: the deadline passed first and the device kept its drafts (deadline_mode=fallback)


def arq_success_probability(*, rate: float, mean_snr: float) -> float:
    """P(log2(1 + s h) >= R) = exp(-(2^R - 1) / s) for h ~ Exp(1)."""
    return math.exp(-(2.0**rate - 1.0) / mean_snr) if mean_snr > 0 else 0.0


def arq_expected_seconds(*, bits: float, rate: float, bandwidth_hz: float, mean_snr: float, feedback_s: float) -> float:
    """E[time] of fixed-rate ARQ without overhead: each of the geometric attempts costs B / (W R), each failure one
    NACK round trip more: (B / (W R) + f) / p - f."""
    p = arq_success_probability(rate=rate, mean_snr=mean_snr)
    return (bits / (bandwidth_hz * rate) + feedback_s) / p - feedback_s if p > 0 else math.inf


@lru_cache(maxsize=4096)
def latency_optimal_rate(*, bits: float, bandwidth_hz: float, mean_snr: float, feedback_s: float) -> float:
    """The ARQ rate R (bit/s/Hz) that minimises the expected upload time of B bits (a higher rate sends faster but
    fails more often). Without feedback delay the optimum solves R 2^R ln 2 = s."""
    result = minimize_scalar(
        lambda log_rate: arq_expected_seconds(bits=bits, rate=math.exp(log_rate), bandwidth_hz=bandwidth_hz,
                                              mean_snr=mean_snr, feedback_s=feedback_s),
        bounds=(math.log(1e-4), math.log(30.0)), method="bounded", options={"xatol": 1e-6})
    return math.exp(result.x)


def inversion_rate(*, cutoff: float, mean_snr: float) -> float:
    """Spectral efficiency of truncated channel inversion with cut-off h0: log2(1 + s / E1(h0))."""
    return math.log2(1.0 + mean_snr / float(exp1(cutoff)))


@lru_cache(maxsize=1024)
def optimal_inversion_cutoff(*, mean_snr: float) -> float:
    """The cut-off h0 that maximises the average rate log2(1 + s / E1(h0)) P(h >= h0), outage included."""
    result = minimize_scalar(lambda h0: -inversion_rate(cutoff=h0, mean_snr=mean_snr) * math.exp(-h0),
                             bounds=(1e-6, 10.0), method="bounded", options={"xatol": 1e-8})
    return float(result.x)


def _arq_rate(*, bits: float, channel: ChannelConfig, mean_snr: float, bandwidth_hz: float) -> float:
    if channel.arq_rate is not None:
        return channel.arq_rate
    if channel.fading == "none":  # no fading, no failures: the capacity itself
        return math.log2(1.0 + mean_snr)
    return latency_optimal_rate(bits=float(bits), bandwidth_hz=bandwidth_hz, mean_snr=mean_snr,
                                feedback_s=channel.arq_feedback_ms / 1e3)


def _inversion_cutoff(*, channel: ChannelConfig, mean_snr: float) -> float:
    return channel.inversion_cutoff if channel.inversion_cutoff is not None else \
        optimal_inversion_cutoff(mean_snr=mean_snr)


MAX_ATTEMPTS = 100_000  # a link that cannot deliver (no fading and a rate above capacity) is infinitely slow


def upload(
    *, bits: float, channel: ChannelConfig, mean_snr: float, rng: np.random.Generator,
    bandwidth_hz: float | None = None,
) -> Upload:
    """The time one upload of `bits` takes on `channel` at average SNR `mean_snr`, fading drawn from `rng`.

    `rng` is the round's keyed generator: its first draw is the fading gain eq. 3 uses, so `shannon` gives the
    paper's tau(t) for the same draw. `bandwidth_hz` overrides W (a share of the band in a cell).
    """
    width = channel.bandwidth_hz if bandwidth_hz is None else bandwidth_hz
    overhead = channel.upload_overhead_ms / 1e3
    gain = draw_fading_gain(rng=rng, fading=channel.fading)
    if channel.model == "shannon":
        seconds, attempts = overhead + uplink_seconds(bits=bits, bandwidth_hz=width, snr=mean_snr * gain), 1
    elif channel.model == "arq":
        rate = _arq_rate(bits=bits, channel=channel, mean_snr=mean_snr, bandwidth_hz=width)
        air, feedback = bits / (width * rate), channel.arq_feedback_ms / 1e3
        seconds, attempts, h = overhead + air, 1, gain
        while math.log2(1.0 + mean_snr * h) < rate:  # NACK: wait for the feedback, retransmit in a new block
            if attempts >= MAX_ATTEMPTS or channel.fading == "none":  # a rate above capacity never gets through
                seconds = math.inf
                break
            seconds += feedback + air
            attempts += 1
            h = draw_fading_gain(rng=rng, fading=channel.fading)
    else:  # truncated channel inversion
        if channel.fading == "none":
            rate = math.log2(1.0 + mean_snr)
            waits = 0
        else:
            cutoff = _inversion_cutoff(channel=channel, mean_snr=mean_snr)
            rate = inversion_rate(cutoff=cutoff, mean_snr=mean_snr)
            waits, h = 0, gain
            while h < cutoff and waits < MAX_ATTEMPTS:  # below the cut-off: no transmission this block
                waits += 1
                h = draw_fading_gain(rng=rng, fading=channel.fading)
        air = bits / (width * rate) if rate > 0 else math.inf
        seconds, attempts = overhead + waits * channel.coherence_ms / 1e3 + air, waits + 1
    if channel.deadline_ms is not None and seconds > channel.deadline_ms / 1e3 and channel.deadline_mode == "fallback":
        return Upload(seconds=channel.deadline_ms / 1e3, attempts=attempts, gain=gain, delivered=False)
    return Upload(seconds=seconds, attempts=attempts, gain=gain, delivered=True)


def expected_upload_seconds(
    *, bits: float, channel: ChannelConfig, mean_snr: float, gain: float | None = None,
    bandwidth_hz: float | None = None,
) -> float:
    """What a device expects an upload of `bits` to take, knowing the current fading gain where the link model lets
    it use that (eq. 3 and inversion adapt to h; ARQ sends blind). `gain=None`: the average fading block (h = 1)
    for eq. 3, whose true mean is infinite."""
    width = channel.bandwidth_hz if bandwidth_hz is None else bandwidth_hz
    overhead = channel.upload_overhead_ms / 1e3
    h = 1.0 if gain is None else gain
    if channel.model == "shannon":
        return overhead + uplink_seconds(bits=bits, bandwidth_hz=width, snr=mean_snr * h)
    if channel.model == "arq":  # sent blind: the expectation over the attempts, whatever h is now
        rate = _arq_rate(bits=bits, channel=channel, mean_snr=mean_snr, bandwidth_hz=width)
        if channel.fading == "none":
            return overhead + (bits / (width * rate) if math.log2(1.0 + mean_snr) >= rate else math.inf)
        return overhead + arq_expected_seconds(bits=bits, rate=rate, bandwidth_hz=width, mean_snr=mean_snr,
                                               feedback_s=channel.arq_feedback_ms / 1e3)
    if channel.fading == "none":
        return overhead + uplink_seconds(bits=bits, bandwidth_hz=width, snr=mean_snr)
    cutoff = _inversion_cutoff(channel=channel, mean_snr=mean_snr)
    air = bits / (width * inversion_rate(cutoff=cutoff, mean_snr=mean_snr))
    waiting = 0.0 if gain is not None and gain >= cutoff else \
        channel.coherence_ms / 1e3 * (1.0 - math.exp(-cutoff)) / math.exp(-cutoff)
    return overhead + waiting + air
