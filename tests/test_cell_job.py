"""`jobs/cell.py` as a user runs it, twice (tiny pair, a real local Ray and Serve, a real MLflow store): the rerun
finds every prompt stored, reports no wall-clock throughput for work it did not do, and logs no second run; the run's
per-device table is read back from the store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_rerun_reuses_everything_and_logs_nothing_twice(tiny_pair_dirs, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    slm, llm = tiny_pair_dirs
    cmd = [sys.executable, str(ROOT / "jobs" / "cell.py"), "model.pair=custom", f"model.slm={slm}",
           f"model.llm={llm}", "model.dtype=float32", "cell.n_devices=2", "cell.devices_per_actor=2",
           "cell.method=u_hlm", "decode.max_new_tokens=6", "data.n_prompts=2", "runtime.device_actor_num_cpus=0.5",
           "runtime.http_port=18765"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert "HTTP route http://127.0.0.1:18765/verifier/v1/health" in first.stdout
    assert "tok/s on the wall clock" in first.stdout and "MLflow run" in first.stdout

    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "no wall-clock figure: 2 of 2 prompts were decoded by an earlier run" in again.stdout
    assert "already logged as MLflow run" in again.stdout

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("uhlm-cell")
    (run,) = client.search_runs([experiment.experiment_id])
    assert "aggregate_throughput_wall" in run.data.metrics and "aggregate_throughput_modelled" in run.data.metrics
    assert {k for k in run.data.tags if not k.startswith("mlflow.")} == {"uhlm.run_key"}
    # per-device figures as a table, a row per device, not as metric steps numbered by device
    assert not any(k.startswith("device_") for k in run.data.metrics)
    mlflow.set_tracking_uri(client.tracking_uri)  # load_table finds the runs through MLflow's global store
    devices = client.load_table(experiment.experiment_id, "cell_devices.json", run_ids=[run.info.run_id])
    assert sorted(devices["device"]) == [0, 1]
    assert {"distance_m", "accuracy", "transmission_rate", "true_skip_rate", "throughput_modelled"} <= set(devices)
    assert devices["throughput_modelled"].notna().all() and (devices["distance_m"] > 0).all()
