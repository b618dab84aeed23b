"""A sweep's report: Pareto frontiers (accuracy vs modelled and vs experiment throughput, and vs the device's energy
per token) and the risk plot, as files."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from uhlm_ray.experiments.evaluate import METHOD_LABELS, format_value
from uhlm_ray.experiments.sweep import SearchSpace, pareto_front

CLOCKS = (("throughput_modelled", "modelled throughput (tok/s, eq. 3-4)"),
          ("throughput_experiment", "experiment throughput (tok/s of trial time, batched)"))
ENERGY = ("energy_device_j_per_token", "device energy (J/token, modelled; uhlm_ray/link/energy.py)")
# (x metric, axis label, whether x is maximised or minimised, the figure's name: frontier_<name>.png)
FRONTIERS = (*((clock, label, "max", clock.split("_")[1]) for clock, label in CLOCKS), (*ENERGY, "min", "energy"))


def trial_points(*, trials: list[dict], methods: list[str]) -> list[dict]:
    """One point per (trial, method): its accuracy and throughputs and the trial's parameters."""
    points = []
    for i, t in enumerate(trials):
        for method in methods:
            if f"{method}.accuracy" not in t:
                continue
            points.append({
                "trial": i, "trial_key": t.get("trial_key", ""), "method": method,
                "accuracy": t[f"{method}.accuracy"],
                **{x: t.get(f"{method}.{x}", math.nan) for x, *_ in FRONTIERS},
                "energy_bs_j_per_verified_token": t.get(f"{method}.energy_bs_j_per_verified_token", math.nan),
                # 95% bootstrap intervals over prompts; accuracy against the LLM alone paired on prompts
                **{f"{m}_ci_{end}": t.get(f"{method}.{m}_ci_{end}", math.nan)
                   for m in ("accuracy", *(x for x, *_ in FRONTIERS), "accuracy_vs_llm") for end in ("low", "high")},
                "accuracy_vs_llm": t.get(f"{method}.accuracy_vs_llm", math.nan),
                "transmission_rate": t.get(f"{method}.transmission_rate", math.nan),
                "exact": t.get(f"{method}.exact", math.nan),
                **{f"param.{k}": v for k, v in t["params"].items()},
            })
    return points


def point_label(point: dict) -> str:
    """A frontier point's label: its method, and the trial's parameters by their last key part."""
    params = " ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in point.items() if k.startswith("param."))
    return f"{METHOD_LABELS[point['method']]} {params}".strip()


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _order(value: object) -> tuple[int, float, str]:
    """A parameter value's place in the trial table: null first, numbers by value (8192 before 16384), then text."""
    if value is None:
        return 0, 0.0, ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 1, float(value), ""
    return 2, 0.0, str(value)


