"""One output root with a folder per job, anchored where results outlive the job: $UHLM_RAY_HOME, a stable folder
under `ray job submit` (whose working folder is a temporary copy), else the working folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from uhlm_ray.config import TrackingConfig
from uhlm_ray.experiments.locations import HOME_ENV, RAY_JOB_DRIVER_ENV, job_folder, output_root
from uhlm_ray.experiments.tracking import resolve_tracking_uri


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in (HOME_ENV, RAY_JOB_DRIVER_ENV, "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_relative_roots_follow_the_working_folder_then_the_home_then_the_job(clean_env, tmp_path):
    assert job_folder(output_dir="outputs", job="sweep") == tmp_path / "outputs" / "sweeps"
    assert resolve_tracking_uri(TrackingConfig()) == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    clean_env.setenv(RAY_JOB_DRIVER_ENV, "{}")  # what Ray's job supervisor sets for a submitted entrypoint
    assert output_root("outputs") == tmp_path / "home" / "uhlm_ray-results" / "outputs"
    assert resolve_tracking_uri(TrackingConfig()).endswith("/home/uhlm_ray-results/mlruns/mlflow.db")
    clean_env.setenv(HOME_ENV, str(tmp_path / "chosen"))  # the user's choice beats the job's default
    assert job_folder(output_dir="outputs", job="evaluate") == tmp_path / "chosen" / "outputs" / "evaluate"


def test_absolute_and_home_paths_are_taken_as_given(clean_env, tmp_path):
    clean_env.setenv(RAY_JOB_DRIVER_ENV, "{}")
    assert job_folder(output_dir=str(tmp_path / "x"), job="reproduce") == tmp_path / "x" / "reproduce"
    assert output_root("~/runs") == Path(tmp_path / "home" / "runs")
    with pytest.raises(KeyError):
        job_folder(output_dir="outputs", job="train")
