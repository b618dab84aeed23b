"""The Ray Tune trainable of a sweep: one trial = one real decoding run of every method, logged to MLflow.

Each trial logs to the sweep's own tracking URI (passed in, never inherited from the environment of the worker),
as a child of the sweep's parent run (MLflow's `mlflow.parentRunId` tag), with the trial's parameters, every
method's metrics (`<method>.<metric>`), and its per-round records as Parquet. A trial restarted by Tune's restore
finds its child run by the `trial_key` tag and its decoded prompts in the shared store, so nothing is logged or
decoded twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from functools import lru_cache
from pathlib import Path

from ray import tune

from uhlm_ray.config import ModelConfig
from uhlm_ray.datasets import load_examples
from uhlm_ray.models import load_pair
from uhlm_ray.models.prefix_cache import PrefixCache, prefix_cache
from uhlm_ray.similarity import load_encoder
from uhlm_ray.sweep import Objective, SearchSpace, evaluate_trial, trial_config
from uhlm_ray.tracking import finite_metrics, flat_params, write_records_parquet

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@lru_cache(maxsize=2)
def _pair(model_json: str):
    """Models stay loaded in a worker process across the trials it runs."""
    return load_pair(ModelConfig(**json.loads(model_json)))


@lru_cache(maxsize=2)
def _encoder(name: str):
    return load_encoder(name)


_PREFIXES: dict[str, PrefixCache | None] = {}  # per model, kept across the trials a worker process runs


def trial_key(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_trial(config: dict, sweep: dict) -> None:
    """Tune calls this with the trial's parameters (dotted config keys) and the sweep's constants."""
    import mlflow
    from mlflow.tracking import MlflowClient

    params = dict(config)
    space = SearchSpace(**{**sweep["space"], "objectives": [Objective(**o) for o in sweep["space"]["objectives"]]})
    cfg = trial_config(base_overrides=sweep["overrides"], space=space, params=params)
    model_key = json.dumps(dataclasses.asdict(cfg.model), sort_keys=True)
    pair = _pair(model_key)
    encoder = _encoder(cfg.metrics.encoder)
    shared_dir = Path(sweep["shared_dir"])
    if model_key not in _PREFIXES:  # forward passes shared with the sweep's other trials, in any worker process
        _PREFIXES[model_key] = prefix_cache(cfg.runtime, directory=shared_dir / "prefixes")
    prefixes = _PREFIXES[model_key]
    before = (prefixes.misses, prefixes.hits) if prefixes is not None else (0, 0)
    outcome = evaluate_trial(pair=pair, examples=load_examples(cfg.data), cfg=cfg, encoder=encoder,
                             shared_dir=shared_dir, prefixes=prefixes)

    metrics = {f"{m}.{k}": v for m, s in outcome.summaries.items() for k, v in s.items()}
    metrics = finite_metrics(metrics)
    metrics["decoded_prompts"] = float(outcome.decoded_prompts)
    metrics["reused_prompts"] = float(outcome.reused_prompts)
    if prefixes is not None:  # forward passes this trial computed, and those it found computed by another trial
        metrics["passes_computed"] = float(prefixes.misses - before[0])
        metrics["passes_replayed"] = float(prefixes.hits - before[1])

    client = MlflowClient(tracking_uri=sweep["tracking_uri"])
    key = trial_key(params)
    existing = client.search_runs(
        [sweep["experiment_id"]],
        filter_string=f"tags.sweep_run_id = '{sweep['parent_run_id']}' and tags.trial_key = '{key}'",
    )
    if existing and existing[0].info.status == "FINISHED":
        # Tune reran a trial whose report the interruption lost: its run is complete, log nothing twice
        tune.report({**metrics, "mlflow_run_id": existing[0].info.run_id, "trial_key": key})
        return
    if existing:
        run_id = existing[0].info.run_id  # a trial interrupted while logging: complete its run, add none
    else:
        run = client.create_run(sweep["experiment_id"], run_name=f"trial-{key}", tags={
            "mlflow.parentRunId": sweep["parent_run_id"], "sweep_run_id": sweep["parent_run_id"],
            "trial_key": key, "sweep": space.name})
        run_id = run.info.run_id
    # params are logged again on a completed run (MLflow accepts a param re-logged with its value)
    trial_params = {**flat_params(cfg), **{f"trial.{k}": str(v) for k, v in params.items()}}
    items = [mlflow.entities.Param(k, str(v)) for k, v in trial_params.items()]
    for i in range(0, len(items), 100):  # MLflow's limit per batch
        client.log_batch(run_id, params=items[i:i + 100])
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, now, 0) for k, v in metrics.items()])
    with tempfile.TemporaryDirectory() as tmp:
        for method, results in outcome.results.items():
            path = write_records_parquet(results=results, path=Path(tmp) / f"{method}_records.parquet")
            client.log_artifact(run_id, str(path), "records")
    client.set_terminated(run_id)
    tune.report({**metrics, "mlflow_run_id": run_id, "trial_key": key})
