"""Compare the LLM, SLM, HLM, Rand-HLM, U-HLM, CU-HLM and the block method on one prompt set (the U-HLM paper's
Table I and Fig. 6, and where exact hybrid inference sits against the LLM alone).

    python jobs/evaluate.py                                   # embedded Qwen2.5-Coder pair, built-in prompts
    python jobs/evaluate.py data.n_prompts=20 policy.u_th=0.4
    python jobs/evaluate.py data.name=alpaca data.path=../shared/data data.n_prompts=100
    python jobs/evaluate.py --config my.yaml decode.max_new_tokens=64

Every setting is an omegaconf override of uhlm_ray.config.EvaluateConfig. Per-prompt results are written as they
finish under output_dir (an interrupted run resumes), and each method becomes an MLflow run under one parent run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from uhlm_ray.cli import job_inputs
from uhlm_ray.config import EvaluateConfig
from uhlm_ray.experiments.calibration import run_calibration
from uhlm_ray.experiments.evaluate import (
    METHOD_LABELS,
    ResultStore,
    batch_size,
    evaluate_methods,
    format_table,
    format_value,
    run_key,
    summarize_methods,
)
from uhlm_ray.experiments.figures import energy_table
from uhlm_ray.experiments.locations import job_folder
from uhlm_ray.experiments.tracking import (
    RUN_KEY_TAG,
    experiment_name,
    find_logged_run,
    finite_metrics,
    flat_params,
    log_params,
    log_prompt_results,
    setup_experiment,
)
from uhlm_ray.measures.similarity import load_encoder
from uhlm_ray.models import load_pair
from uhlm_ray.records import PromptResult
from uhlm_ray.snr import mean_snr_db


def log_to_mlflow(
    *, cfg: EvaluateConfig, results: dict[str, list[PromptResult]], summaries: dict, table: str, folder: Path
) -> str:
    import mlflow

    experiment_id = setup_experiment(cfg.tracking, job="evaluate")
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"evaluate-{run_key(cfg)}",
                          tags={RUN_KEY_TAG: run_key(cfg)}) as parent:
        log_params(mlflow.MlflowClient(), parent.info.run_id, flat_params(cfg))
        mlflow.log_text(table, "summary.md")
        mlflow.log_dict(summaries, "summary.json")
        for method, method_results in results.items():
            with mlflow.start_run(experiment_id=experiment_id, run_name=METHOD_LABELS[method], nested=True) as child:
                log_params(mlflow.MlflowClient(), child.info.run_id, {**flat_params(cfg), "method": method})
                mlflow.log_metrics(finite_metrics(summaries[method]))
                log_prompt_results(results=method_results, folder=folder, name=method)
        return parent.info.run_id


def main(argv: list[str]) -> int:
    cfg, examples = job_inputs(argv, description=__doc__)

    print(f"[evaluate] channel: average SNR {mean_snr_db(cfg.channel):.2f} dB "
          f"(W={cfg.channel.bandwidth_hz:g} Hz, p={cfg.channel.tx_power_dbm} dBm, N={cfg.channel.noise_dbm} dBm, "
          f"alpha={cfg.channel.path_loss_exponent}, rho={cfg.channel.distance_m:g} m, fading={cfg.channel.fading})")
    print(f"[evaluate] data: {cfg.data.name}, {len(examples)} prompts, max_new_tokens={cfg.decode.max_new_tokens}, "
          f"methods={cfg.methods}")
    start = time.perf_counter()
    pair = load_pair(cfg.model)
    encoder = load_encoder(cfg.metrics.encoder)
    print(f"[evaluate] models and encoder loaded in {time.perf_counter() - start:.1f} s "
          f"(|V|={pair.vocab_size}, dtype={next(pair.slm.model.parameters()).dtype})")

    folder = job_folder(output_dir=cfg.output_dir, job="evaluate") / run_key(cfg)
    store = ResultStore(folder)
    total = len(examples) * len(cfg.methods)
    with tqdm(total=total, desc="prompts", unit="prompt", file=sys.stdout) as bar:
        def progress(result: PromptResult) -> None:
            bar.set_postfix_str(f"{METHOD_LABELS[result.method]} #{result.prompt_index} "
                                f"{len(result.tokens)} tok cos={result.similarity:.3f}")
            bar.update(1)

        results = evaluate_methods(pair=pair, examples=examples, cfg=cfg, encoder=encoder, store=store,
                                   on_prompt=progress)

    calibration = run_calibration(pair=pair, prompt=examples[0].prompt, cfg=cfg)
    summaries = summarize_methods(results=results, cfg=cfg, calibration=calibration, vocab_size=pair.vocab_size)
    table = format_table(summaries)
    (folder / "summary.md").write_text(table + "\n")
    (folder / "summary.json").write_text(json.dumps(summaries, indent=2))
    any_summary = next(iter(summaries.values()))
    source = f"solo passes calibrated on {calibration.machine}" if calibration else "the records (batch 1)"
    print(f"\n[evaluate] modelled clock (one device): tau_SLM={any_summary['tau_slm_ms']:.1f} ms, "
          f"tau_LLM={any_summary['tau_llm_ms']:.1f} ms, unconfigured times from {source}; "
          f"average SNR {mean_snr_db(cfg.channel):.2f} dB; prompts decoded in batches of "
          f"{batch_size(cfg=cfg, pair=pair)}")
    print(table)
    print(f"\nuplink ({cfg.channel.model}): upload time per sent round (ms), uploads and bits per generated token:")
    print("| method | mean | median | p95 | uploads/token | bits/token |")
    print("|---|---:|---:|---:|---:|---:|")
    for method, s in summaries.items():
        if method != "llm":
            cells = [format_value(s.get(k), f) for k, f in (
                ("mean_uplink_ms", "{:.4g}"), ("median_uplink_ms", "{:.4g}"), ("p95_uplink_ms", "{:.4g}"),
                ("uploads_per_token", "{:.3f}"), ("bits_per_token", "{:.4g}"))]
            print(f"| {METHOD_LABELS[method]} | " + " | ".join(cells) + " |")
    print("\nmodelled throughput (tok/s) vs average SNR, same fading draws:")
    snr_keys = [k for k in any_summary if k.startswith("throughput_modelled_snr_")]
    print("| method | " + " | ".join(k.removeprefix("throughput_modelled_snr_") for k in snr_keys) + " |")
    for method, s in summaries.items():
        print(f"| {METHOD_LABELS[method]} | " + " | ".join(f"{s[k]:.3f}" for k in snr_keys) + " |")
    downlink = "off" if not cfg.downlink.enabled else f"on, {cfg.downlink.tx_power_dbm:g} dBm at the base station"
    print(f"\nenergy (uhlm_ray/link/energy.py; downlink {downlink}): device J per token and its parts, J per round, "
          "base-station J per verified token, 95% intervals over prompts:")
    print(energy_table(summaries))
    print(f"\n[evaluate] results in {folder}; finished in {time.perf_counter() - start:.1f} s")
    if cfg.tracking.enabled:
        experiment = experiment_name(cfg.tracking, job="evaluate")
        logged = find_logged_run(cfg.tracking, job="evaluate", key=run_key(cfg))
        if logged is not None:
            print(f"[evaluate] already logged as MLflow run {logged} in experiment {experiment!r}; not logging it "
                  "twice")
        else:
            run_id = log_to_mlflow(cfg=cfg, results=results, summaries=summaries, table=table, folder=folder)
            print(f"[evaluate] MLflow parent run {run_id} in experiment {experiment!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
