"""Regenerate the U-HLM paper's evidence on your models: Fig. 3-6 as PNG files and Table I as CSV and Markdown, each
with the paper's numbers beside ours, plus Theorem 1's quantities; all logged to one MLflow run.

    python jobs/reproduce.py data.path=../shared/data                       # embedded pair, 3 prompts per set
    python jobs/reproduce.py data.path=../shared/data reproduce.n_prompts=100 decode.max_new_tokens=128

The uplink is the paper's eq. 3 (channel.model=shannon, channel.process=per_round: one fading draw per round held for
the whole upload, no per-upload overhead) unless overridden; its mean upload time is infinite under Rayleigh fading,
so medians and p95s are reported beside the means.

Runs (sharing decoded prompts through the sweep store, so no (method, prompt) is decoded twice):
Table I and Fig. 6: every method on each of `reproduce.datasets`; Fig. 5 and Theorem 1: the LLM-scored rounds of
those runs (temperature perturbation); Fig. 3: HLM with each of `reproduce.measures` on the first data set;
Fig. 4: U-HLM at each of `reproduce.thresholds` on the first data set.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from uhlm_ray.cli import job_inputs, refusals
from uhlm_ray.config import EvaluateConfig
from uhlm_ray.experiments.calibration import machine_name
from uhlm_ray.experiments.datasets import load_examples
from uhlm_ray.experiments.evaluate import DECODE_SECTIONS, METHOD_LABELS, batch_size, run_key
from uhlm_ray.experiments.figures import (
    PAPER_CU_HEADLINE,
    PAPER_HEADLINE,
    fig3_uncertainty_vs_rejection,
    fig4_threshold,
    fig5_density_and_fit,
    fig6_rates_and_snr,
    headline_numbers,
    table_one,
)
from uhlm_ray.experiments.locations import job_folder
from uhlm_ray.experiments.sweep import evaluate_trial, local_store
from uhlm_ray.experiments.tracking import experiment_name, finite_metrics, flat_params, log_params, setup_experiment
from uhlm_ray.measures.intervals import theorem_intervals
from uhlm_ray.measures.similarity import load_encoder
from uhlm_ray.measures.theory import PAPER, theorem_report_from_records
from uhlm_ray.models import load_pair
from uhlm_ray.models.loading import ModelPair
from uhlm_ray.models.prefix_cache import prefix_cache
from uhlm_ray.records import PromptResult
from uhlm_ray.validation import ConfigError


def variant(cfg: EvaluateConfig, **changes) -> EvaluateConfig:
    """A copy of cfg with dotted-path changes, e.g. variant(cfg, **{"data.name": "qed"})."""
    out = dataclasses.replace(cfg)
    for dotted, value in changes.items():
        section, name = dotted.split(".")
        setattr(out, section, dataclasses.replace(getattr(out, section), **{name: value}))
    return out


def adopt_run_stores(job: Path) -> None:
    """Stores that reproductions kept per run key before they shared one (<run key>/shared/<method key>) move into
    the shared store, so that a run interrupted before an upgrade resumes; a method key already there is kept."""
    for old in sorted(job.glob("*/shared/*")):
        new = job / "shared" / old.name
        if old.is_dir() and old.parent.parent.name != "shared" and not new.exists():
            new.parent.mkdir(parents=True, exist_ok=True)
            old.rename(new)


# The paper's uplink: eq. 3 at the round's SNR with one fading draw per round held for the upload, no per-upload
# overhead (command-line overrides still win)
PAPER_CHANNEL = ["channel.model=shannon", "channel.process=per_round", "channel.upload_overhead_ms=0"]


def reproduction_report(*, argv: list[str], cfg: EvaluateConfig, pair: ModelPair, summary: str,
                        elapsed_s: float) -> str:
    """The run's own account: the command, the machine, the settings that matter, the wall time and the tables."""
    dtype = next(pair.slm.model.parameters()).dtype
    machine = machine_name(next(pair.slm.model.parameters()).device)
    rep = cfg.reproduce
    return "\n".join([
        "```", "python jobs/reproduce.py " + " ".join(argv), "```", "",
        f"- machine: {machine}, torch {torch.__version__}, {dtype}; wall time {elapsed_s / 60:.1f} min "
        f"({time.strftime('%Y-%m-%d')})",
        f"- models: {pair.slm.source} / {pair.llm.source}, |V| = {pair.vocab_size}",
        f"- data sets: {', '.join(rep.datasets)}, {rep.n_prompts} prompts each; r_max = decode.max_new_tokens = "
        f"{cfg.decode.max_new_tokens}; K = {cfg.uncertainty.k}, theta_max = {cfg.uncertainty.theta_max}; "
        f"u_th = {cfg.policy.u_th}; uplink {cfg.channel.model}; seed {cfg.decode.seed}",
        f"- prompts decoded in lockstep batches of {batch_size(cfg=cfg, pair=pair)}; the modelled clock from solo "
        "passes (calibrated once per machine) or the configured times",
        "", summary, ""])


