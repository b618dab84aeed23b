"""A cell: N devices with their own SLM sessions and channels, one batched LLM verifier on Ray Serve.

    python jobs/cell.py                                   # local Ray, embedded pair, 8 devices, U-HLM
    python jobs/cell.py cell.n_devices=16 cell.method=hlm runtime.max_batch_size=16
    python jobs/cell.py cell.scheduler=multi_spin cell.verify_deadline_ms=20   # reuses the decoded prompts
    python jobs/cell.py cell.method=block_hlm block.stop=fixed block.payload=ids decode.sampling=coupled \
        cell.draft_lengths=multi_spin cell.scheduler=multi_spin     # each device's block length planned
    ray job submit --address http://127.0.0.1:8265 --runtime-env runtime_env.yaml -- python jobs/cell.py
    ray job submit ... -- python jobs/cell.py --config jobs/configs/cluster.yaml   # on `ray up cluster.yaml`

Every setting is an omegaconf override (sections `cell` and `runtime` for this job). Each prompt's result is written
the moment it ends (an interrupted run resumes); the run is logged to MLflow with a per-device table
(`cell_devices.json`, one row per device) and the cell's goodput, per-device throughput and Jain's index as metrics.
The scheduler and the verifier's deadline batching only price the stored rounds (uhlm_ray/cell.py): a rerun with
another `cell.scheduler`, `cell.pf_window`, `cell.verify_deadline_ms` or `cell.verify_max_batch` decodes nothing
again and is logged as a run of its own. `cell.draft_lengths=multi_spin` plans each device's block length before
decoding (uhlm_ray/draft_control.py); the plan is printed, and each device's row carries its planned length.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from ray import serve  # noqa: E402
from tqdm import tqdm  # noqa: E402

from actors.cell_runner import run_cell  # noqa: E402
from actors.connect import connect  # noqa: E402
from actors.verifier_deployment import APP_NAME, ServeVerifierClient, start_verifier, verifier_url  # noqa: E402
from uhlm_ray.cell import device_channel, device_distances, scheduler_name, summarize_cell  # noqa: E402
from uhlm_ray.cli import job_inputs, refusals  # noqa: E402
from uhlm_ray.config import CellConfig, EvaluateConfig  # noqa: E402
from uhlm_ray.draft_control import DraftPlan, cell_draft_plan  # noqa: E402
from uhlm_ray.experiments.evaluate import DECODE_SECTIONS, ResultStore, format_value, run_clock, run_key  # noqa: E402
from uhlm_ray.experiments.locations import job_folder  # noqa: E402
from uhlm_ray.experiments.tracking import (  # noqa: E402
    RUN_KEY_TAG,
    experiment_name,
    find_logged_run,
    finite_metrics,
    flat_params,
    log_params,
    log_prompt_results,
    setup_experiment,
)
from uhlm_ray.measures.similarity import load_encoder  # noqa: E402
from uhlm_ray.records import PromptResult  # noqa: E402
from uhlm_ray.snr import mean_snr_db

DEVICE_COLUMNS = [
    ("distance_m", "distance m", "{:.0f}"), ("mean_snr_db", "SNR dB", "{:.1f}"), ("accuracy", "cos sim", "{:.4f}"),
    ("transmission_rate", "TR", "{:.2%}"), ("true_skip_rate", "TSR", "{:.2%}"),
    ("acceptance_rate", "accept", "{:.2%}"), ("throughput_modelled", "device tok/s model", "{:.3f}"),
    ("mean_band_share", "band share", "{:.2f}"), ("mean_uplink_ms", "uplink ms", "{:.0f}"),
    ("median_uplink_ms", "median", "{:.0f}"), ("planned_drafts", "planned n", "{:.0f}"),
    ("num_tokens", "tokens", "{:.0f}"),
]


# cell settings that only price the decoded rounds (uhlm_ray/cell.py): not part of the results folder's key
PRICING_FIELDS = ("scheduler", "bandwidth_sharing", "pf_window", "verify_deadline_ms", "verify_max_batch")


def cell_keys(cfg: EvaluateConfig) -> tuple[str, str]:
    """(the decoded prompts' key: the results folder; the run's key: its MLflow run). They differ only in the
    scheduler's settings, so another scheduler reuses the decoded prompts and is logged as another run."""
    defaults = CellConfig()
    decoding = dataclasses.replace(cfg, cell=dataclasses.replace(
        cfg.cell, **{name: getattr(defaults, name) for name in PRICING_FIELDS}))
    sections = (*DECODE_SECTIONS, "cell")
    return run_key(decoding, sections=sections), run_key(cfg, sections=sections)


