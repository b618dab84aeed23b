"""95% confidence intervals by bootstrap over prompts, and comparisons paired on the same prompts.

Prompts are the unit that is sampled: rounds of one prompt are not independent. Every interval metric is a ratio of
sums over prompts, sum_p num_p / sum_p den_p (accuracy: similarity over 1; TR: uploads over tokens; throughput:
tokens over seconds; ...), so that its point estimate is exactly the summary's value and a bootstrap resample of
prompts costs two sums. A comparison with the LLM alone resamples the same prompt indices for both methods
(`scipy.stats.bootstrap(..., paired=True)`). Intervals are BCa, percentile where BCa is undefined (a metric
constant over prompts); NaN when fewer than two prompts have a defined value. A figure priced over several fading
realisations per prompt (`clustered_ratio`) still resamples prompts, each with its sums over its realisations.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
from scipy.stats import bootstrap

from uhlm_ray.measures.agreement import unverified_checks
from uhlm_ray.measures.block_metrics import BlockStats, unverified_risks
from uhlm_ray.measures.clock import ModelledClock, modelled_seconds
from uhlm_ray.measures.energy import energy_parts, result_energy
from uhlm_ray.measures.metrics import SpecDecodeStats, acceptance_if_sent
from uhlm_ray.measures.theory import fit_rejection_line, not_immediately_accepted, theorem_report
from uhlm_ray.records import BlockRecord, PromptResult
from uhlm_ray.validation import ConfigError

CONFIDENCE = 0.95
N_RESAMPLES = 2000
Parts = dict[str, tuple[float, float]]  # metric -> (numerator, denominator) of one prompt


def _hybrid_parts(res: PromptResult) -> Parts:
    """The paper's one-draft methods (RoundRecords); mirrors metrics.summarize."""
    records = res.records
    tokens = float(len(records))
    stats = SpecDecodeStats.from_records(records)
    accept_if_sent, skipped_accept, scored = acceptance_if_sent(records)
    return {
        "transmission_rate": (stats.num_drafts, tokens),
        "uploads_per_token": (stats.num_drafts, tokens),
        "bits_per_token": (sum(r.payload_bits for r in records), tokens),
        "acceptance_rate": (stats.num_accepted_tokens, stats.num_drafts),
        "true_skip_rate": (sum(skipped_accept), sum(accept_if_sent)) if scored else (math.nan, math.nan),
        "rejection_risk": (sum(r.beta for r in records if not r.sent), tokens) if scored else (math.nan, math.nan),
        # CU-HLM's vocabulary compression: a mean over sent rounds
        "compression_rate": (sum(r.compression for r in records if r.sent), stats.num_drafts),
    }


def _block_parts(res: PromptResult) -> Parts:
    """The block method (BlockRecords); mirrors block_metrics.summarize_blocks."""
    records: list[BlockRecord] = res.records
    tokens = float(len(res.tokens))
    stats = BlockStats.from_records(records)
    risks = unverified_risks(records)
    return {
        "transmission_rate": (stats.num_uploads, tokens),
        "uploads_per_token": (stats.num_uploads, tokens),
        "bits_per_token": (sum(r.payload_bits for r in records), tokens),
        "acceptance_rate": (stats.num_accepted_tokens, stats.num_drafts),
        "mean_accepted_length": (stats.num_uploads + stats.num_accepted_tokens, stats.num_uploads),
        "rejection_risk": (sum(risks), tokens) if not any(math.isnan(x) for x in risks) else (math.nan, math.nan),
    }


def prompt_parts(*, res: PromptResult, clock: ModelledClock) -> Parts:
    """Numerator and denominator of every interval metric for one prompt."""
    block = bool(res.records) and isinstance(res.records[0], BlockRecord)
    tokens = float(len(res.tokens) if block else len(res.records))
    parts: Parts = {
        "accuracy": (res.similarity, 1.0),
        "throughput_modelled": (tokens, sum(modelled_seconds(record=r, clock=clock) for r in res.records)),
        "throughput_experiment": (tokens, res.decode_s),
        "throughput_wall": (tokens, sum(r.wall_s for r in res.records)) if res.batch_size == 1
        else (math.nan, math.nan),
    }
    if block:
        parts |= _block_parts(res)
    elif res.method != "llm":
        parts |= _hybrid_parts(res)
    energy = result_energy(res=res, clock=clock)  # device J per token and per round, base station J per verified token
    if energy is not None:
        parts |= energy_parts(energy=energy, tokens=tokens)
    checks = unverified_checks(res.records)  # coupled sampling: unverified drafts that are not the LLM's winner
    if checks:
        parts["unverified_disagreement"] = (float(sum(checks)), float(len(checks)))
    return parts