def main(argv: list[str]) -> int:
    cfg, _ = job_inputs(argv, description=__doc__, defaults=PAPER_CHANNEL)
    rep = cfg.reproduce
    with refusals():  # every data set the reproduction reads, before the models load
        for name in rep.datasets:
            load_examples(dataclasses.replace(cfg.data, name=name, n_prompts=rep.n_prompts))
    job = job_folder(output_dir=cfg.output_dir, job="reproduce")
    folder = job / run_key(cfg, sections=(*DECODE_SECTIONS, "reproduce"))
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    pair = load_pair(cfg.model)
    encoder = load_encoder(cfg.metrics.encoder)
    prefixes = prefix_cache(cfg.runtime)  # forward passes shared by every run of the reproduction
    # one store for every reproduction under this root, keyed inside by each method's decode settings: a rerun with
    # other figures' settings (reproduce.*) or another channel reuses every (method, prompt) already decoded
    shared = job / "shared"
    adopt_run_stores(job)

    # every (run, method, prompt) the reproduction needs; what a store already holds leaves the total as it is
    # found, so that the rate and the time left are those of decoding
    total = rep.n_prompts * (len(rep.datasets) * len(cfg.methods) + len(rep.measures) + len(rep.thresholds))
    bar = tqdm(total=total, desc="reproduce: to decode", unit="prompt", file=sys.stdout, smoothing=0.1)
    reused = 0

    def run(trial_cfg: EvaluateConfig, label: str):
        examples = load_examples(trial_cfg.data)
        t0 = time.perf_counter()

        def progress(result: PromptResult) -> None:
            bar.set_postfix_str(f"{reused} reused; {label}: {METHOD_LABELS[result.method]} #{result.prompt_index}")
            bar.update(1)

        def found(result: PromptResult) -> None:
            nonlocal reused
            reused += 1
            bar.total -= 1
            bar.set_postfix_str(f"{reused} reused; {label}")

        outcome = evaluate_trial(pair=pair, examples=examples, cfg=trial_cfg, encoder=encoder,
                                 store_for=local_store(shared), prefixes=prefixes, on_prompt=progress,
                                 on_stored=found)
        bar.write(f"[reproduce] {label}: {len(examples)} prompts, {outcome.decoded_prompts} decoded, "
                  f"{outcome.reused_prompts} reused, {time.perf_counter() - t0:.0f} s")
        return outcome

    base = variant(cfg, **{"data.n_prompts": rep.n_prompts, "uncertainty.measure": "temperature"})
    # Table I, Fig. 6 and Fig. 5: every method on every data set
    per_dataset = {}
    for name in rep.datasets:
        per_dataset[name] = run(variant(base, **{"data.name": name}), f"Table I, {name}")
    rows, table = table_one(summaries={d: o.summaries for d, o in per_dataset.items()})
    with (folder / "table1.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / "table1.md").write_text(table + "\n")
    first = per_dataset[rep.datasets[0]]
    fig6_rates_and_snr(summaries=first.summaries, path=folder / "figures" / "fig6_tsr_tr_snr.png")

    scored = [r for o in per_dataset.values() for m in ("hlm", "u_hlm", "rand_hlm") if m in o.results
              for res in o.results[m] for r in res.records]
    try:
        theorem, theorem_failed = theorem_report_from_records(scored), ""
    except ConfigError as err:  # e.g. a falling line: Theorem 1 does not apply, the rest of the report still does
        theorem, theorem_failed = None, str(err)
    if theorem is not None:
        usable = [r for r in scored if math.isfinite(r.y_d) and math.isfinite(r.uncertainty)]
        fig5_density_and_fit(u=np.array([r.uncertainty for r in usable]), beta=np.array([r.beta for r in usable]),
                             report=theorem, path=folder / "figures" / "fig5_density_fit.png")

    # Fig. 3: HLM scores every round, so each measure's u meets the LLM's beta on every token
    first_data = variant(base, **{"data.name": rep.datasets[0]})
    by_measure = {}
    for measure in rep.measures:
        outcome = run(dataclasses.replace(variant(first_data, **{"uncertainty.measure": measure}), methods=["hlm"]),
                      f"Fig. 3, {measure}")
        records = [r for res in outcome.results["hlm"] for r in res.records]
        by_measure[measure] = (np.array([r.uncertainty for r in records]), np.array([r.beta for r in records]))
    fig3_uncertainty_vs_rejection(by_measure=by_measure, path=folder / "figures" / "fig3_uncertainty_beta.png")

    # Fig. 4: U-HLM against the threshold
    fig4 = []
    for u_th in rep.thresholds:
        outcome = run(dataclasses.replace(variant(first_data, **{"policy.u_th": u_th}), methods=["u_hlm"]),
                      f"Fig. 4, u_th={u_th}")
        fig4.append(outcome.summaries["u_hlm"])
    fig4_threshold(thresholds=list(rep.thresholds), summaries=fig4, path=folder / "figures" / "fig4_threshold.png")

    bar.close()
    # headline numbers beside the paper's, each with its interval
    headline = headline_numbers(summaries={d: o.summaries for d, o in per_dataset.items()}, first=rep.datasets[0])
    spread = theorem_intervals(scored, seed=cfg.decode.seed)  # bootstrap over prompts
    lines = ["| quantity | ours | ours, 95% interval over prompts | paper |", "|---|---:|---:|---:|"]
    ours = theorem.to_dict() if theorem is not None else {}
    for key, value in ours.items():
        if key in PAPER:
            lines.append(f"| {key} | {value:.4g} | [{spread[f'{key}_ci_low']:.4g}, {spread[f'{key}_ci_high']:.4g}] "
                         f"| {PAPER[key]:.4g} |")
    if theorem is not None:
        lines += [f"| r (Pearson) | {theorem.r:.3f} | - | - |",
                  f"| line rises (a > 0) | {theorem.a > 0} | in {spread['rising_share']:.0%} of resamples | True |",
                  f"| bound holds | {theorem.bound_holds} | in {spread['bound_holds_share']:.0%} of resamples "
                  "| True |"]
    else:
        lines.append(f"| Theorem 1 | does not apply: {theorem_failed} | - | a = 0.82 |")
    papers = PAPER_HEADLINE | PAPER_CU_HEADLINE
    for key, (value, low, high) in headline.items():
        paper = f"{papers[key]:.4g}" if key in papers else "-"
        lines.append(f"| {key} | {value:.4g} | [{low:.4g}, {high:.4g}] | {paper} |")
    summary = "\n".join(["Table I (cosine similarity, USE; ours with its 95% bootstrap interval over prompts):", table,
                         "", "Theorem 1 and headline numbers "
                         f"({rep.datasets[0]} for the throughput and TR; accuracy averaged over data sets):", *lines])
    (folder / "summary.md").write_text(summary + "\n")
    (folder / "theorem.json").write_text(json.dumps(
        {"ours": ours or {"error": theorem_failed}, "intervals": spread, "paper": PAPER,
         "headline": {k: list(v) for k, v in headline.items()}, "paper_headline": papers}, indent=2))
    print(summary)
    elapsed = time.perf_counter() - start
    (folder / "reproduction.md").write_text(reproduction_report(argv=argv, cfg=cfg, pair=pair, summary=summary,
                                                                elapsed_s=elapsed))
    print(f"\n[reproduce] done in {elapsed:.0f} s; files in {folder} (reproduction.md: the report)")

    if cfg.tracking.enabled:
        import mlflow

        experiment_id = setup_experiment(cfg.tracking, job="reproduce")
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"reproduce-{folder.name}") as run_:
            log_params(mlflow.MlflowClient(), run_.info.run_id, flat_params(cfg))
            mlflow.log_metrics(finite_metrics({**{f"theorem.{k}": v for k, v in ours.items()},
                                               **{f"theorem.{k}": v for k, v in spread.items()},
                                               **{k: v[0] for k, v in headline.items()},
                                               **{f"{k}_ci_low": v[1] for k, v in headline.items()},
                                               **{f"{k}_ci_high": v[2] for k, v in headline.items()},
                                               "wall_s": elapsed}))
            for path in [folder / "table1.csv", folder / "table1.md", folder / "summary.md", folder / "theorem.json",
                         folder / "reproduction.md"]:
                mlflow.log_artifact(str(path))
            mlflow.log_artifacts(str(folder / "figures"), "figures")
            experiment = experiment_name(cfg.tracking, job="reproduce")
            print(f"[reproduce] MLflow run {run_.info.run_id} in experiment {experiment!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
