"""Remark 1 and Theorem 1 (uhlm_ray.measures.theory) against cases solved by hand."""

import math

import numpy as np
import pytest
from scipy import stats

from uhlm_ray.measures.theory import (
    LinearFit,
    Thresholds,
    UncertaintyDensity,
    expected_rejection_risk,
    expected_rejection_risk_from_samples,
    fit_rejection_line,
    hoelder_bound,
    not_immediately_accepted,
    theorem_report,
    uncertainty_thresholds,
)
from uhlm_ray.validation import ConfigError


def _line(a: float, b: float) -> LinearFit:
    return LinearFit(a=a, b=b, r=1.0, p_value=0.0, n=100, u_mean=0.5, sxx=1.0, residual_std=0.0)


def test_fit_recovers_a_known_line_and_its_band_covers_it():
    rng = np.random.default_rng(0)
    u = rng.random(4000)
    beta = 0.8 * u - 0.1 + rng.normal(0, 0.05, size=u.size)
    fit = fit_rejection_line(u=u, beta=beta)
    assert fit.a == pytest.approx(0.8, abs=0.01) and fit.b == pytest.approx(-0.1, abs=0.01)
    assert fit.r == pytest.approx(stats.pearsonr(u, beta).statistic)
    low, high = fit.band(np.array([fit.u_mean, 0.0, 1.0]))
    # at the mean of u the band's half-width is t * s / sqrt(n)
    t = stats.t.ppf(0.975, df=fit.n - 2)
    assert (high[0] - low[0]) / 2 == pytest.approx(t * fit.residual_std / math.sqrt(fit.n))
    assert np.all(low <= 0.8 * np.array([fit.u_mean, 0, 1]) - 0.1 + 0.01)
    assert (high[1] - low[1]) > (high[0] - low[0])  # wider away from the mean


def test_fit_refuses_degenerate_input():
    with pytest.raises(ConfigError, match="at least 3 rounds"):
        fit_rejection_line(u=np.array([0.1, np.nan]), beta=np.array([0.0, 0.1]))
    with pytest.raises(ConfigError, match="same uncertainty"):
        fit_rejection_line(u=np.full(5, 0.2), beta=np.arange(5.0))


def test_delta_counts_drafts_not_immediately_accepted():
    x_d = np.array([0.5, 0.5, 0.2, 0.9, np.nan])
    y_d = np.array([0.4, 0.6, 0.2, 0.1, 0.3])
    assert not_immediately_accepted(x_d=x_d, y_d=y_d) == pytest.approx(2 / 4)  # y < x in rounds 1 and 4


def test_thresholds_from_the_papers_numbers():
    th = uncertainty_thresholds(fit=_line(0.82, -0.06), delta=0.301)
    assert th.risk_averse == pytest.approx(0.06 / 0.82)  # 0.073, as the paper reports
    # (0.301 + 0.06) / 0.82 = 0.440: the paper's 0.431 came from its unrounded a and b
    assert th.risk_prone == pytest.approx(0.361 / 0.82)
    with pytest.raises(ConfigError, match="a > 0"):
        uncertainty_thresholds(fit=_line(-0.5, 0.2), delta=0.3)


def test_risk_and_bound_for_a_uniform_density_in_closed_form():
    # u spread evenly over [0, 1]: the histogram density is exactly 1, so with l = -b/a and h = (Delta - b)/a
    #   R = int_l^h (a u + b) du = Delta^2 / (2a)
    #   bound = sqrt(Delta^3 / (3a)) * sqrt(Delta / a) = Delta^2 / (a sqrt 3)
    a, b, delta = 0.8, -0.1, 0.3
    u = (np.arange(20_000) + 0.5) / 20_000
    density = UncertaintyDensity.from_samples(u, bins=20)
    assert np.allclose(density.density, 1.0)
    fit = _line(a, b)
    th = uncertainty_thresholds(fit=fit, delta=delta)
    risk = expected_rejection_risk(fit=fit, thresholds=th, density=density)
    bound = hoelder_bound(fit=fit, thresholds=th, density=density)
    assert risk == pytest.approx(delta**2 / (2 * a))
    assert bound == pytest.approx(delta**2 / (a * math.sqrt(3)))
    assert risk <= bound
    assert expected_rejection_risk_from_samples(fit=fit, thresholds=th, u=u) == pytest.approx(risk, rel=1e-3)


def test_risk_for_a_linear_density_by_hand():
    # f(u) = 2u on [0, 1]; with a = 1, b = 0 and Delta = 0.5: R = int_0^0.5 u * 2u du = 2/3 * 0.125 = 1/12
    u = np.sqrt((np.arange(200_000) + 0.5) / 200_000)  # inverse CDF of f(u) = 2u
    density = UncertaintyDensity.from_samples(u, bins=200)
    th = Thresholds(risk_averse=0.0, risk_prone=0.5)
    assert expected_rejection_risk(fit=_line(1.0, 0.0), thresholds=th, density=density) == pytest.approx(
        1 / 12, rel=1e-3)
    # bound: sqrt(int_0^0.5 u^2 du) * sqrt(int_0^0.5 4u^2 du) = sqrt(1/24) * sqrt(1/6) = 1/12 -- Cauchy-Schwarz is
    # tight here because f is proportional to the line
    assert hoelder_bound(fit=_line(1.0, 0.0), thresholds=th, density=density) == pytest.approx(1 / 12, rel=1e-3)


def test_report_on_synthetic_rounds():
    rng = np.random.default_rng(1)
    u = rng.beta(1.2, 4.0, size=5000)
    x_d = rng.uniform(0.2, 1.0, size=u.size)
    beta = np.clip(0.82 * u - 0.06 + rng.normal(0, 0.03, size=u.size), 0, 1)
    y_d = x_d * (1 - beta)
    report = theorem_report(u=u, beta=beta, x_d=x_d, y_d=y_d)
    assert report.a == pytest.approx(0.82, abs=0.05)
    assert report.delta == pytest.approx(float((y_d < x_d).mean()))
    assert report.bound_holds and 0 < report.risk <= report.risk_bound
    assert report.u_th_risk_averse < report.u_th_risk_prone


def test_report_from_records_needs_scored_rounds():
    from uhlm_ray.measures.theory import theorem_report_from_records
    from uhlm_ray.records import RoundRecord

    unscored = RoundRecord(
        method="u_hlm", prompt_index=0, round=1, draft=1, token=1, uncertainty=0.2, sent=False, x_d=0.5,
        y_d=math.nan, beta=math.nan, accepted=None, resampled=None, payload_bits=0, catch_up_tokens=0,
        fading_gain=1.0, snr_db=0.0, tau_up_s=0.0, tau_slm_s=0.01, tau_uncertainty_s=0.0, tau_llm_s=0.0, wall_s=0.01,
    )
    with pytest.raises(ConfigError, match="evaluation mode"):
        theorem_report_from_records([unscored])