def _interval(samples: tuple[np.ndarray, ...], statistic: Callable, *, seed: int, keep_infinite: bool = False
              ) -> tuple[float, float]:
    """A paired bootstrap interval of `statistic(*samples, axis)` over the prompts that define every sample
    (`keep_infinite`: an infinite value defines it too, e.g. the seconds of an upload that never ends)."""
    keep = np.all([~np.isnan(s) if keep_infinite else np.isfinite(s) for s in samples], axis=0)
    samples = tuple(s[keep] for s in samples)
    if samples[0].size < 2:
        return math.nan, math.nan
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a degenerate (constant) sample: BCa is undefined, try percentile
            ci = bootstrap(samples, statistic, paired=True, vectorized=True, n_resamples=N_RESAMPLES,
                           confidence_level=CONFIDENCE, method=method, rng=np.random.default_rng(seed)
                           ).confidence_interval
        if math.isfinite(ci.low) and math.isfinite(ci.high):
            return float(ci.low), float(ci.high)
    return math.nan, math.nan


def _ratio(num: np.ndarray, den: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return num.sum(axis=axis) / den.sum(axis=axis)


def _ratio_of_ratios(num: np.ndarray, den: np.ndarray, ref_num: np.ndarray, ref_den: np.ndarray,
                     axis: int = -1) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return _ratio(num, den, axis) / _ratio(ref_num, ref_den, axis)


def _arrays(parts: list[Parts], metric: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.array([p.get(metric, (math.nan, math.nan)) for p in parts], dtype=float).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def method_intervals(*, results: list[PromptResult], clock: ModelledClock, seed: int = 0) -> dict[str, float]:
    """`<metric>_ci_low` and `<metric>_ci_high` for every interval metric of one method."""
    parts = [prompt_parts(res=res, clock=clock) for res in results]
    out = {}
    for metric in sorted({m for p in parts for m in p}):
        # an infinite part (an upload that never ends) is kept, as the summary keeps it: 0 tok/s where it is drawn
        low, high = _interval(_arrays(parts, metric), _ratio, seed=seed, keep_infinite=True)
        out[f"{metric}_ci_low"], out[f"{metric}_ci_high"] = low, high
    return out


# paired with the LLM alone and HLM on the same prompts: the device's energy too, since the literature's energy
# savings (GELATO, 2508.12590) are stated against a reference method
PAIRED_METRICS = ("accuracy", "throughput_modelled", "throughput_experiment", "throughput_wall",
                  "energy_device_j_per_token")


def paired_intervals(*, results: list[PromptResult], reference: list[PromptResult], clock: ModelledClock,
                     name: str, seed: int = 0) -> dict[str, float]:
    """`<metric>_vs_<name>` intervals: this method over the reference, resampling the same prompts for both (the
    prompts both decoded, matched by index)."""
    ref = {(r.device_index, r.prompt_index): r for r in reference}
    matched = [(res, ref[(res.device_index, res.prompt_index)]) for res in results
               if (res.device_index, res.prompt_index) in ref]
    mine = [prompt_parts(res=a, clock=clock) for a, _ in matched]
    theirs = [prompt_parts(res=b, clock=clock) for _, b in matched]
    out = {}
    for metric in PAIRED_METRICS:
        low, high = _interval((*_arrays(mine, metric), *_arrays(theirs, metric)), _ratio_of_ratios, seed=seed,
                              keep_infinite=True)
        out[f"{metric}_vs_{name}_ci_low"], out[f"{metric}_vs_{name}_ci_high"] = low, high
    return out


def point_estimate(*, results: list[PromptResult], clock: ModelledClock, metric: str) -> float:
    """The ratio of sums the interval is about (equal to the summary's value; the tests hold them together)."""
    num, den = _arrays([prompt_parts(res=res, clock=clock) for res in results], metric)
    keep = ~np.isnan(num) & ~np.isnan(den)  # infinite parts count, as in the summary (tokens / inf s = 0 tok/s)
    return float(_ratio(num[keep], den[keep])) if keep.any() and den[keep].sum() > 0 else math.nan


def indistinguishable(summary: dict[str, float], *, metric: str, name: str = "llm") -> bool:
    """Whether the interval of `<metric>_vs_<name>` contains 1: this method cannot be told apart from the
    reference on that metric at the 95% level."""
    low, high = summary.get(f"{metric}_vs_{name}_ci_low", math.nan), summary.get(f"{metric}_vs_{name}_ci_high",
                                                                                 math.nan)
    return math.isfinite(low) and math.isfinite(high) and low <= 1.0 <= high


def clustered_ratio(*, num: np.ndarray, den: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """sum num / sum den over [prompt, realisation] units with its 95% interval: (value, low, high).

    The realisations of one prompt (its fading redrawn, its tokens kept or redrawn) are one cluster: they share the
    prompt, so what the bootstrap resamples is the prompts, each with its sums over realisations (resampling units
    one by one would count R correlated units as independent and narrow the interval). An infinite denominator (an
    upload that never ends, a static fade) is kept: the ratio is 0 wherever its prompt is drawn."""
    num_p, den_p = np.asarray(num, dtype=float).sum(axis=1), np.asarray(den, dtype=float).sum(axis=1)
    value = float(_ratio(num_p, den_p))
    low, high = _interval((num_p, den_p), _ratio, seed=seed, keep_infinite=True)
    return value, low, high


def clustered_ratio_vs(*, num: np.ndarray, den: np.ndarray, ref_num: np.ndarray, ref_den: np.ndarray,
                       seed: int = 0) -> tuple[float, float, float]:
    """`clustered_ratio` of one method over a reference's on the same [prompt, realisation] units (the same
    prompts and fading realisations), resampling the same prompts for both: (value, low, high). Where the
    reference's ratio is 0 (an upload of it never ends on every prompt, or in a resample) the value is infinite or
    the interval NaN."""
    parts = [np.asarray(a, dtype=float) for a in (num, den, ref_num, ref_den)]
    if len({a.shape for a in parts}) != 1:
        raise ValueError(f"the methods must share their [prompt, realisation] units: {[a.shape for a in parts]}")
    sums = tuple(a.sum(axis=1) for a in parts)
    value = float(_ratio_of_ratios(*sums))
    low, high = _interval(sums, _ratio_of_ratios, seed=seed, keep_infinite=True)
    return value, low, high


THEOREM_QUANTITIES = ("a", "b", "delta", "u_th_risk_prone", "u_th_risk_averse", "risk", "risk_bound")


def theorem_intervals(records: list, *, n_resamples: int = 1000, seed: int = 0, bins: int = 20) -> dict[str, float]:
    """Theorem 1's fit and risk with 95% percentile intervals, by bootstrap over prompts (a prompt's rounds stay
    together: they share a context).

    a, b and Delta come from every resample; the thresholds, R and its bound only from those whose line rises
    (a > 0), since eq. 11 has no threshold otherwise. `rising_share` says how many did, and `bound_holds_share` in
    what share of all resamples eq. 12's risk stays under eq. 13's bound (a falling line counts as not holding), so
    that "the bound holds" is said with its uncertainty."""
    scored = [r for r in records if math.isfinite(r.y_d) and math.isfinite(r.uncertainty) and math.isfinite(r.x_d)]
    groups: dict[tuple, list] = {}
    for r in scored:
        groups.setdefault((r.method, r.prompt_index), []).append(r)
    columns = [np.array([[r.uncertainty, r.beta, r.x_d, r.y_d] for r in g], dtype=float) for g in groups.values()]
    out: dict[str, float] = {}
    if len(columns) < 2:
        return {**{f"{q}_ci_{end}": math.nan for q in THEOREM_QUANTITIES for end in ("low", "high")},
                "bound_holds_share": math.nan, "rising_share": math.nan}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {q: [] for q in THEOREM_QUANTITIES}
    holds, rising = [], []
    for _ in range(n_resamples):
        data = np.concatenate([columns[i] for i in rng.integers(len(columns), size=len(columns))])
        u, beta, x_d, y_d = data.T
        try:
            fit = fit_rejection_line(u=u, beta=beta)
        except ConfigError:  # a resample whose u does not vary: no line to fit
            continue
        draws["a"].append(fit.a)
        draws["b"].append(fit.b)
        draws["delta"].append(not_immediately_accepted(x_d=x_d, y_d=y_d))
        rising.append(fit.a > 0)
        if not fit.a > 0:
            holds.append(False)
            continue
        report = theorem_report(u=u, beta=beta, x_d=x_d, y_d=y_d, bins=bins)
        for q in THEOREM_QUANTITIES[3:]:  # the thresholds, R and the bound
            draws[q].append(getattr(report, q))
        holds.append(report.bound_holds)
    for q, values in draws.items():
        finite = np.array([v for v in values if math.isfinite(v)])
        low, high = (np.percentile(finite, [2.5, 97.5]) if finite.size else (math.nan, math.nan))
        out[f"{q}_ci_low"], out[f"{q}_ci_high"] = float(low), float(high)
    out["bound_holds_share"] = float(np.mean(holds)) if holds else math.nan
    out["rising_share"] = float(np.mean(rising)) if rising else math.nan
    return out
