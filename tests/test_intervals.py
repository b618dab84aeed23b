"""Bootstrap intervals over prompts: their point is the summary's value, they cover at their stated level (a
binomial test over simulated runs, with a too-narrow negative control), and comparisons are paired on prompts."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from uhlm_ray.config import load_config
from uhlm_ray.experiments.calibration import calibrate
from uhlm_ray.experiments.datasets import Example
from uhlm_ray.experiments.evaluate import evaluate_methods, format_table, run_clock, summarize_methods
from uhlm_ray.measures.clock import ModelledClock
from uhlm_ray.measures.intervals import (
    clustered_ratio,
    clustered_ratio_vs,
    indistinguishable,
    method_intervals,
    paired_intervals,
    point_estimate,
)
from uhlm_ray.measures.metrics import rewalked
from uhlm_ray.measures.similarity import load_encoder
from uhlm_ray.records import PromptResult

CLOCK = ModelledClock(tau_slm=0.02, tau_llm=0.1)


def _result(*, index: int, similarity: float, method: str = "llm") -> PromptResult:
    return PromptResult(method=method, prompt_index=index, example_id=str(index), reference="", response="",
                        tokens=[], stop_reason="eos", prompt_tokens=1, prefill_s=0.0, similarity=similarity)


def test_every_interval_is_about_the_summary_value(tiny_pair, tmp_path):
    cfg = load_config(overrides=["decode.max_new_tokens=10", "runtime.batch_size=4", "policy.send_prob=0.5"])
    examples = [Example(id=str(i), prompt=p, reference="the cat runs") for i, p in
                enumerate(["the cat", "a dog", "one two", "sun moon", "red fox", "river"])]
    results = evaluate_methods(pair=tiny_pair, examples=examples, cfg=cfg, encoder=load_encoder("use"), store=None)
    cal = calibrate(pair=tiny_pair, prompt_ids=[2, 3, 4], cfg=cfg, folder=tmp_path)
    summaries = summarize_methods(results=results, cfg=cfg, calibration=cal)
    clock = run_clock(results=results, cfg=cfg, calibration=cal)
    checked = 0
    for method, s in summaries.items():
        for key in [k.removesuffix("_ci_low") for k in s if k.endswith("_ci_low") and "_vs_" not in k]:
            # the summaries read the records re-walked on the run's clock (a fading process in time)
            walked = rewalked(results=results[method], clock=clock, channel=cfg.channel, seed=cfg.decode.seed)
            value = point_estimate(results=walked, clock=clock, metric=key)
            if math.isnan(s[key]):
                assert math.isnan(value), (method, key)
                continue
            assert value == pytest.approx(s[key], rel=1e-9), (method, key)
            low, high = s[f"{key}_ci_low"], s[f"{key}_ci_high"]
            if math.isfinite(low):
                assert low <= s[key] + 1e-12 and s[key] <= high + 1e-12, (method, key)
            checked += 1
    assert checked >= 40
    assert math.isfinite(summaries["u_hlm"]["accuracy_vs_llm_ci_low"])
    paired = 0
    for method, s in summaries.items():  # a paired ratio's interval is about that ratio too
        for key in [k.removesuffix("_ci_low") for k in s if k.endswith("_ci_low") and "_vs_" in k]:
            low, high = s[f"{key}_ci_low"], s[f"{key}_ci_high"]
            if key in s and math.isfinite(low):
                assert low <= s[key] + 1e-12 and s[key] <= high + 1e-12, (method, key)
                paired += key.startswith("energy_device_j_per_token_vs_")
    assert paired >= 5  # the device's energy against the LLM alone and HLM, for most methods
    assert "[" in format_table(summaries)  # the table shows the intervals


def test_intervals_cover_at_their_level():
    """200 simulated runs of 30 prompts with a known mean similarity: the 95% interval must cover it in a share
    a binomial test (alpha 1e-3) accepts, while an interval of half the width must be refused (the test's power)."""
    rng = np.random.default_rng(7)
    a, b = 2.0, 5.0
    truth = a / (a + b)
    covered = narrow_covered = 0
    runs = 200
    for _ in range(runs):
        sims = rng.beta(a, b, size=30)
        s = method_intervals(results=[_result(index=i, similarity=x) for i, x in enumerate(sims)], clock=CLOCK)
        low, high = s["accuracy_ci_low"], s["accuracy_ci_high"]
        covered += low <= truth <= high
        mid, half = (low + high) / 2, (high - low) / 4
        narrow_covered += mid - half <= truth <= mid + half
    assert stats.binomtest(covered, runs, 0.95).pvalue > 1e-3, covered
    assert stats.binomtest(narrow_covered, runs, 0.95).pvalue < 1e-3, narrow_covered


def test_comparisons_are_paired_on_the_same_prompts():
    rng = np.random.default_rng(3)
    prompt_effect = rng.uniform(0.1, 0.9, size=40)  # prompts differ far more than the methods do
    llm = [_result(index=i, similarity=x) for i, x in enumerate(prompt_effect)]
    better = [_result(index=i, similarity=x + 0.03, method="u_hlm") for i, x in enumerate(prompt_effect)]
    same = [dataclasses.replace(r, method="hlm") for r in llm]
    paired = paired_intervals(results=better, reference=llm, clock=CLOCK, name="llm")
    summary = {"accuracy_vs_llm_ci_low": paired["accuracy_vs_llm_ci_low"],
               "accuracy_vs_llm_ci_high": paired["accuracy_vs_llm_ci_high"]}
    assert not indistinguishable(summary, metric="accuracy")  # +0.03 on every prompt is told apart
    assert paired["accuracy_vs_llm_ci_low"] > 1.0
    # unpaired, the same difference is lost in the prompt effect: the two methods' own intervals overlap
    mine = method_intervals(results=better, clock=CLOCK)
    theirs = method_intervals(results=llm, clock=CLOCK)
    assert mine["accuracy_ci_low"] < theirs["accuracy_ci_high"]
    tied = paired_intervals(results=same, reference=llm, clock=CLOCK, name="llm")
    assert indistinguishable(tied, metric="accuracy")
    # prompts the reference lacks are left out, not mismatched
    part = paired_intervals(results=better, reference=llm[:20], clock=CLOCK, name="llm")
    assert part["accuracy_vs_llm_ci_low"] > 1.0


def test_too_few_prompts_give_no_interval():
    s = method_intervals(results=[_result(index=0, similarity=0.5)], clock=CLOCK)
    assert math.isnan(s["accuracy_ci_low"]) and math.isnan(s["accuracy_ci_high"])


def test_clustered_ratio_resamples_prompts_with_their_realisations():
    # per prompt, tokens over seconds vary across realisations but their sums do not: 4 / 2 on every prompt
    num = np.array([[1.0, 3.0], [3.0, 1.0], [2.0, 2.0]])
    den = np.ones((3, 2))
    assert clustered_ratio(num=num, den=den) == (2.0, 2.0, 2.0)  # resampling units alone would spread it
    # sum num / sum den over all units, and the realisations' order inside a prompt does not matter
    num = np.array([[4.0, 4.0], [6.0, 2.0], [1.0, 0.0]])
    den = np.array([[1.0, 1.0], [2.0, 2.0], [1.0, 3.0]])
    value, low, high = clustered_ratio(num=num, den=den)
    assert value == pytest.approx(17.0 / 10.0)
    assert low < value < high
    assert clustered_ratio(num=num[:, ::-1], den=den[:, ::-1]) == (value, low, high)


def test_clustered_ratio_keeps_an_upload_that_never_ends():
    # prompt 0's second realisation never ends: 0 tok/s wherever prompt 0 is drawn, 4 / 2 from prompt 1 alone
    value, low, high = clustered_ratio(num=np.full((2, 2), 2.0), den=np.array([[1.0, math.inf], [1.0, 1.0]]))
    assert (value, low, high) == (0.0, 0.0, 2.0)


def test_clustered_comparison_is_paired_on_prompts_and_realisations():
    rng = np.random.default_rng(5)
    ref_den = rng.exponential(size=(5, 3))
    ref_num = np.full((5, 3), 10.0)
    # twice the reference's throughput on every unit: exactly 2 in every resample, however the units vary
    assert clustered_ratio_vs(num=ref_num, den=ref_den / 2, ref_num=ref_num, ref_den=ref_den) == \
        pytest.approx((2.0, 2.0, 2.0))
    with pytest.raises(ValueError, match="units"):
        clustered_ratio_vs(num=ref_num[:, :2], den=ref_den[:, :2], ref_num=ref_num, ref_den=ref_den)


def test_theorem_intervals_cover_the_line_that_made_the_rounds():
    from uhlm_ray.measures.intervals import theorem_intervals
    from uhlm_ray.measures.theory import theorem_report_from_records
    from uhlm_ray.records import RoundRecord

    rng = np.random.default_rng(11)
    records = []
    for prompt in range(40):
        shift = rng.normal(0, 0.05)  # prompts differ: rounds of one prompt are not independent
        for t in range(30):
            u = float(rng.uniform(0.25, 1))  # beta stays inside [0, 1]: no clipping bends the line
            beta = float(np.clip(0.8 * u - 0.06 + shift + rng.normal(0, 0.05), 0, 1))
            x_d = 0.5
            records.append(RoundRecord(
                method="hlm", prompt_index=prompt, round=t + 1, draft=1, token=1, uncertainty=u, sent=True, x_d=x_d,
                y_d=x_d * (1 - beta), beta=beta, accepted=True, resampled=False, payload_bits=1, catch_up_tokens=1,
                fading_gain=1.0, snr_db=0.0, tau_up_s=0.0, tau_slm_s=0.0, tau_uncertainty_s=0.0, tau_llm_s=0.0,
                wall_s=0.0))
    spread = theorem_intervals(records, n_resamples=300)
    point = theorem_report_from_records(records)
    for q in ("a", "b", "delta", "risk", "risk_bound"):
        assert spread[f"{q}_ci_low"] <= getattr(point, q) <= spread[f"{q}_ci_high"], q
    assert spread["a_ci_high"] - spread["a_ci_low"] < 0.1
    assert 0.0 <= spread["bound_holds_share"] <= 1.0
    # prompts, not rounds, are resampled: treating every round as its own prompt ignores the prompt effect and
    # gives an interval on b far too narrow
    rounds_alone = [dataclasses.replace(r, prompt_index=i) for i, r in enumerate(records)]
    naive = theorem_intervals(rounds_alone, n_resamples=300)
    assert (spread["b_ci_high"] - spread["b_ci_low"]) > 1.5 * (naive["b_ci_high"] - naive["b_ci_low"])
    assert spread["rising_share"] == 1.0

    # no relation at all: about half the resamples fall, and a's interval must still straddle 0 rather than sit
    # on the rising half alone (resamples without thresholds keep their a and b)
    flat = [dataclasses.replace(r, beta=float(b), y_d=0.5 * (1 - float(b)))
            for r, b in zip(records, rng.uniform(0.2, 0.4, len(records)), strict=True)]
    spread_flat = theorem_intervals(flat, n_resamples=300)
    assert spread_flat["a_ci_low"] < 0 < spread_flat["a_ci_high"]
    assert 0.05 < spread_flat["rising_share"] < 0.95
    assert spread_flat["bound_holds_share"] <= spread_flat["rising_share"]


def test_a_prompt_whose_upload_never_ends_counts_as_the_summary_counts_it():
    """Its modelled seconds are infinite: the run's throughput is 0 tok/s (summarize's tokens / inf), and so are the
    point estimate and the interval's low end; dropping the prompt would report the other prompts' speed."""
    from uhlm_ray.records import RoundRecord

    def result(index: int, tau_up: float) -> PromptResult:
        records = [RoundRecord(method="hlm", prompt_index=index, round=t, draft=5, token=5, uncertainty=0.5, sent=True,
                               x_d=0.5, y_d=0.5, beta=0.0, accepted=True, resampled=False, payload_bits=100,
                               catch_up_tokens=1, fading_gain=1.0, snr_db=0.0, tau_up_s=tau_up, tau_slm_s=0.02,
                               tau_uncertainty_s=0.0, tau_llm_s=0.1, wall_s=0.2) for t in (1, 2)]
        return dataclasses.replace(_result(index=index, similarity=0.5, method="hlm"), tokens=[5, 5],
                                   records=records)

    results = [result(0, math.inf), *(result(i, 0.05) for i in range(1, 6))]
    assert point_estimate(results=results, clock=CLOCK, metric="throughput_modelled") == 0.0
    s = method_intervals(results=results, clock=CLOCK)
    assert s["throughput_modelled_ci_low"] == 0.0 < s["throughput_modelled_ci_high"]
    finite = point_estimate(results=results[1:], clock=CLOCK, metric="throughput_modelled")
    assert finite > 0 and method_intervals(results=results[1:], clock=CLOCK)["throughput_modelled_ci_low"] > 0
