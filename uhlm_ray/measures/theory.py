"""Remark 1 and Theorem 1 of the U-HLM paper, evaluated on per-round records.

- eq. 5: beta = a u + b, the linear fit of rejection probability on uncertainty (with Pearson r and a confidence
  band for the fitted mean);
- eq. 10: Delta = P(y_d < x_d), the share of drafts that are not immediately accepted;
- eq. 11 / 14: the risk-prone threshold (Delta - b) / a and the risk-averse threshold -b / a;
- eq. 12: the expected rejection risk R, the integral of (a u + b) f(u) between the two thresholds;
- eq. 13: its Hoelder (Cauchy-Schwarz) upper bound, sqrt(int (a u + b)^2 du) * sqrt(int f(u)^2 du).

f(u) is the empirical density of u as a histogram. R is integrated against that same histogram, for which eq. 13
holds exactly; R is also given as the plain sample mean of (a u + b) over rounds in the interval, which is what the
records say without choosing bins. Whether the bound holds is computed and reported, not assumed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from uhlm_ray.validation import ConfigError, check_range


@dataclass(frozen=True)
class LinearFit:
    """eq. 5 fitted by least squares."""

    a: float
    b: float
    r: float  # Pearson correlation of u and beta
    p_value: float
    n: int
    u_mean: float
    sxx: float  # sum of (u - mean u)^2
    residual_std: float

    def predict(self, u: np.ndarray) -> np.ndarray:
        return self.a * np.asarray(u, dtype=float) + self.b

    def band(self, u: np.ndarray, *, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Confidence band of the fitted mean a u + b at each u (Student t with n - 2 degrees of freedom)."""
        u = np.asarray(u, dtype=float)
        t = stats.t.ppf(0.5 + level / 2, df=max(self.n - 2, 1))
        half = t * self.residual_std * np.sqrt(1.0 / self.n + (u - self.u_mean) ** 2 / self.sxx)
        return self.predict(u) - half, self.predict(u) + half


def fit_rejection_line(*, u: np.ndarray, beta: np.ndarray) -> LinearFit:
    """eq. 5: beta = a u + b over rounds with both values; needs at least 3 rounds and some spread in u."""
    u, beta = np.asarray(u, dtype=float), np.asarray(beta, dtype=float)
    keep = np.isfinite(u) & np.isfinite(beta)
    u, beta = u[keep], beta[keep]
    if len(u) < 3:
        raise ConfigError(f"fit_rejection_line needs at least 3 rounds with u and beta, got {len(u)}")
    if np.ptp(u) == 0:
        raise ConfigError("fit_rejection_line: every round has the same uncertainty; a line cannot be fitted")
    fit = stats.linregress(u, beta)
    residuals = beta - (fit.slope * u + fit.intercept)
    return LinearFit(
        a=float(fit.slope), b=float(fit.intercept), r=float(fit.rvalue), p_value=float(fit.pvalue), n=len(u),
        u_mean=float(u.mean()), sxx=float(((u - u.mean()) ** 2).sum()),
        residual_std=float(np.sqrt((residuals**2).sum() / max(len(u) - 2, 1))),
    )


def not_immediately_accepted(*, x_d: np.ndarray, y_d: np.ndarray) -> float:
    """eq. 10's Delta = P(y_d < x_d) over rounds where both are known."""
    x_d, y_d = np.asarray(x_d, dtype=float), np.asarray(y_d, dtype=float)
    keep = np.isfinite(x_d) & np.isfinite(y_d)
    if not keep.any():
        raise ConfigError("Delta needs rounds with both x_d and y_d (evaluation mode or HLM)")
    return float((y_d[keep] < x_d[keep]).mean())


@dataclass(frozen=True)
class Thresholds:
    risk_averse: float  # -b / a: skip only tokens predicted to be immediately accepted (beta_th = 0)
    risk_prone: float  # (Delta - b) / a, eq. 11


def uncertainty_thresholds(*, fit: LinearFit, delta: float) -> Thresholds:
    """eq. 11 and 14: the interval -b/a <= u < (Delta - b)/a; needs a > 0 (u rising with beta)."""
    if not fit.a > 0:
        raise ConfigError(f"Theorem 1 needs a rising line (a > 0); the fit gave a={fit.a:.4g}")
    check_range(delta, field="Delta", low=0.0, high=1.0)
    return Thresholds(risk_averse=-fit.b / fit.a, risk_prone=(delta - fit.b) / fit.a)


@dataclass(frozen=True)
class UncertaintyDensity:
    """A histogram density of u: f(u) = counts / (n * width) on equal bins over [low, high]."""

    edges: np.ndarray  # [bins + 1]
    density: np.ndarray  # [bins]

    @classmethod
    def from_samples(cls, u: np.ndarray, *, bins: int = 20, low: float = 0.0, high: float = 1.0
                     ) -> UncertaintyDensity:
        u = np.asarray(u, dtype=float)
        u = u[np.isfinite(u)]
        if len(u) == 0:
            raise ConfigError("the uncertainty density needs at least one finite u")
        density, edges = np.histogram(u, bins=bins, range=(low, high), density=True)
        return cls(edges=edges, density=density)


def _overlaps(density: UncertaintyDensity, low: float, high: float):
    """(left, right, f) for each bin's overlap with [low, high]."""
    for left, right, f in zip(density.edges[:-1], density.edges[1:], density.density, strict=True):
        lo, hi = max(left, low), min(right, high)
        if hi > lo:
            yield lo, hi, f


