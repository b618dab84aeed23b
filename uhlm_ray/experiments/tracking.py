"""MLflow helpers: the default local store, experiments with artifacts beside it, flat params from a config, tags.

MLflow 3 no longer accepts a plain folder as the tracking store, so the default is a sqlite file,
`./mlruns/mlflow.db`, with run artifacts in `./mlruns/artifacts/` next to it. An explicit `tracking.tracking_uri`
wins; otherwise MLFLOW_TRACKING_URI replaces the default (MLflow itself exports that variable to child processes
once any code in the process has called `mlflow.set_tracking_uri`, so it must not beat what the user typed).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from omegaconf import OmegaConf

from uhlm_ray.config import TrackingConfig
from uhlm_ray.experiments.locations import anchor

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# MLflow 3 opens an experiment without this tag in its GenAI (traces) view; ours are classic runs with metrics
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CLASSIC_RUNS_VIEW = "custom_model_development"
# our own run tags share one prefix, apart from MLflow's `mlflow.*` ones
TAG_PREFIX = "uhlm."
# the hash of the settings a run's results depend on: a rerun that reuses them all is not logged again
RUN_KEY_TAG = f"{TAG_PREFIX}run_key"
# MLflow's limit on a param value (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH); MLflow cuts longer ones itself
MAX_PARAM_LENGTH = 6000
LONG_PARAMS_ARTIFACT = "params/long_params.json"


def tag(name: str) -> str:
    """One of our run tags by its short name (`sweep` -> `uhlm.sweep`)."""
    return TAG_PREFIX + name


def default_store_dir() -> Path:
    return anchor() / "mlruns"  # beside the outputs: $UHLM_RAY_HOME, ~/uhlm_ray-results under a Ray job, or here


def resolve_tracking_uri(cfg: TrackingConfig) -> str:
    if cfg.tracking_uri:
        return cfg.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{default_store_dir() / 'mlflow.db'}"


def artifact_location(tracking_uri: str) -> str | None:
    """For a sqlite store, artifacts go in an `artifacts/` folder beside the database file."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///") :]).parent / "artifacts").resolve().as_uri()
    return None


def experiment_name(cfg: TrackingConfig, *, job: str) -> str:
    """`tracking.experiment`, or the job's own experiment: each job keeps its runs apart by default."""
    return cfg.experiment or f"uhlm-{job}"


def setup_experiment(cfg: TrackingConfig, *, job: str) -> str:
    """Point MLflow at the store and return the experiment id, creating the experiment if needed."""
    import mlflow

    uri = resolve_tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    name = experiment_name(cfg, job=job)
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        if existing.tags.get(EXPERIMENT_KIND_TAG) is None:
            mlflow.MlflowClient().set_experiment_tag(existing.experiment_id, EXPERIMENT_KIND_TAG, CLASSIC_RUNS_VIEW)
        return existing.experiment_id
    return mlflow.create_experiment(name, artifact_location=artifact_location(uri),
                                    tags={EXPERIMENT_KIND_TAG: CLASSIC_RUNS_VIEW})


def find_logged_run(cfg: TrackingConfig, *, job: str, key: str) -> str | None:
    """The finished run a job already logged for this run key (its results reused, not decoded again), if any."""
    import mlflow

    mlflow.set_tracking_uri(resolve_tracking_uri(cfg))
    experiment = mlflow.get_experiment_by_name(experiment_name(cfg, job=job))
    if experiment is None:
        return None
    runs = mlflow.MlflowClient().search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
        max_results=1)
    return runs[0].info.run_id if runs else None


def flat_params(cfg: object) -> dict[str, str]:
    """A structured config as dotted MLflow params (`policy.u_th` -> "0.431"), uncut: log them with `log_params`."""
    container = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)

    def walk(prefix: str, node: object, out: dict[str, str]) -> dict[str, str]:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value, out)
        else:
            out[prefix] = str(node)
        return out

    return walk("", container, {})


def log_params(client, run_id: str, params: dict[str, str]) -> None:
    """Params in one batch (the client splits it into MLflow's chunks). A value over MLflow's limit is not cut: it
    goes whole into `params/long_params.json`, and its param says so."""
    from mlflow.entities import Param

    long = {key: str(value) for key, value in params.items() if len(str(value)) > MAX_PARAM_LENGTH}
    client.log_batch(run_id, params=[
        Param(key, f"({len(long[key])} characters, in {LONG_PARAMS_ARTIFACT})" if key in long else str(value))
        for key, value in params.items()])
    if long:
        client.log_dict(run_id, long, LONG_PARAMS_ARTIFACT)


def finite_metrics(values: dict) -> dict[str, float]:
    """The numeric, finite entries: MLflow rejects NaN and has no use for metrics that do not apply."""
    out = {}
    for key, value in values.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value)):
            out[key] = float(value)
    return out


def write_records_parquet(*, results: list, path: Path) -> Path:
    """Every round of these PromptResults as one Parquet table (a row per RoundRecord, plus its device)."""
    import pandas as pd

    pd.DataFrame([{**r.to_dict(), "device_index": res.device_index}
                  for res in results for r in res.records]).to_parquet(path)
    return path


def log_prompt_results(*, results: list, folder: Path, name: str) -> None:
    """Into the active run: per-round records as Parquet (records/) and the stored responses (responses/)."""
    import mlflow

    records_path = write_records_parquet(results=results, path=folder / f"{name}_records.parquet")
    mlflow.log_artifact(str(records_path), "records")
    mlflow.log_artifact(str(folder / f"{name}.jsonl"), "responses")
