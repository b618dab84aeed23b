"""Skip policies: each round, whether the device uploads x and asks the LLM (delta(t) = 1) or keeps its draft.

The methods of the U-HLM paper's evaluation:
- HLM: always send.             - SLM: never send.
- Rand-HLM: send with a fixed probability.
- U-HLM: send when the uncertainty exceeds u_th (eq. 8); CU-HLM the same on entropy or confidence.
- Channel-aware (beyond the papers): U-HLM's or CU-HLM's threshold moved by the round's channel.
The LLM alone has no policy: it is its own decoding loop (see `decode.py`).

Each round a policy sees u(t) and what this round's upload would cost: `upload_s`, its time at the round's SNR,
and `mean_upload_s`, the same payload's time at the average SNR (fading gain 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from uhlm_ray.validation import check_range

PAPER_TAU_LLM_MS = 104.6  # the U-HLM paper's LLM forward time: the channel-aware price when no clock is set


class SkipPolicy(Protocol):
    needs_uncertainty: bool

    def should_send(self, *, uncertainty: float, rng: np.random.Generator, upload_s: float = 0.0,
                    mean_upload_s: float = 0.0) -> bool: ...


@dataclass(frozen=True)
class AlwaysSend:
    """HLM: every draft is verified."""

    needs_uncertainty: bool = False

    def should_send(self, *, uncertainty: float, rng: np.random.Generator, upload_s: float = 0.0,
                    mean_upload_s: float = 0.0) -> bool:
        return True


@dataclass(frozen=True)
class NeverSend:
    """SLM alone: every draft is kept."""

    needs_uncertainty: bool = False

    def should_send(self, *, uncertainty: float, rng: np.random.Generator, upload_s: float = 0.0,
                    mean_upload_s: float = 0.0) -> bool:
        return False


@dataclass(frozen=True)
class RandomSend:
    """Rand-HLM: send with probability `send_prob`, independently each round."""

    send_prob: float
    needs_uncertainty: bool = False

    def __post_init__(self) -> None:
        check_range(self.send_prob, field="policy.send_prob", low=0.0, high=1.0)

    def should_send(self, *, uncertainty: float, rng: np.random.Generator, upload_s: float = 0.0,
                    mean_upload_s: float = 0.0) -> bool:
        return bool(rng.random() < self.send_prob)


@dataclass(frozen=True)
class UncertaintyThreshold:
    """U-HLM, eq. 8: delta(t) = 0 if u(t) <= u_th, else 1."""

    u_th: float
    needs_uncertainty: bool = True

    def __post_init__(self) -> None:
        check_range(self.u_th, field="policy.u_th", low=0.0, high=1.0)

    def should_send(self, *, uncertainty: float, rng: np.random.Generator, upload_s: float = 0.0,
                    mean_upload_s: float = 0.0) -> bool:
        return uncertainty > self.u_th


@dataclass(frozen=True)
class ChannelAwareThreshold:
    """U-HLM / CU-HLM with a threshold that follows the channel.

    The device trades time against rejection risk at a fixed price mu (seconds per unit of expected rejection):
    a round is worth sending when its cost, upload plus LLM pass, is below mu times the risk it removes, which
    Theorem 1's fit puts at beta(u) = a u + b. So it sends when u > u_th(t) = ((tau_up(t) + tau_LLM) / mu - b) / a.
    The price is fixed by asking that a round at the average SNR keep the configured threshold:
    mu = (tau_up_mean + tau_LLM) / (a u_th + b). Hence

        u_th(t) = ((tau_up(t) + tau_LLM) / (tau_up_mean + tau_LLM) * (a u_th + b) - b) / a,

    which is u_th in a round of average fading, higher in a deep fade (skip more when the uplink is poor) and lower
    on a good channel. Needs u_th > -b / a (a positive price); below that the threshold stays at u_th. The decoder
    passes tau_up with the answer's way back on the downlink added (`downlink.enabled`), in both the round's and the
    average's.
    """

    u_th: float
    fit_a: float
    fit_b: float
    tau_llm_s: float
    needs_uncertainty: bool = True

    def __post_init__(self) -> None:
        check_range(self.u_th, field="policy.u_th", low=0.0, high=1.0)
        check_range(self.fit_a, field="policy.fit_a", low=0.0, low_open=True)

    def threshold(self, *, upload_s: float, mean_upload_s: float) -> float:
        risk_at_u_th = self.fit_a * self.u_th + self.fit_b
        if risk_at_u_th <= 0 or not np.isfinite(upload_s):
            return self.u_th if risk_at_u_th <= 0 else 1.0  # no positive price / an outage: never worth sending
        ratio = (upload_s + self.tau_llm_s) / (mean_upload_s + self.tau_llm_s)
        return float(np.clip((ratio * risk_at_u_th - self.fit_b) / self.fit_a, 0.0, 1.0))

    def should_send(self, *, uncertainty: float, rng: np.random.Generator, upload_s: float = 0.0,
                    mean_upload_s: float = 0.0) -> bool:
        return uncertainty > self.threshold(upload_s=upload_s, mean_upload_s=mean_upload_s)
