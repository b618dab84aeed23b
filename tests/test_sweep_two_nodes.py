"""A sweep on a real two-node Ray cluster on one machine (tiny pair): trials on the worker node, everything in the
driver's store.

The head runs on 127.0.0.1; the worker node runs at 127.0.0.2 inside a private mount namespace (`unshare --mount`)
where the driver's output folder, its MLflow store and its scratch folder are hidden behind empty tmpfs mounts, so
the worker sees its own filesystem as a separate machine would. Trials ask for a resource only the worker offers.
Every child run, metric and records artifact must land in the driver's store, the frontier report must be
complete, and running the command again must duplicate nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
SPACE = """
name: twonode
objectives:
  - {metric: u_hlm.accuracy, mode: max}
  - {metric: u_hlm.throughput_modelled, mode: max}
search: grid
methods: [llm, hlm, u_hlm, block_hlm]
base: {data.n_prompts: 2, decode.max_new_tokens: 6}
params:
  policy.u_th: {grid: [0.2, 0.6]}
"""


def _unshare_works() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _unshare_works(), reason="needs root and `unshare --mount` (a private mount "
                                "namespace) to give the worker node a filesystem of its own")


@pytest.fixture
def two_nodes(tmp_path):
    """A head on 127.0.0.1 and a worker on 127.0.0.2 that cannot see the driver's folders."""
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)  # set by any earlier in-process mlflow.set_tracking_uri
    hidden = [tmp_path / "out", tmp_path / "mlruns", tmp_path / "scratch"]
    for folder in hidden:
        folder.mkdir()
    subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
                    "--include-dashboard=false", f"--temp-dir={temp}"], check=True, env=env, capture_output=True)
    mounts = "; ".join(f"mount -t tmpfs none {folder}" for folder in hidden)
    worker = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"{mounts}; exec {RAY} start --address=127.0.0.1:{port} --node-ip-address=127.0.0.2 --num-cpus=2 "
         f"--resources='{{\"trial_node\": 2}}' --block"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        probe = (f"import ray; ray.init(address='127.0.0.1:{port}', log_to_driver=False); "
                 "print(*[n['NodeID'] for n in ray.nodes() if n['Alive'] and n['NodeManagerAddress'] == '127.0.0.2'])")
        while time.time() < deadline:
            out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
            if out.stdout.strip():
                break
            time.sleep(1)
        else:
            pytest.fail("the worker node did not join")
        yield f"127.0.0.1:{port}", env, out.stdout.split()[-1]
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
        shutil.rmtree(temp, ignore_errors=True)


def _sweep(space: Path, tiny_pair_dirs, tmp_path: Path, address: str, env: dict) -> subprocess.CompletedProcess:
    slm, llm = tiny_pair_dirs
    cmd = [sys.executable, str(ROOT / "jobs" / "sweep.py"), str(space), "model.pair=custom", f"model.slm={slm}",
           f"model.llm={llm}", "model.dtype=float32", f"runtime.address={address}",
           "runtime.trial_resources={trial_node: 1}", f"runtime.scratch_dir={tmp_path / 'scratch'}",
           f"tracking.tracking_uri=sqlite:///{tmp_path}/mlruns/mlflow.db", f"output_dir={tmp_path}/out"]
    return subprocess.run(cmd, capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)}, cwd=tmp_path,
                          timeout=900)


def test_trials_on_the_worker_node_land_in_the_driver_store_and_resume_duplicates_nothing(two_nodes, tiny_pair_dirs,
                                                                                          tmp_path):
    from mlflow.tracking import MlflowClient

    address, env, worker_node = two_nodes
    space = tmp_path / "twonode.yaml"
    space.write_text(SPACE)
    done = _sweep(space, tiny_pair_dirs, tmp_path, address, env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("uhlm-sweep")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["uhlm.trial_node"] for c in children} == {worker_node}, "both trials ran on the worker node"
    for child in children:
        assert {"u_hlm.accuracy", "block_hlm.throughput_modelled", "hlm.transmission_rate"} <= set(child.data.metrics)
        records = {a.path for a in client.list_artifacts(child.info.run_id, "records")}
        assert records == {f"records/{m}_records.parquet" for m in ("llm", "hlm", "u_hlm", "block_hlm")}
    report = next((tmp_path / "out" / "sweeps").glob("twonode-*/report"))
    assert {p.name for p in report.iterdir()} >= {"frontier.csv", "frontier.md", "frontier_modelled.png",
                                                  "frontier_experiment.png", "risk.png", "trials.csv"}
    assert len((report / "trials.csv").read_text().splitlines()) == 1 + 2 * 4  # every (trial, method) point
    assert "Exact hybrid inference" in done.stdout

    again = _sweep(space, tiny_pair_dirs, tmp_path, address, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming 'twonode'" in again.stdout
    rerun = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_id for r in rerun) == sorted(r.info.run_id for r in runs)
