"""The U-HLM paper's figures and Table I, drawn from our records with the paper's numbers beside ours.

Pure plotting: each function takes data already computed (records, summaries) and writes one PNG (matplotlib, Agg).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import stats

from uhlm_ray.experiments.evaluate import METHOD_LABELS, format_with_interval
from uhlm_ray.measures.theory import TheoremReport, UncertaintyDensity

# Table I of the paper (cosine similarity, USE), and its other headline numbers
PAPER_TABLE_I = {
    "llm": {"alpaca": 0.6231, "qed": 0.5104, "creak": 0.4862, "strategyqa": 0.6023},
    "slm": {"alpaca": 0.5077, "qed": 0.2577, "creak": 0.2436, "strategyqa": 0.3091},
    "hlm": {"alpaca": 0.5634, "qed": 0.5093, "creak": 0.5040, "strategyqa": 0.5785},
    "rand_hlm": {"alpaca": 0.5285, "qed": 0.4638, "creak": 0.4663, "strategyqa": 0.5735},
    "u_hlm": {"alpaca": 0.5585, "qed": 0.4943, "creak": 0.5130, "strategyqa": 0.5913},
}
PAPER_HEADLINE = {"tr_reduction": 0.4593, "accuracy_vs_llm": 0.9754, "throughput_vs_hlm": 2.54}
# the CU-HLM abstract: 74.8 % of uploads skipped, 97.4 % vocabulary compression, 206x HLM's throughput, 97.4 % accuracy
PAPER_CU_HEADLINE = {"cu_tr_reduction": 0.748, "cu_compression_rate": 0.974, "cu_throughput_vs_hlm": 206.0,
                     "cu_accuracy_vs_llm": 0.974}


# headline key -> (method, summary metric, transform): 1 - TR is the transmission-rate reduction
HEADLINE_SOURCES = {
    "tr_reduction": ("u_hlm", "transmission_rate", "complement"),
    "accuracy_vs_llm": ("u_hlm", "accuracy_vs_llm", "mean_over_datasets"),
    "throughput_vs_hlm": ("u_hlm", "throughput_modelled_vs_hlm", "first_dataset"),
    "cu_tr_reduction": ("cu_hlm", "transmission_rate", "complement"),
    "cu_compression_rate": ("cu_hlm", "compression_rate", "first_dataset"),
    "cu_throughput_vs_hlm": ("cu_hlm", "throughput_modelled_vs_hlm", "first_dataset"),
    "cu_accuracy_vs_llm": ("cu_hlm", "accuracy_vs_llm", "mean_over_datasets"),
    "block_throughput_vs_llm": ("block_hlm", "throughput_modelled_vs_llm", "first_dataset"),
    "block_throughput_vs_hlm": ("block_hlm", "throughput_modelled_vs_hlm", "first_dataset"),
}


def headline_numbers(*, summaries: dict[str, dict[str, dict[str, float]]], first: str
                     ) -> dict[str, tuple[float, float, float]]:
    """The papers' headline numbers from our summaries (data set -> method -> summary), each as
    (value, 95% low, 95% high). Rates and throughputs come from the `first` data set; accuracies relative to the LLM
    are averaged over the data sets, as the paper does, with an interval that combines the per-set bootstrap
    intervals as independent normal errors (the sets share no prompts)."""
    out = {}
    for key, (method, metric, how) in HEADLINE_SOURCES.items():
        if method not in summaries[first]:
            continue
        s = summaries[first][method]
        value, low, high = (s.get(metric, math.nan), s.get(f"{metric}_ci_low", math.nan),
                            s.get(f"{metric}_ci_high", math.nan))
        if how == "complement":
            value, low, high = 1.0 - value, 1.0 - high, 1.0 - low
        elif how == "mean_over_datasets":
            per = [summaries[d][method] for d in summaries if method in summaries[d]]
            value = float(np.mean([p.get(metric, math.nan) for p in per]))
            half = [(p.get(f"{metric}_ci_high", math.nan) - p.get(f"{metric}_ci_low", math.nan)) / 2 for p in per]
            spread = math.sqrt(sum(h * h for h in half)) / len(per)
            low, high = value - spread, value + spread
        out[key] = (value, low, high)
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def binned_rejection(*, u: np.ndarray, beta: np.ndarray, bins: int = 10) -> list[tuple[float, float, float, int]]:
    """(bin centre, mean beta, 95 % half-width, count) over equal bins of u in [0, 1]; empty bins are left out."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(u, edges) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        values = beta[index == b]
        if len(values) == 0:
            continue
        half = (stats.t.ppf(0.975, df=len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
                if len(values) > 1 else math.nan)
        out.append(((edges[b] + edges[b + 1]) / 2, float(values.mean()), float(half), len(values)))
    return out


def fig3_uncertainty_vs_rejection(*, by_measure: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """Fig. 3: binned mean rejection probability (95 % interval) against u, one panel per measure."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(by_measure), figsize=(4.2 * len(by_measure), 3.6), squeeze=False)
    for ax, (measure, (u, beta)) in zip(axes[0], by_measure.items(), strict=True):
        rows = binned_rejection(u=u, beta=beta)
        ax.errorbar([r[0] for r in rows], [r[1] for r in rows], yerr=[r[2] for r in rows], fmt="o-", capsize=3)
        r = stats.pearsonr(u, beta).statistic if len(u) > 2 and np.ptp(u) > 0 else math.nan
        ax.set_title(f"{measure} (n={len(u)}, r={r:.2f})")
        ax.set_xlabel("uncertainty u")
        ax.set_ylabel("rejection probability beta")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.05, 1.05)  # beta is a probability; sparse bins' t-intervals would otherwise set the scale
    fig.suptitle("Fig. 3: uncertainty vs rejection probability (paper: only temperature perturbation is linear)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fig4_threshold(*, thresholds: list[float], summaries: list[dict[str, float]], path: Path) -> None:
    """Fig. 4: U-HLM's cosine similarity and TR against u_th (one summary per threshold), each with its 95% interval
    over prompts as an error bar."""
    plt = _plt()

    def bars(metric: str) -> tuple[list[float], np.ndarray]:
        values = [s[metric] for s in summaries]
        low = [s.get(f"{metric}_ci_low", math.nan) for s in summaries]
        high = [s.get(f"{metric}_ci_high", math.nan) for s in summaries]
        return values, np.nan_to_num(np.abs(np.array([np.subtract(values, low), np.subtract(high, values)])))

    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    accuracy, accuracy_err = bars("accuracy")
    ax.errorbar(thresholds, accuracy, yerr=accuracy_err, fmt="o-", color="C0", capsize=3, label="cosine similarity")
    ax.set_xlabel("uncertainty threshold u_th")
    ax.set_ylabel("cosine similarity (95% interval)", color="C0")
    twin = ax.twinx()
    tr, tr_err = bars("transmission_rate")
    twin.errorbar(thresholds, tr, yerr=tr_err, fmt="s--", color="C1", capsize=3, label="TR")
    twin.set_ylabel("transmission rate", color="C1")
    ax.axvline(0.431, color="grey", lw=0.8, ls=":")
    ax.set_title("Fig. 4: U-HLM vs threshold (dotted: the paper's 0.431)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fig5_density_and_fit(*, u: np.ndarray, beta: np.ndarray, report: TheoremReport, path: Path) -> None:
    """Fig. 5: the density of u (left) and beta against u with the fit and both thresholds (right)."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    density = UncertaintyDensity.from_samples(u, bins=20)
    left.stairs(density.density, density.edges, fill=True, alpha=0.6)
    left.set_xlabel("uncertainty u")
    left.set_ylabel("density f(u)")
    grid = np.linspace(0, 1, 101)
    right.scatter(u, beta, s=6, alpha=0.3)
    right.plot(grid, report.a * grid + report.b, "k-",
               label=f"ours: beta = {report.a:.2f} u {report.b:+.2f} (r = {report.r:.2f})")
    right.plot(grid, 0.82 * grid - 0.06, "r:", label="paper: beta = 0.82 u - 0.06")
    for ax in (left, right):
        for value, style in ((report.u_th_risk_averse, "--"), (report.u_th_risk_prone, "-.")):
            if 0 <= value <= 1:
                ax.axvline(value, color="k", ls=style, lw=0.8)
    right.set_xlabel("uncertainty u")
    right.set_ylabel("rejection probability beta")
    right.set_ylim(-0.05, 1.05)
    right.legend(fontsize=7)
    fig.suptitle(f"Fig. 5: thresholds ours {report.u_th_risk_averse:.3f} / {report.u_th_risk_prone:.3f} "
                 f"(paper 0.073 / 0.431); Delta ours {report.delta:.3f} (paper 0.301)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fig6_rates_and_snr(*, summaries: dict[str, dict[str, float]], path: Path) -> None:
    """Fig. 6: TSR, TR and compression rate per hybrid method (left); modelled throughput vs average SNR per
    method (right)."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    hybrid = [m for m in ("hlm", "rand_hlm", "u_hlm", "cu_hlm", "block_hlm") if m in summaries]
    xs = np.arange(len(hybrid))
    left.bar(xs - 0.27, [summaries[m].get("true_skip_rate", 0.0) if m != "hlm" else 0.0 for m in hybrid], 0.27,
             label="TSR")
    left.bar(xs, [summaries[m]["transmission_rate"] for m in hybrid], 0.27, label="TR")
    left.bar(xs + 0.27, [summaries[m].get("compression_rate", 0.0) for m in hybrid], 0.27, label="compression")
    left.set_xticks(xs, [METHOD_LABELS[m] for m in hybrid])
    left.legend()
    for method, s in summaries.items():
        keys = sorted((float(k.removeprefix("throughput_modelled_snr_").removesuffix("dB")), k)
                      for k in s if k.startswith("throughput_modelled_snr_"))
        right.plot([snr for snr, _ in keys], [s[k] for _, k in keys], "o-", label=METHOD_LABELS[method])
    right.set_yscale("log")
    right.set_xlabel("average SNR (dB)")
    right.set_ylabel("token throughput (tok/s, modelled)")
    right.legend(fontsize=8)
    fig.suptitle("Fig. 6: TSR, TR and compression (left), throughput vs average SNR (right)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table_one(*, summaries: dict[str, dict[str, dict[str, float]]]) -> tuple[list[dict], str]:
    """Table I: cosine similarity per method (rows) and data set (columns), ours with its 95% bootstrap interval
    over prompts beside the paper's. `summaries` maps data set -> method -> summary (summarize_methods')."""
    datasets = sorted(summaries)
    methods = {m for per in summaries.values() for m in per}
    rows, lines = [], []
    header = "| method | " + " | ".join(f"{d} (ours) | {d} (paper)" for d in datasets) + " |"
    lines += [header, "|---|" + "---:|---:|" * len(datasets)]
    for method in ("llm", "slm", "hlm", "rand_hlm", "u_hlm", "cu_hlm", "block_hlm"):
        if method not in methods:
            continue
        row: dict = {"method": method}
        cells = []
        for d in datasets:
            summary = summaries[d].get(method, {})
            paper = PAPER_TABLE_I.get(method, {}).get(d, math.nan)
            row[f"{d}_ours"], row[f"{d}_paper"] = summary.get("accuracy", math.nan), paper
            row[f"{d}_ci_low"], row[f"{d}_ci_high"] = (summary.get("accuracy_ci_low", math.nan),
                                                       summary.get("accuracy_ci_high", math.nan))
            cells += [format_with_interval(summary, key="accuracy", fmt="{:.4f}"),
                      f"{paper:.4f}" if not math.isnan(paper) else "-"]
        rows.append(row)
        lines.append(f"| {METHOD_LABELS[method]} | " + " | ".join(cells) + " |")
    return rows, "\n".join(lines)


ENERGY_PARTS = ("compute", "measure", "tx", "wait", "rx", "tail", "promotion")  # uhlm_ray/link/energy.py


def energy_table(summaries: dict[str, dict[str, float]]) -> str:
    """Per method: the device's J/token, over the LLM alone's and HLM's (paired on the same prompts), its parts
    (which add up to it), J/round and the base station's J per verified token, each with its 95% bootstrap interval
    over prompts."""
    header = ["method", "J/token (device)", "x LLM", "x HLM", *ENERGY_PARTS, "J/round", "BS J/verified token",
              "accuracy"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for method, s in summaries.items():
        cells = [format_with_interval(s, key="energy_device_j_per_token", fmt="{:.3f}"),
                 *(format_with_interval(s, key=f"energy_device_j_per_token_vs_{base}", fmt="{:.3f}")
                   for base in ("llm", "hlm")),  # paired on the same prompts
                 *(format_with_interval(s, key=f"energy_{p}_j_per_token", fmt="{:.3f}") for p in ENERGY_PARTS),
                 format_with_interval(s, key="energy_device_j_per_round", fmt="{:.3f}"),
                 format_with_interval(s, key="energy_bs_j_per_verified_token", fmt="{:.2f}"),
                 format_with_interval(s, key="accuracy", fmt="{:.4f}")]
        lines.append(f"| {METHOD_LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def accuracy_energy(*, summaries: dict[str, dict[str, float]], path: Path) -> None:
    """Accuracy against the device's energy per token, each method with its 95% intervals, the frontier (lower
    energy, higher accuracy) dashed, on a log axis where the methods' energies span more than 20x (full uploads
    cost about 100x an SLM step) (left); each method's J/token split into the shares of its parts, its total above
    the bar (right)."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    points = []
    for method, s in summaries.items():
        x, y = s.get("energy_device_j_per_token", math.nan), s.get("accuracy", math.nan)
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        points.append((x, y, method))
        xerr = [[abs(x - s.get("energy_device_j_per_token_ci_low", x))], [abs(s.get(
            "energy_device_j_per_token_ci_high", x) - x)]]
        yerr = [[abs(y - s.get("accuracy_ci_low", y))], [abs(s.get("accuracy_ci_high", y) - y)]]
        xerr = np.nan_to_num(np.array(xerr))
        yerr = np.nan_to_num(np.array(yerr))
        left.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="o", capsize=3, label=METHOD_LABELS.get(method, method))
    front = sorted(p for p in points if not any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in points))
    if front:
        left.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, label="frontier")
    energies = [p[0] for p in points]
    if energies and min(energies) > 0 and max(energies) > 20 * min(energies):  # a zero (no radio) keeps it linear
        left.set_xscale("log")
    left.set_xlabel("device energy (J/token, modelled)")
    left.set_ylabel("accuracy (cosine similarity)")
    left.legend(fontsize=8)
    methods = [m for m in summaries if 0 < summaries[m].get("energy_device_j_per_token", math.nan) < math.inf]
    totals = np.array([summaries[m]["energy_device_j_per_token"] for m in methods])
    bottom = np.zeros(len(methods))
    for part in ENERGY_PARTS:
        values = np.array([summaries[m].get(f"energy_{part}_j_per_token", 0.0) for m in methods]) / totals
        right.bar(np.arange(len(methods)), 100 * values, bottom=100 * bottom, label=part)
        bottom += values
    for i, total in enumerate(totals):
        right.text(i, 101, f"{total:.3g} J", ha="center", va="bottom", fontsize=7)
    right.set_xticks(np.arange(len(methods)), [METHOD_LABELS.get(m, m) for m in methods], fontsize=8)
    right.set_ylim(0, 112)
    right.set_ylabel("share of the device's J/token (%)")
    right.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the bars, not on them
    fig.suptitle("Accuracy against device energy (left) and where the energy goes (right)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
