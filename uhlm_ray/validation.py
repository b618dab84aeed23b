"""Input checks that fail early with an error naming the field and the allowed range."""

from __future__ import annotations

import math

import torch


class ConfigError(ValueError):
    """A setting or an input is outside what the code accepts; the message names the field."""


def check_range(
    value: float,
    *,
    field: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ConfigError unless low <= value <= high (open ends when asked); NaN is always rejected."""
    bad = value is None or (isinstance(value, float) and math.isnan(value))
    if not bad and low is not None:
        bad = value <= low if low_open else value < low
    if not bad and high is not None:
        bad = value >= high if high_open else value > high
    if bad:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ConfigError(f"{field}={value!r} is outside the allowed range {span}")


def check_choice(value: str, *, field: str, allowed: list[str] | tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{field}={value!r} is not one of {sorted(allowed)}")


def check_distribution(probs: torch.Tensor, *, field: str, size: int | None = None, atol: float = 1e-3) -> None:
    """A probability vector [V] or batch [B, V]: finite, non-negative, summing to 1, of the expected length."""
    if probs.ndim not in (1, 2):
        raise ConfigError(f"{field} must have shape [V] or [B, V], got {tuple(probs.shape)}")
    if size is not None and probs.shape[-1] != size:
        raise ConfigError(f"{field} has length {probs.shape[-1]}, expected the vocabulary size {size}")
    if not bool(torch.isfinite(probs).all()):
        raise ConfigError(f"{field} contains NaN or infinite entries")
    if bool((probs < 0).any()):
        raise ConfigError(f"{field} contains negative probabilities")
    total = probs.float().sum(dim=-1)
    if not bool(torch.allclose(total, torch.ones_like(total), atol=atol)):
        raise ConfigError(f"{field} must sum to 1 (within {atol}), got sums in [{total.min():.4g}, {total.max():.4g}]")
