"""Skip policies: each round, whether the device uploads x and asks the LLM (delta(t) = 1) or keeps its draft.

The methods of the U-HLM paper's evaluation:
- HLM: always send.             - SLM: never send.
- Rand-HLM: send with a fixed probability.
- U-HLM: send when the uncertainty exceeds u_th (eq. 8).
The fifth method, the LLM alone, has no policy: it is its own decoding loop (see `decode.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from uhlm_ray.validation import check_range


class SkipPolicy(Protocol):
    needs_uncertainty: bool

    def should_send(self, *, uncertainty: float, rng: np.random.Generator) -> bool: ...


@dataclass(frozen=True)
class AlwaysSend:
    """HLM: every draft is verified."""

    needs_uncertainty: bool = False

    def should_send(self, *, uncertainty: float, rng: np.random.Generator) -> bool:
        return True


@dataclass(frozen=True)
class NeverSend:
    """SLM alone: every draft is kept."""

    needs_uncertainty: bool = False

    def should_send(self, *, uncertainty: float, rng: np.random.Generator) -> bool:
        return False


@dataclass(frozen=True)
class RandomSend:
    """Rand-HLM: send with probability `send_prob`, independently each round."""

    send_prob: float
    needs_uncertainty: bool = False

    def __post_init__(self) -> None:
        check_range(self.send_prob, field="policy.send_prob", low=0.0, high=1.0)

    def should_send(self, *, uncertainty: float, rng: np.random.Generator) -> bool:
        return bool(rng.random() < self.send_prob)


@dataclass(frozen=True)
class UncertaintyThreshold:
    """U-HLM, eq. 8: delta(t) = 0 if u(t) <= u_th, else 1."""

    u_th: float
    needs_uncertainty: bool = True

    def __post_init__(self) -> None:
        check_range(self.u_th, field="policy.u_th", low=0.0, high=1.0)

    def should_send(self, *, uncertainty: float, rng: np.random.Generator) -> bool:
        return uncertainty > self.u_th