def format_cell_table(summary: dict) -> str:
    header = "| device | " + " | ".join(label for _, label, _ in DEVICE_COLUMNS) + " |"
    lines = [header, "|---|" + "---:|" * len(DEVICE_COLUMNS)]
    rows = [(str(d), s) for d, s in sorted(summary["devices"].items())] + [("average device", summary["cell"])]
    for name, s in rows:
        cells = [format_value(s.get(key), fmt) for key, _, fmt in DEVICE_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_plan(plan: DraftPlan) -> str:
    lengths = ", ".join(f"{d}: {n}" for d, n in sorted(plan.drafts.items()))
    return (f"[cell] Multi-SPIN draft plan: block lengths {{{lengths}}}; planned goodput {plan.goodput:.2f} tok/s "
            f"(slot {plan.slot_s * 1e3:.0f} ms) against {plan.homogeneous_goodput:.2f} at the best common length "
            f"n = {plan.homogeneous_drafts} and {plan.configured_goodput:.2f} at block.fixed_drafts")


def add_plan(*, summary: dict, plan: DraftPlan) -> None:
    """The plan beside the measured figures: each device's planned length and share, the cell's planned goodputs."""
    for device, row in summary["devices"].items():
        row["planned_drafts"] = plan.drafts[int(device)]
        row["planned_share"] = plan.shares[int(device)]
    summary["cell"].update(plan_goodput=plan.goodput, plan_homogeneous_goodput=plan.homogeneous_goodput,
                           plan_homogeneous_drafts=plan.homogeneous_drafts,
                           plan_configured_goodput=plan.configured_goodput, plan_slot_s=plan.slot_s)


def device_table(summary: dict) -> dict[str, list]:
    """The per-device columns of the cell table, a row per device (None where a metric does not apply)."""
    devices = sorted(summary["devices"].items(), key=lambda item: int(item[0]))
    return {"device": [int(d) for d, _ in devices],
            **{key: [_finite(s.get(key)) for _, s in devices] for key, _, _ in DEVICE_COLUMNS}}


def _finite(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(float(value)) else None


def log_to_mlflow(*, cfg: EvaluateConfig, summary: dict, table: str, folder: Path, results: list[PromptResult],
                  key: str) -> str:
    import mlflow

    experiment_id = setup_experiment(cfg.tracking, job="cell")
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"cell-{cfg.cell.method}-{key}",
                          tags={RUN_KEY_TAG: key}) as run:
        log_params(mlflow.MlflowClient(), run.info.run_id, flat_params(cfg))
        mlflow.log_metrics(finite_metrics(summary["cell"]))
        # devices are not steps: one row per device, compared in the UI's artifact and evaluation views
        mlflow.log_table(device_table(summary), "cell_devices.json")
        mlflow.log_text(table, "cell_summary.md")
        mlflow.log_dict(summary, "cell_summary.json")
        log_prompt_results(results=results, folder=folder, name=cfg.cell.method)
        return run.info.run_id


def main(argv: list[str]) -> int:
    cfg, examples = job_inputs(argv, description=__doc__)
    cell = cfg.cell
    distances = device_distances(cell)
    decode_key, key = cell_keys(cfg)
    folder = job_folder(output_dir=cfg.output_dir, job="cell") / decode_key
    print(f"[cell] {cell.n_devices} devices x {cell.prompts_per_device} prompts, method={cell.method}, "
          f"{cell.devices_per_actor} devices per actor; distances {min(distances):.0f}-{max(distances):.0f} m "
          f"(average SNR {mean_snr_db(device_channel(channel=cfg.channel, distance_m=min(distances))):.1f} to "
          f"{mean_snr_db(device_channel(channel=cfg.channel, distance_m=max(distances))):.1f} dB); "
          f"scheduler: {scheduler_name(cell)}; verification "
          + ("priced alone" if cell.verify_deadline_ms is None else
             f"batched per slot, deadline {cell.verify_deadline_ms:g} ms, at most {cell.verify_max_batch}"))
    start = time.perf_counter()
    with refusals():
        connect(cfg.runtime, job="cell")
        start_verifier(cfg)
    info = ServeVerifierClient().info()
    print(f"[cell] verifier up in {time.perf_counter() - start:.1f} s on {info['device']} "
          f"(node {info['node_id'][:12]}),"
          f" |V|={info['vocab_size']}, max batch {info['max_batch_size']}; HTTP route {verifier_url()}/v1/health")
    plan = cell_draft_plan(cfg=cfg, vocab_size=info["vocab_size"])
    if plan is not None:
        print(format_plan(plan))
    encoder = load_encoder(cfg.metrics.encoder)
    store = ResultStore(folder)
    stored = set(store.load(cell.method)) if cfg.resume else set()  # prompts a previous run already finished
    decode_start = time.perf_counter()
    with tqdm(total=cell.n_devices * cell.prompts_per_device, desc="prompts", unit="prompt", file=sys.stdout) as bar:
        def progress(result: PromptResult) -> None:
            bar.set_postfix_str(f"device {result.device_index} prompt {result.prompt_index} {len(result.tokens)} tok")
            bar.update(1)

        results = run_cell(cfg=cfg, examples=examples, store=store, encoder=encoder, run=f"cell-{key}",
                           on_result=progress, drafts=plan.drafts if plan is not None else None)
    decode_s = time.perf_counter() - decode_start
    serve.delete(APP_NAME)  # frees the verifier (and its GPU) on a shared cluster

    clock = run_clock(results={cell.method: results}, cfg=cfg)
    summary = summarize_cell(results=results, distances_m=distances, channel=cfg.channel, clock=clock,
                             seed=cfg.decode.seed, cell=cell)
    # a wall-clock figure only when this run decoded every prompt: resumed ones took no time now
    resumed = sum((res.device_index, res.prompt_index) in stored for res in results)
    summary["cell"]["decode_wall_s"] = decode_s
    summary["cell"]["resumed_prompts"] = resumed
    summary["cell"]["aggregate_throughput_wall"] = summary["cell"]["num_tokens"] / decode_s if not resumed \
        else math.nan
    if plan is not None:
        add_plan(summary=summary, plan=plan)
    batch_sizes = [r.verify_batch_size for res in results for r in res.records if r.sent]
    summary["cell"]["mean_verify_batch_size"] = sum(batch_sizes) / len(batch_sizes) if batch_sizes else math.nan
    table = format_cell_table(summary)
    name = "cell_summary" if key == decode_key else f"cell_summary-{key}"  # another scheduler's, same prompts
    (folder / f"{name}.md").write_text(table + "\n")
    (folder / f"{name}.json").write_text(json.dumps(summary, indent=2, default=str))
    c = summary["cell"]
    print(f"\n[cell] modelled clock tau_SLM={c['tau_slm_ms']:.1f} ms tau_LLM={c['tau_llm_ms']:.1f} ms (per device "
          f"batch); uplink shared by up to {c['max_transmitters_per_slot']} devices per slot ({c['scheduler']})")
    print(table)
    wall = (f"{c['aggregate_throughput_wall']:.2f} tok/s on the wall clock ({c['num_tokens']} tokens in "
            f"{decode_s:.1f} s)" if math.isfinite(c["aggregate_throughput_wall"]) else
            f"no wall-clock figure: {c['resumed_prompts']} of {len(results)} prompts were decoded by an earlier run "
            f"(resume=false decodes them again)")
    print(f"\n[cell] aggregate cell throughput (all devices together): {c['aggregate_throughput_modelled']:.3f} "
          f"tok/s on the modelled clock, {wall}; an average device alone makes {c['throughput_modelled']:.3f} "
          f"tok/s modelled; mean verifier batch {c['mean_verify_batch_size']:.2f}")
    print(f"[cell] goodput {c['goodput']:.3f} verified tok/s of the cell ({c['goodput_tokens']} verified tokens in "
          f"{c['cell_modelled_s']:.2f} s of slots), mean device throughput {c['mean_device_throughput_modelled']:.3f} "
          f"tok/s, Jain's fairness index {c['jain_index']:.3f}")
    print(f"[cell] results in {folder}")
    if cfg.tracking.enabled:
        experiment = experiment_name(cfg.tracking, job="cell")
        logged = find_logged_run(cfg.tracking, job="cell", key=key)
        if logged is not None:
            print(f"[cell] already logged as MLflow run {logged} in experiment {experiment!r}; not logging it twice")
        else:
            run_id = log_to_mlflow(cfg=cfg, summary=summary, table=table, folder=folder, results=results, key=key)
            print(f"[cell] MLflow run {run_id} in experiment {experiment!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