def trial_table(*, trials: list[dict], space: SearchSpace) -> str:
    """The console's last table: one row per trial, its swept parameters, its objectives and its time."""
    keys = list(space.params)
    header = [*keys, *(o.metric for o in space.objectives), "trial s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(keys) + "---:|" * (len(header) - len(keys))]
    for t in sorted(trials, key=lambda t: [_order(t["params"].get(k)) for k in keys]):
        cells = [_short(t["params"].get(k)) for k in keys]
        cells += [format_value(t.get(o.metric), "{:.4g}") for o in space.objectives]
        cells.append(f"{t.get('trial_ended', math.nan) - t.get('trial_started', math.nan):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = sorted({k for r in rows for k in r}, key=lambda k: (not k.startswith(("trial", "method")), k))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def exact_against_llm(points: list[dict]) -> list[str]:
    """Where exact hybrid inference sits: the fastest exact hybrid point beside the LLM alone, on each clock."""
    lines = ["", "Exact hybrid inference (every token verified) against the LLM alone:",
             "| clock | LLM alone tok/s | fastest exact hybrid | tok/s | x LLM alone | accuracy | parameters |",
             "|---|---:|---|---:|---:|---:|---|"]
    llm = [p for p in points if p["method"] == "llm"]
    exact = [p for p in points if p["method"] != "llm" and p.get("exact") == 1.0]
    for clock, label in CLOCKS:
        valid = [p for p in exact if math.isfinite(p[clock])]
        if not llm or not valid:
            continue
        base = max(p[clock] for p in llm)
        best = max(valid, key=lambda p: p[clock])
        params = ", ".join(f"{k.removeprefix('param.')}={v}" for k, v in best.items() if k.startswith("param."))
        lines.append(f"| {label.split(' (')[0]} | {base:.3g} | {METHOD_LABELS[best['method']]} | {best[clock]:.3g} | "
                     f"{best[clock] / base:.2f} | {best['accuracy']:.4f} | {params} |")
    return lines


def _error_bars(points: list[dict], key: str) -> list[list[float]]:
    """matplotlib's [below, above] distances to a point's 95% interval (0 where it has none)."""
    def gap(p: dict, end: str) -> float:
        bound = p.get(f"{key}_ci_{end}", math.nan)
        return abs(p[key] - bound) if math.isfinite(bound) and math.isfinite(p[key]) else 0.0
    return [[gap(p, "low") for p in points], [gap(p, "high") for p in points]]


def _with_ci(point: dict, key: str, fmt: str) -> str:
    cell = format_value(point.get(key), fmt)
    low, high = point.get(f"{key}_ci_low", math.nan), point.get(f"{key}_ci_high", math.nan)
    return f"{cell} [{fmt.format(low)}, {fmt.format(high)}]" if math.isfinite(low) and math.isfinite(high) else cell


def untold_from_llm(points: list[dict]) -> list[str]:
    """The (trial, method) points whose accuracy cannot be told apart from the LLM alone's: the paired 95% interval
    of accuracy / the LLM's contains 1."""
    untold = [p for p in points if p["method"] != "llm" and math.isfinite(p.get("accuracy_vs_llm_ci_low", math.nan))
              and p["accuracy_vs_llm_ci_low"] <= 1.0 <= p["accuracy_vs_llm_ci_high"]]
    told = [p for p in points if p["method"] != "llm" and p not in untold
            and math.isfinite(p.get("accuracy_vs_llm_ci_low", math.nan))]
    lines = ["", f"Accuracy against the LLM alone, paired on the same prompts (95%): {len(untold)} of "
             f"{len(untold) + len(told)} points cannot be told apart from it:"]
    seen: set[str] = set()
    for p in untold:
        label = point_label(p)
        if label not in seen:
            seen.add(label)
            lines.append(f"- {label}: {_with_ci(p, 'accuracy_vs_llm', '{:.1%}')}")
    for p in told:
        label = point_label(p)
        if label not in seen:
            seen.add(label)
            lines.append(f"- differs: {label}: {_with_ci(p, 'accuracy_vs_llm', '{:.1%}')}")
    return lines


def frontier_report(*, trials: list[dict], space: SearchSpace, folder: Path) -> str:
    """Write trials.csv, frontier.csv / .md, frontier_modelled.png, frontier_experiment.png, frontier_energy.png
    (accuracy against the device's J/token, lower is better) and risk.png; return the Markdown table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    points = trial_points(trials=trials, methods=space.methods)
    _write_csv(folder / "trials.csv", points or [{"trial": None}])
    lines = []
    front_rows = []
    for clock, label, mode, name in FRONTIERS:  # the two throughputs (higher is better), then energy (lower)
        front = pareto_front(points, x=clock, y="accuracy", x_mode=mode)
        # methods that ignore the swept settings give the same point in every trial: list it once
        seen: set[tuple] = set()
        front = [p for p in front if (key := (p["method"], p["accuracy"], p[clock])) not in seen and not seen.add(key)]
        front_rows += [{**p, "clock": clock} for p in front]
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        for method in space.methods:
            mine = [p for p in points if p["method"] == method]
            ax.errorbar([p[clock] for p in mine], [p["accuracy"] for p in mine], xerr=_error_bars(mine, clock),
                        yerr=_error_bars(mine, "accuracy"), fmt="o", ms=4.5, capsize=2, elinewidth=0.8,
                        label=METHOD_LABELS[method])
        ax.plot([p[clock] for p in front], [p["accuracy"] for p in front], "k--", lw=1, label="Pareto frontier")
        for p in front:  # which settings each frontier point is
            ax.annotate(point_label(p), (p[clock], p["accuracy"]), xytext=(4, 3), textcoords="offset points",
                        fontsize=6.5, alpha=0.85)
        if any(p[clock] > 0 for p in points):
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (cosine similarity)")
        ax.set_title(f"{space.name}: accuracy vs " + ("device energy" if name == "energy" else f"{name} throughput"))
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / f"frontier_{name}.png", dpi=120)
        plt.close(fig)
        lines += [f"\nPareto frontier, accuracy vs {label} (95% intervals over prompts):",
                  f"| method | accuracy | accuracy vs LLM (paired) | {'J/token' if name == 'energy' else 'tok/s'} "
                  "| TR | parameters |",
                  "|---|---:|---:|---:|---:|---|"]
        for p in front:
            params = ", ".join(f"{k.removeprefix('param.')}={v}" for k, v in p.items() if k.startswith("param."))
            lines.append(f"| {METHOD_LABELS[p['method']]} | {_with_ci(p, 'accuracy', '{:.4f}')} | "
                         f"{_with_ci(p, 'accuracy_vs_llm', '{:.1%}')} | {_with_ci(p, clock, '{:.3f}')} | "
                         f"{format_value(p['transmission_rate'], '{:.1%}')} | {params} |")
    _write_csv(folder / "frontier.csv", front_rows or [{"trial": None}])
    lines += exact_against_llm(points)
    lines += untold_from_llm(points)
    table = "\n".join(lines)
    (folder / "frontier.md").write_text(table + "\n")

    # empirical rejection risk of each U-HLM trial against eq. 12 and its eq. 13 bound at the trial's threshold
    risk = sorted((t["params"].get("policy.u_th", math.nan), t.get("u_hlm.rejection_risk", math.nan),
                   t.get("u_hlm.theory_risk", math.nan), t.get("u_hlm.theory_bound", math.nan))
                  for t in trials if "u_hlm.rejection_risk" in t)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if risk:
        xs = list(range(len(risk))) if all(math.isnan(r[0]) for r in risk) else [r[0] for r in risk]
        ax.plot(xs, [r[1] for r in risk], "o-", label="empirical rejection risk (skipped beta per token)")
        ax.plot(xs, [r[2] for r in risk], "s-", label="R, eq. 12 (fitted line, empirical density)")
        ax.plot(xs, [r[3] for r in risk], "^--", label="Hoelder bound, eq. 13")
    ax.set_xlabel("u_th")
    ax.set_ylabel("rejection risk")
    ax.set_title(f"{space.name}: U-HLM rejection risk vs its bound")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "risk.png", dpi=120)
    plt.close(fig)
    return table
