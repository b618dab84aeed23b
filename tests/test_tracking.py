"""What the jobs write to MLflow, read back from a real sqlite store without Ray: params never cut, our tags under
one prefix, a sweep's child run logged once with its records folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uhlm_ray.experiments.tracking import LONG_PARAMS_ARTIFACT, MAX_PARAM_LENGTH, log_params, tag


@pytest.fixture
def client(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    client.experiment_id = client.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    return client


def _artifact_json(client, run_id: str, path: str, dst: Path) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, path, str(dst))).read_text())


def test_our_limit_is_mlflows_and_a_long_param_goes_whole_to_an_artifact(client, tmp_path):
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    assert MAX_PARAM_LENGTH == MAX_PARAM_VAL_LENGTH
    run_id = client.create_run(client.experiment_id).info.run_id
    long = "x" * (MAX_PARAM_LENGTH + 1)
    params = {f"p{i}": str(i) for i in range(150)}  # more than one of MLflow's batches
    log_params(client, run_id, {**params, "long": long, "edge": "y" * MAX_PARAM_LENGTH})
    logged = client.get_run(run_id).data.params
    assert {k: logged[k] for k in params} == params and logged["edge"] == "y" * MAX_PARAM_LENGTH
    assert logged["long"] == f"({len(long)} characters, in {LONG_PARAMS_ARTIFACT})"
    assert _artifact_json(client, run_id, LONG_PARAMS_ARTIFACT, tmp_path / "dl") == {"long": long}


def test_a_trial_run_carries_prefixed_tags_its_whole_config_and_is_logged_once(client, tmp_path):
    from actors.sweep_mlflow import TrialRuns
    from uhlm_ray.experiments.sweep import Objective, SearchSpace

    space = SearchSpace(name="t", objectives=[Objective(metric="u_hlm.accuracy", mode="max")],
                        params={"policy.u_th": {"grid": [0.2]}}, methods=["llm", "u_hlm"])
    parent = client.create_run(client.experiment_id, tags={tag("sweep"): "t"}).info.run_id
    experiment = "e" * (MAX_PARAM_LENGTH + 10)  # a config value over MLflow's limit
    runs = TrialRuns(client=client, experiment_id=client.experiment_id, parent_id=parent, space=space,
                     overrides=[f"tracking.experiment={experiment}"], folder=tmp_path / "sweep")
    records = tmp_path / "sweep" / "artifacts" / "k1"
    records.mkdir(parents=True)
    (records / "u_hlm_records.parquet").write_bytes(b"PAR1")
    result = {"trial_key": "k1", "trial_started": 1.0, "trial_ended": 2.0, "trial_node": "n1", "u_hlm.accuracy": 0.5}

    run_id = runs.log(params={"policy.u_th": 0.2}, result=result)
    assert runs.log(params={"policy.u_th": 0.2}, result=result) == run_id  # found again by its tags
    run = client.get_run(run_id)
    assert {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")} == {
        "uhlm.sweep_run_id": parent, "uhlm.trial_key": "k1", "uhlm.sweep": "t", "uhlm.trial_node": "n1"}
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["mlflow.runName"] == "u_th=0.2"
    assert run.data.params["trial.policy.u_th"] == "0.2" and run.data.metrics == {"u_hlm.accuracy": 0.5}
    assert _artifact_json(client, run_id, LONG_PARAMS_ARTIFACT, tmp_path / "dl") == {
        "tracking.experiment": experiment}
    assert [a.path for a in client.list_artifacts(run_id, "records")] == ["records/u_hlm_records.parquet"]

    # a run logged before the tags had their prefix is found too, not logged twice
    old = client.create_run(client.experiment_id, tags={"sweep_run_id": parent, "trial_key": "k0"}).info.run_id
    client.set_terminated(old)
    assert runs.log(params={"policy.u_th": 0.2}, result={**result, "trial_key": "k0"}) == old

    report = tmp_path / "report"
    report.mkdir()
    (report / "frontier.md").write_text("| x |\n")
    runs.log_report(report)
    runs.log_sweep_metrics({"num_trials": 2, "shared_work_ratio": float("nan")})
    assert [a.path for a in client.list_artifacts(parent, "frontier")] == ["frontier/frontier.md"]
    assert client.get_run(parent).data.metrics == {"num_trials": 2.0}
