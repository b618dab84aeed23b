"""The average received SNR a channel config describes (the link budget), and decibel conversions.

Pure arithmetic below `config.py`, so that config's validation and the link models share one formula without an
import circle; it imports nothing of the project at run time.
"""

from __future__ import annotations

import math
from typing import Protocol


class LinkBudget(Protocol):
    """What the average SNR is computed from (config.ChannelConfig has these fields; config imports this module)."""

    mean_snr_db: float | None
    tx_power_dbm: float
    distance_m: float
    path_loss_exponent: float
    noise_dbm: float


def dbm_to_watts(dbm: float) -> float:
    return 10.0 ** ((dbm - 30.0) / 10.0)


def db_to_linear(db: float) -> float:
    return 10.0 ** (db / 10.0)


def linear_to_db(value: float) -> float:
    return 10.0 * math.log10(value) if value > 0 else -math.inf


def mean_snr(cfg: LinkBudget) -> float:
    """The average received SNR (linear): p * rho^(-alpha) / N, or `mean_snr_db` when that is set."""
    if cfg.mean_snr_db is not None:
        return db_to_linear(cfg.mean_snr_db)
    received_watts = dbm_to_watts(cfg.tx_power_dbm) * cfg.distance_m ** (-cfg.path_loss_exponent)
    return received_watts / dbm_to_watts(cfg.noise_dbm)


def mean_snr_db(cfg: LinkBudget) -> float:
    return linear_to_db(mean_snr(cfg))
