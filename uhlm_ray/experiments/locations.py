"""Where a job's files go: one root, `output_dir`, with one folder per job under it, anchored where it outlives the job.

    <output_dir>/evaluate/<run key>/      jobs/evaluate.py: <method>.jsonl per method (resumable), summary, tables
    <output_dir>/sweeps/<space>-<digest>/ jobs/sweep.py: Tune's state, the shared results store, report/
    <output_dir>/reproduce/<run key>/     jobs/reproduce.py: reproduction.md, figures/
    <output_dir>/reproduce/shared/        jobs/reproduce.py: the results store every reproduction shares
    <output_dir>/cell/<run key>/          jobs/cell.py: per-device results and the cell summary
    <anchor>/mlruns/                      the default MLflow store (mlflow.db, artifacts/) unless tracking.tracking_uri

A relative `output_dir` (the default, "outputs") and the default store are anchored at $UHLM_RAY_HOME when set; else,
under `ray job submit`, at ~/uhlm_ray-results on the node the driver runs on (the job's working folder is a
temporary copy that Ray deletes); else at the working folder.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "UHLM_RAY_HOME"
# set by Ray's job supervisor in the environment of a submitted job's entrypoint (the driver)
RAY_JOB_DRIVER_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
JOB_HOME = "~/uhlm_ray-results"
JOB_FOLDERS = {"evaluate": "evaluate", "sweep": "sweeps", "reproduce": "reproduce", "cell": "cell"}


def anchor() -> Path:
    """The folder relative output paths and the default MLflow store are resolved against."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().resolve()
    if RAY_JOB_DRIVER_ENV in os.environ:
        return Path(JOB_HOME).expanduser()
    return Path.cwd()


def output_root(output_dir: str) -> Path:
    """`output_dir` as an absolute folder: `~` expanded, a relative path anchored (see `anchor`)."""
    path = Path(output_dir).expanduser()
    return path if path.is_absolute() else anchor() / path


def job_folder(*, output_dir: str, job: str) -> Path:
    """The folder one job's runs go under (`<output_dir>/evaluate`, `/sweeps`, `/reproduce`, `/cell`)."""
    return output_root(output_dir) / JOB_FOLDERS[job]
