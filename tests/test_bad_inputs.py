"""Every mistake knowable before work starts is refused before any model loads or Tune starts: one line on stderr,
exit status 2, the field or file named (tests/bad_inputs.py holds the catalogue). A fault found later ends the
sweep with its cause in the last lines and the parent run FAILED, never RUNNING.

The catalogue runs in process (each job's `main`, as its command line would call it) so that 90 cases take seconds;
a few run as real commands to show what a user sees, with the time to the refusal including the imports.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bad_inputs import CASES, fill, write_fixtures

ROOT = Path(__file__).resolve().parents[1]
IN_PROCESS_LIMIT_S = 30.0  # no weights load, no Tune: the slowest refusal reads two tokenizers or starts Ray
COMMAND_LIMIT_S = 30.0  # with the imports of ray, torch and transformers


def _job(name: str):
    module = sys.modules.get(f"job_{name}")
    if module is None:
        spec = importlib.util.spec_from_file_location(f"job_{name}", ROOT / "jobs" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"job_{name}"] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def values(tmp_path_factory, tiny_pair_dirs) -> dict[str, str]:
    slm, llm = tiny_pair_dirs
    return write_fixtures(tmp_path_factory.mktemp("bad"), tiny_slm=slm, tiny_llm=llm)


def test_the_catalogue_is_large_and_covers_every_job():
    assert len(CASES) >= 60
    assert {job for job, _, _ in CASES} == {"evaluate", "reproduce", "cell", "sweep"}


@pytest.mark.parametrize(("job", "argv", "must"), CASES,
                         ids=[f"{job}:{' '.join(argv)[:60]}" for job, argv, _ in CASES])
def test_refused_before_work(job, argv, must, values, capsys, tmp_path, monkeypatch):
    import ray

    monkeypatch.chdir(tmp_path)  # nothing a refused run might write lands in the project
    start = time.perf_counter()

    def too_late(*_):  # an input that is not refused would otherwise run a whole job here
        raise TimeoutError(f"not refused within {IN_PROCESS_LIMIT_S:.0f} s")

    previous = signal.signal(signal.SIGALRM, too_late)
    signal.alarm(int(IN_PROCESS_LIMIT_S) + 1)
    try:
        with pytest.raises(SystemExit) as exit_info:
            _job(job).main(fill(argv, values))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        if ray.is_initialized():  # the placement check needs a cluster
            ray.shutdown()
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2, err[-2000:]
    assert len(errors) == 1, err[-2000:]
    assert must in errors[0], errors[0]
    # no traceback of the job's own; Ray's loggers may still report writing to an earlier test's closed capture
    assert err.count("Traceback") == err.count("--- Logging error ---"), err[-2000:]
    assert elapsed < IN_PROCESS_LIMIT_S, f"refused only after {elapsed:.1f} s"
    assert not (tmp_path / "mlruns").exists(), "a refused run must not create an MLflow store or run"


@pytest.mark.parametrize(("script", "argv", "must"), [
    ("sweep.py", ["paper_grid", "data.path=/nonexistent/data"], "data.path"),
    ("evaluate.py", ["channel.mean_snr_db=nan"], "channel.mean_snr_db"),
    ("cell.py", ["runtime.address=127.0.0.1:1", "model.pair=custom", "model.slm={tiny_slm}",
                 "model.llm={tiny_llm}"], "runtime.address"),
])
def test_a_real_command_refuses_in_one_line(script, argv, must, values, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "jobs" / script), *fill(argv, values)], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=120)
    elapsed = time.perf_counter() - start
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and must in lines[-1], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert elapsed < COMMAND_LIMIT_S, f"refused only after {elapsed:.1f} s"


def test_a_fault_found_during_the_sweep_names_its_cause_and_fails_the_parent_run(tiny_pair_dirs, tmp_path):
    """Weights that pass every file check but cannot be read: the trial fails inside Tune."""
    from mlflow.tracking import MlflowClient

    slm, llm = tiny_pair_dirs
    broken = tmp_path / "broken_llm"
    shutil.copytree(llm, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # a truncated download
    space = tmp_path / "one.yaml"
    space.write_text("name: one\nobjectives:\n  - {metric: hlm.accuracy, mode: max}\nmethods: [llm, hlm]\n"
                     "base: {data.n_prompts: 1, decode.max_new_tokens: 4}\nparams:\n  policy.u_th: {grid: [0.3]}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(ROOT / "jobs" / "sweep.py"), str(space), "model.pair=custom",
                           f"model.slm={slm}", f"model.llm={broken}", "model.dtype=float32"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    last = [line for line in done.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("[sweep] trial u_th=0.3 failed:") and "safetensors" in last.lower() + "", last
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("uhlm-sweep")
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    (parent,) = client.search_runs([experiment.experiment_id])
    assert parent.info.status == "FAILED"
    assert "frontier" in parent.data.tags["mlflow.note.content"]
