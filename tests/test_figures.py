"""The reproduction's figures and Table I from synthetic inputs: files written, numbers placed beside the paper's."""

import math

import numpy as np
import pytest
from scipy import stats

from uhlm_ray.experiments.figures import (
    PAPER_TABLE_I,
    binned_rejection,
    fig3_uncertainty_vs_rejection,
    fig4_threshold,
    fig5_density_and_fit,
    fig6_rates_and_snr,
    table_one,
)
from uhlm_ray.measures.theory import theorem_report


def test_binned_rejection_by_hand():
    u = np.array([0.05, 0.05, 0.05, 0.55, 0.95])
    beta = np.array([0.1, 0.2, 0.3, 0.5, 0.9])
    rows = binned_rejection(u=u, beta=beta, bins=10)
    assert [(round(c, 2), round(m, 4), n) for c, m, _, n in rows] == [(0.05, 0.2, 3), (0.55, 0.5, 1), (0.95, 0.9, 1)]
    half = stats.t.ppf(0.975, df=2) * np.std([0.1, 0.2, 0.3], ddof=1) / math.sqrt(3)
    assert rows[0][2] == pytest.approx(half)
    assert math.isnan(rows[1][2])  # one sample: no interval


def test_table_one_puts_the_paper_beside_ours_with_our_interval():
    summaries = {"alpaca": {"llm": {"accuracy": 0.7, "accuracy_ci_low": 0.6, "accuracy_ci_high": 0.78},
                            "u_hlm": {"accuracy": 0.65, "accuracy_ci_low": 0.55, "accuracy_ci_high": 0.7}},
                 "qed": {"llm": {"accuracy": 0.6}, "u_hlm": {"accuracy": 0.5}}}  # qed: no interval
    rows, markdown = table_one(summaries=summaries)
    assert {k: v for k, v in rows[0].items() if not k.startswith("qed_ci")} == {
        "method": "llm", "alpaca_ours": 0.7, "alpaca_paper": PAPER_TABLE_I["llm"]["alpaca"], "alpaca_ci_low": 0.6,
        "alpaca_ci_high": 0.78, "qed_ours": 0.6, "qed_paper": PAPER_TABLE_I["llm"]["qed"]}
    assert math.isnan(rows[0]["qed_ci_low"]) and math.isnan(rows[0]["qed_ci_high"])
    assert "| U-HLM | 0.6500 [0.5500, 0.7000] | 0.5585 | 0.5000 | 0.4943 |" in markdown


def test_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    u = rng.random(400)
    beta = np.clip(0.8 * u - 0.05 + rng.normal(0, 0.05, 400), 0, 1)
    x_d = rng.uniform(0.3, 1.0, 400)
    report = theorem_report(u=u, beta=beta, x_d=x_d, y_d=x_d * (1 - beta))
    fig3_uncertainty_vs_rejection(by_measure={"temperature": (u, beta), "mc_dropout": (u[::-1], beta)},
                                  path=tmp_path / "f3.png")
    fig4_threshold(thresholds=[0.1, 0.4], path=tmp_path / "f4.png",
                   summaries=[{"accuracy": 0.6, "accuracy_ci_low": 0.55, "accuracy_ci_high": 0.66,
                               "transmission_rate": 0.8},
                              {"accuracy": 0.5, "transmission_rate": 0.3, "transmission_rate_ci_low": 0.25,
                               "transmission_rate_ci_high": 0.35}])  # a missing interval draws no bar
    fig5_density_and_fit(u=u, beta=beta, report=report, path=tmp_path / "f5.png")
    summary = {"transmission_rate": 0.4, "true_skip_rate": 0.7, "throughput_modelled_snr_0dB": 0.2,
               "throughput_modelled_snr_10dB": 1.0}
    fig6_rates_and_snr(summaries={"hlm": {**summary, "transmission_rate": 1.0}, "u_hlm": summary},
                       path=tmp_path / "f6.png")
    for name in ("f3", "f4", "f5", "f6"):
        data = (tmp_path / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