def expected_rejection_risk(*, fit: LinearFit, thresholds: Thresholds, density: UncertaintyDensity) -> float:
    """eq. 12: R = integral from -b/a to (Delta-b)/a of (a u + b) f(u) du, for the histogram f."""
    a, b = fit.a, fit.b
    return float(sum(f * (a * (hi**2 - lo**2) / 2 + b * (hi - lo))
                     for lo, hi, f in _overlaps(density, thresholds.risk_averse, thresholds.risk_prone)))


def expected_rejection_risk_from_samples(*, fit: LinearFit, thresholds: Thresholds, u: np.ndarray) -> float:
    """eq. 12 with the empirical distribution of u itself: mean over rounds of (a u + b) 1{-b/a <= u < u_th}."""
    u = np.asarray(u, dtype=float)
    u = u[np.isfinite(u)]
    inside = (u >= thresholds.risk_averse) & (u < thresholds.risk_prone)
    return float((fit.predict(u) * inside).sum() / len(u)) if len(u) else math.nan


def hoelder_bound(*, fit: LinearFit, thresholds: Thresholds, density: UncertaintyDensity) -> float:
    """eq. 13: sqrt(int (a u + b)^2 du) * sqrt(int f(u)^2 du) over the same interval."""
    a, b = fit.a, fit.b
    low, high = thresholds.risk_averse, thresholds.risk_prone
    line_sq = ((a * high + b) ** 3 - (a * low + b) ** 3) / (3 * a) if high > low else 0.0
    density_sq = sum(f**2 * (hi - lo) for lo, hi, f in _overlaps(density, low, high))
    return float(math.sqrt(max(line_sq, 0.0)) * math.sqrt(density_sq))


@dataclass(frozen=True)
class TheoremReport:
    """Everything Remark 1 and Theorem 1 say, measured on one set of rounds (MLflow- and JSON-ready)."""

    a: float
    b: float
    r: float
    n_rounds: int
    delta: float
    u_th_risk_prone: float
    u_th_risk_averse: float
    risk: float  # eq. 12 against the histogram density
    risk_from_samples: float  # eq. 12 against the empirical distribution
    risk_bound: float  # eq. 13
    bound_holds: bool

    def to_dict(self) -> dict:
        return asdict(self)


def theorem_report(*, u: np.ndarray, beta: np.ndarray, x_d: np.ndarray, y_d: np.ndarray, bins: int = 20
                   ) -> TheoremReport:
    """Fit eq. 5, measure Delta, and evaluate eq. 11-13 on rounds scored by the LLM."""
    fit = fit_rejection_line(u=u, beta=beta)
    delta = not_immediately_accepted(x_d=x_d, y_d=y_d)
    thresholds = uncertainty_thresholds(fit=fit, delta=delta)
    density = UncertaintyDensity.from_samples(u, bins=bins)
    risk = expected_rejection_risk(fit=fit, thresholds=thresholds, density=density)
    bound = hoelder_bound(fit=fit, thresholds=thresholds, density=density)
    return TheoremReport(
        a=fit.a, b=fit.b, r=fit.r, n_rounds=fit.n, delta=delta, u_th_risk_prone=thresholds.risk_prone,
        u_th_risk_averse=thresholds.risk_averse, risk=risk,
        risk_from_samples=expected_rejection_risk_from_samples(fit=fit, thresholds=thresholds, u=u),
        risk_bound=bound, bound_holds=bool(risk <= bound + 1e-12),
    )


# The paper's reported values (Section III-C and IV-A), printed beside ours.
PAPER = {"a": 0.82, "b": -0.06, "delta": 0.301, "u_th_risk_prone": 0.431, "u_th_risk_averse": 0.073,
         "risk": 2.24e-3, "risk_bound": 4e-3}


def theorem_report_from_records(records: list, *, bins: int = 20) -> TheoremReport:
    """theorem_report over the RoundRecords whose draft the LLM scored (sent, or skipped in evaluation mode)."""
    scored = [r for r in records if math.isfinite(r.y_d) and math.isfinite(r.uncertainty) and math.isfinite(r.x_d)]
    if not scored:
        raise ConfigError("no round has u, x_d and y_d: run hybrid methods in evaluation mode "
                          "(decode.evaluation_methods) or HLM")
    column = {name: np.array([getattr(r, name) for r in scored], dtype=float)
              for name in ("uncertainty", "beta", "x_d", "y_d")}
    return theorem_report(u=column["uncertainty"], beta=column["beta"], x_d=column["x_d"], y_d=column["y_d"],
                          bins=bins)


def risk_at_threshold(records: list, *, u_th: float, bins: int = 20) -> dict[str, float]:
    """eq. 12 and 13 with the upper limit at a chosen u_th instead of Theorem 1's: the expected extra rejection
    risk of skipping every round with -b/a <= u < u_th, against its bound (for sweeps over u_th)."""
    scored = [r for r in records if math.isfinite(r.y_d) and math.isfinite(r.uncertainty) and math.isfinite(r.x_d)]
    u = np.array([r.uncertainty for r in scored], dtype=float)
    try:
        fit = fit_rejection_line(u=u, beta=np.array([r.beta for r in scored], dtype=float))
    except ConfigError:
        return {"fit_a": math.nan, "fit_b": math.nan, "theory_risk": math.nan, "theory_bound": math.nan}
    low = -fit.b / fit.a if fit.a > 0 else math.nan
    thresholds = Thresholds(risk_averse=low, risk_prone=u_th)
    density = UncertaintyDensity.from_samples(u, bins=bins)
    return {"fit_a": fit.a, "fit_b": fit.b,
            "theory_risk": expected_rejection_risk(fit=fit, thresholds=thresholds, density=density),
            "theory_bound": hoelder_bound(fit=fit, thresholds=thresholds, density=density)}
