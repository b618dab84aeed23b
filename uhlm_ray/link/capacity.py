"""The ergodic capacity of a fading link: the long-run rate of eq. 3 on a fading process in time (the uplink,
link/channel.py) and the rate of a base station that adapts to the fading the device reports (the downlink,
link/downlink.py)."""

from __future__ import annotations

import math

from scipy.special import exp1


def ergodic_capacity(*, mean_snr: float, fading: str) -> float:
    """E[log2(1 + s h)] for h ~ Exp(1): log2(e) e^(1/s) E1(1/s) bit/s/Hz (Goldsmith, Wireless Communications, 4.2.1),
    the long-run rate of eq. 3 in time; log2(1 + s) without fading."""
    if fading == "none":
        return math.log2(1.0 + mean_snr)
    x = 1.0 / mean_snr
    if x < 500.0:
        scaled = math.exp(x) * float(exp1(x))
    else:  # e^x E1(x) ~ 1/x - 1/x^2 + 2/x^3 - 6/x^4 (e^x overflows long before the series loses accuracy)
        scaled = 1.0 / x - 1.0 / x**2 + 2.0 / x**3 - 6.0 / x**4
    return scaled / math.log(2.0)
