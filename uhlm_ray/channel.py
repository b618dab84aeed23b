"""The uplink (U-HLM paper, Section II-B): path loss, Rayleigh block fading, Shannon rate (eq. 3).

A round's received SNR is  SNR(t) = p * rho^(-alpha) * h(t) / N  with h(t) ~ Exp(1), the power gain of a Rayleigh
fading channel, drawn once per round (block fading). The paper's defaults, W = 1 MHz, p = 23 dBm, N = -104 dBm,
alpha = 4, rho = 2.5 km, give an average SNR of about -8.9 dB (see `mean_snr_db`).
"""

from __future__ import annotations

import math

import numpy as np

from uhlm_ray.config import ChannelConfig


def dbm_to_watts(dbm: float) -> float:
    return 10.0 ** ((dbm - 30.0) / 10.0)


def db_to_linear(db: float) -> float:
    return 10.0 ** (db / 10.0)


def linear_to_db(value: float) -> float:
    return 10.0 * math.log10(value)


def mean_snr(cfg: ChannelConfig) -> float:
    """The average received SNR (linear): p * rho^(-alpha) / N, or `mean_snr_db` when that is set."""
    if cfg.mean_snr_db is not None:
        return db_to_linear(cfg.mean_snr_db)
    received_watts = dbm_to_watts(cfg.tx_power_dbm) * cfg.distance_m ** (-cfg.path_loss_exponent)
    return received_watts / dbm_to_watts(cfg.noise_dbm)


def mean_snr_db(cfg: ChannelConfig) -> float:
    return linear_to_db(mean_snr(cfg))


def draw_fading_gain(*, rng: np.random.Generator, fading: str) -> float:
    """h(t): the round's channel power gain, Exp(1) under Rayleigh block fading, 1 without fading."""
    return float(rng.exponential(1.0)) if fading == "rayleigh" else 1.0


def uplink_seconds(*, bits: float, bandwidth_hz: float, snr: float) -> float:
    """Eq. 3: tau(t) = B / (W log2(1 + SNR(t))); infinite when the SNR is zero."""
    rate = bandwidth_hz * math.log2(1.0 + snr)
    return bits / rate if rate > 0 else math.inf
