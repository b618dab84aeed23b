"""CU-HLM's truncation level and uncertainty threshold for a rejection-risk budget.

The derivation, its assumptions and what it does not claim are in docs/cu_hlm_thresholds.md; each function here is
one of its results. Risks are expected rejection probabilities of skipped tokens, per token.
"""

from __future__ import annotations

import math

import numpy as np

from uhlm_ray.validation import ConfigError, check_range


def truncation_risk(*, kept_mass: float) -> float:
    """Lemma (section 1): drafting from x~ = x 1_S / m adds at most TV(x~, x) = 1 - m to a round's rejection."""
    check_range(kept_mass, field="kept_mass", low=0.0, high=1.0, low_open=True)
    return 1.0 - kept_mass


def top_p_for_budget(*, epsilon: float) -> float:
    """Proposition (section 2): the smallest payload adding at most epsilon is top-p with p = 1 - epsilon."""
    check_range(epsilon, field="epsilon", low=0.0, high=1.0, high_open=True)
    return 1.0 - epsilon


def risk_uniform(*, u_th: float, a: float, b: float, epsilon: float) -> float:
    """Section 3: R(u_th, eps) = int_0^u_th ((a u + b)^+ + eps) du for u ~ U[0, 1]."""
    start = min(max(-b / a, 0.0), u_th)  # where a u + b turns positive
    linear = a * (u_th**2 - start**2) / 2 + b * (u_th - start)
    return linear + epsilon * u_th


def threshold_for_budget_uniform(*, a: float, b: float, epsilon: float, budget: float) -> float:
    """Section 3's closed form: the largest u_th in [0, 1] with R(u_th, eps) <= budget, u ~ U[0, 1]."""
    check_range(a, field="a", low=0.0, low_open=True)
    check_range(budget, field="budget", low=0.0)
    if risk_uniform(u_th=1.0, a=a, b=b, epsilon=epsilon) <= budget:
        return 1.0
    knee = min(max(-b / a, 0.0), 1.0)  # below it only epsilon accrues
    if epsilon * knee >= budget:
        return budget / epsilon if epsilon > 0 else knee
    # past the knee: a (u^2 - knee^2) / 2 + b (u - knee) + eps u = budget, a quadratic in u
    c = budget + a * knee**2 / 2 + b * knee
    slope = b + epsilon
    return float(min((-slope + math.sqrt(slope**2 + 2 * a * c)) / a, 1.0))


def empirical_risk(*, u: np.ndarray, beta: np.ndarray, u_th: float, epsilon: float = 0.0) -> float:
    """R^(u_th) = (1/N) sum_t (beta_t + eps) 1{u_t <= u_th}: section 3 on the records."""
    skipped = u <= u_th
    return float(((beta + epsilon) * skipped).sum() / len(u)) if len(u) else math.nan


def threshold_for_budget(*, u: np.ndarray, beta: np.ndarray, budget: float, epsilon: float = 0.0) -> float:
    """Section 3 on the records: the largest recorded u at which R^ stays within the budget (0 if none does).

    beta must be scored for every round (evaluation mode); with records of a truncated run, use epsilon = 0.
    """
    u, beta = np.asarray(u, dtype=float), np.asarray(beta, dtype=float)
    if len(u) == 0 or np.isnan(beta).any() or np.isnan(u).any():
        raise ConfigError("threshold_for_budget needs u and beta of every round (decode.evaluation_methods)")
    order = np.argsort(u, kind="stable")
    risk = np.cumsum(beta[order] + epsilon) / len(u)  # R^ at each recorded u, in increasing order
    # ties: a threshold at u keeps every round with that u, so only the last of equal values counts
    last_of_value = np.append(u[order][1:] != u[order][:-1], True)
    ok = (risk <= budget * (1 + 1e-12)) & last_of_value  # a budget met exactly, up to rounding
    return float(u[order][ok].max()) if ok.any() else 0.0


def operating_point(records: list, *, budget: float, epsilon: float = 0.0) -> dict[str, float]:
    """A run's threshold for the budget and the risk at its own threshold, from its records (sweep metrics)."""
    u = np.array([r.uncertainty for r in records], dtype=float)
    beta = np.array([r.beta for r in records], dtype=float)
    if len(u) == 0 or np.isnan(beta).any():
        return {"budget_threshold": math.nan}
    return {"budget_threshold": threshold_for_budget(u=u, beta=beta, budget=budget, epsilon=epsilon)}
