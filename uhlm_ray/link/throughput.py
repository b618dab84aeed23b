"""Token throughput (U-HLM paper, eq. 4) for one round and over a run."""

from __future__ import annotations

import math


def round_seconds(*, sent: bool, tau_slm: float, tau_up: float, tau_llm: float) -> float:
    """The time eq. 4 charges a round: tau_SLM, plus tau(t) + tau_LLM when the round is sent (delta(t) = 1)."""
    return tau_slm + (tau_up + tau_llm if sent else 0.0)


def round_throughput(*, sent: bool, tau_slm: float, tau_up: float, tau_llm: float) -> float:
    """Eq. 4: T(t) = 1 / (tau_SLM + tau(t) + tau_LLM) if delta(t) = 1, else 1 / tau_SLM (tokens per second)."""
    seconds = round_seconds(sent=sent, tau_slm=tau_slm, tau_up=tau_up, tau_llm=tau_llm)
    return 1.0 / seconds if seconds > 0 else math.inf


def run_throughput(*, tokens: int, seconds: float) -> float:
    """Over a run: total tokens / total time (the paper's reported token throughput)."""
    return tokens / seconds if seconds > 0 else math.nan
