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
from uhlm_ray.measures.intervals import indistinguishable, method_intervals, paired_intervals, point_estimate
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
            value = point_estimate(results=results[method], clock=clock, metric=key)
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
