"""A small real sweep (tiny pair, two trials) through Ray Tune into a temporary MLflow store, read back directly and
through a real MLflow server on loopback; then the same command again resumes without duplicating anything."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.ports import free_port
from uhlm_ray.experiments.sweep import load_space, load_space_and_configs, pareto_front
from uhlm_ray.validation import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SPACE = """
name: tiny
objectives:
  - {metric: u_hlm.accuracy, mode: max}
  - {metric: u_hlm.throughput_modelled, mode: max}
search: grid
methods: [llm, hlm, u_hlm, rand_hlm]
base: {data.n_prompts: 2, decode.max_new_tokens: 6}
params:
  policy.u_th: {grid: [0.2, 0.6]}
"""


def test_pareto_front_by_hand():
    points = [{"x": 1, "y": 5}, {"x": 2, "y": 4}, {"x": 2, "y": 3}, {"x": 3, "y": 1}, {"x": 0.5, "y": 5}]
    assert [(p["x"], p["y"]) for p in pareto_front(points, x="x", y="y")] == [(1, 5), (2, 4), (3, 1)]


def test_space_files_are_checked(tmp_path):
    spaces = sorted((ROOT / "tune_spaces").glob("*.yaml"))
    assert len(spaces) >= 9
    for path in spaces:
        load_space(path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPACE.replace("policy.u_th", "policy.u_thresh"))
    with pytest.raises(ConfigError, match="u_thresh"):
        load_space(bad)
    bad.write_text(SPACE.replace("mode: max}", "mode: up}", 1))
    with pytest.raises(ConfigError, match=r"objectives\[0\].mode"):
        load_space(bad)


def test_a_null_grid_value_reaches_the_trial_as_none():
    """YAML's null in a grid (the whole head in head_vocab.yaml) is None in the trial's config, not the string."""
    _, configs = load_space_and_configs(ROOT / "tune_spaces" / "head_vocab.yaml")
    assert [c.model.slm_head_vocab for c in configs] == [None, 65536, 32768, 16384, 8192]


def test_the_trial_table_orders_numbers_by_value_and_null_first():
    from uhlm_ray.experiments.sweep_report import trial_table

    space = load_space(ROOT / "tune_spaces" / "head_vocab.yaml")
    trials = [{"params": {"model.slm_head_vocab": n}, "trial_started": 0.0, "trial_ended": 1.0}
              for n in (16384, None, 8192, 65536)]
    rows = trial_table(trials=trials, space=space).splitlines()[2:]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == ["None", "8192", "16384", "65536"]


def _sweep_command(space: Path, tiny_pair_dirs, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    slm, llm = tiny_pair_dirs
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, str(ROOT / "jobs" / "sweep.py"), str(space), "model.pair=custom", f"model.slm={slm}",
           f"model.llm={llm}", "model.dtype=float32", f"tracking.tracking_uri=sqlite:///{tmp_path}/mlruns/mlflow.db",
           f"output_dir={tmp_path}/out"]
    return cmd, env


def _run_sweep(space: Path, tiny_pair_dirs, tmp_path: Path) -> subprocess.CompletedProcess:
    cmd, env = _sweep_command(space, tiny_pair_dirs, tmp_path)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)


def test_sweep_logs_parent_and_trials_and_resumes(tiny_pair_dirs, tmp_path):
    from mlflow.tracking import MlflowClient

    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    first = _run_sweep(space, tiny_pair_dirs, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Pareto frontier" in first.stdout

    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("uhlm-sweep")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.data.params["trial.policy.u_th"] for c in children) == ["0.2", "0.6"]
    # our tags under one prefix, MLflow's own (parent, name, note) as they were
    assert {k for k in parent.data.tags if not k.startswith("mlflow.")} == {"uhlm.sweep", "uhlm.sweep_dir"}
    assert parent.data.tags["uhlm.sweep"] == "tiny" and "mlflow.note.content" in parent.data.tags
    for child in children:
        assert {k for k in child.data.tags if not k.startswith("mlflow.")} == {
            "uhlm.sweep", "uhlm.sweep_run_id", "uhlm.trial_key", "uhlm.trial_node"}
        assert child.data.tags["uhlm.sweep_run_id"] == parent.info.run_id
    # the space whole as an artifact (no `space` param to cut), beside the file it was read from
    assert "space" not in parent.data.params and parent.data.params["overrides"].startswith("model.pair=custom")
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "space")} == {"space/space.json",
                                                                                   "space/tiny.yaml"}
    local = client.download_artifacts(parent.info.run_id, "space/space.json", str(tmp_path))
    logged = json.loads(Path(local).read_text())
    assert logged == json.loads(json.dumps(dataclasses.asdict(load_space(space))))
    for child in children:
        assert {"u_hlm.accuracy", "hlm.throughput_modelled", "u_hlm.transmission_rate"} <= set(child.data.metrics)
        assert {a.path for a in client.list_artifacts(child.info.run_id, "records")} >= {
            "records/u_hlm_records.parquet", "records/llm_records.parquet"}
    # shared work: LLM and HLM decoded by the first trial only
    assert parent.data.metrics["reused_prompts"] == 4 and parent.data.metrics["decoded_prompts"] == 12
    # ... and forward passes, through files the trials' worker processes share, removed once every trial is done
    assert parent.data.metrics["passes_replayed"] > 0 and parent.data.metrics["passes_computed"] > 0
    assert "removed the shared forward passes" in first.stdout
    assert list((tmp_path / "out" / "sweeps").glob("tiny-*/shared/*-*")) and not list(
        (tmp_path / "out" / "sweeps").glob("tiny-*/shared/prefixes"))
    frontier = {a.path for a in client.list_artifacts(parent.info.run_id, "frontier")}
    assert {"frontier/frontier.csv", "frontier/frontier_modelled.png", "frontier/frontier_experiment.png",
            "frontier/risk.png"} <= frontier

    # a real MLflow server on loopback serves the frontier back over its REST API
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                if requests.get(f"{base}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        found = requests.post(f"{base}/api/2.0/mlflow/runs/search", timeout=30, json={
            "experiment_ids": [experiment.experiment_id], "filter": f"attributes.run_id = '{parent.info.run_id}'"})
        assert found.ok and found.json()["runs"][0]["info"]["run_id"] == parent.info.run_id
        listed = requests.get(f"{base}/api/2.0/mlflow/artifacts/list", timeout=30,
                              params={"run_id": parent.info.run_id, "path": "frontier"}).json()
        assert "frontier/frontier.csv" in {f["path"] for f in listed["files"]}
        body = requests.get(f"{base}/get-artifact", timeout=30,
                            params={"run_uuid": parent.info.run_id, "path": "frontier/frontier.csv"})
        assert body.ok
        rows = list(csv.DictReader(io.StringIO(body.text)))
        assert rows and {"method", "accuracy", "throughput_modelled", "clock"} <= set(rows[0])
    finally:
        server.terminate()
        server.wait(timeout=30)

    # the same command again: Tune restores the finished sweep; no new runs, nothing decoded again
    again = _run_sweep(space, tiny_pair_dirs, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming 'tiny'" in again.stdout
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 3


def test_rechannel_equals_decoding_at_that_channel(tiny_pair):
    """No token depends on the channel: records decoded at one average SNR, rechannelled to another, equal a run
    decoded there (the sweep's reason to decode once per SNR sweep)."""
    import dataclasses

    from uhlm_ray.config import EvaluateConfig
    from uhlm_ray.decode import decode_prompt, make_policy
    from uhlm_ray.experiments.sweep import method_key, rechannel
    from uhlm_ray.link.fading import DecodeClock
    from uhlm_ray.records import PromptResult

    runs = {}
    for snr_db in (0.0, 12.0):
        cfg = EvaluateConfig()
        cfg.channel.mean_snr_db = snr_db
        cfg.decode.max_new_tokens = 10
        cfg.policy.u_th = 0.3
        tokens, records, _, _ = decode_prompt(pair=tiny_pair, prompt_ids=[2, 3, 4], prompt_index=0, method="u_hlm",
                                              cfg=cfg, policy=make_policy(method="u_hlm", cfg=cfg))
        runs[snr_db] = (cfg, PromptResult(method="u_hlm", prompt_index=0, example_id="e", reference="r",
                                          response="", tokens=tokens, stop_reason="", prompt_tokens=3,
                                          prefill_s=0.0, records=records))
    (cfg0, res0), (cfg12, res12) = runs[0.0], runs[12.0]
    assert res0.tokens == res12.tokens
    clock = DecodeClock.for_run(cfg12, measure="temperature", vocab_size=tiny_pair.vocab_size)
    (moved,) = rechannel(results=[res0], channel=cfg12.channel, seed=cfg12.decode.seed, clock=clock)
    assert any(r.sent for r in moved.records)
    for a, b in zip(moved.records, res12.records, strict=True):
        assert a.tau_up_s == pytest.approx(b.tau_up_s) and a.snr_db == pytest.approx(b.snr_db)
    # ... so the shared store's key ignores the channel, but not the threshold
    assert method_key(cfg=cfg0, method="u_hlm", send_prob=None) == method_key(cfg=cfg12, method="u_hlm",
                                                                                 send_prob=None)
    other = dataclasses.replace(cfg0, policy=dataclasses.replace(cfg0.policy, u_th=0.5))
    assert method_key(cfg=other, method="u_hlm", send_prob=None) != method_key(cfg=cfg0, method="u_hlm",
                                                                                  send_prob=None)
    assert method_key(cfg=other, method="llm", send_prob=None) == method_key(cfg=cfg0, method="llm", send_prob=None)
    # Rand-HLM's configured probability, and the decode-time clock of a channel-aware run, change its tokens
    def with_(cfg, section, **changes):
        return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **changes)})

    low, high = (with_(cfg0, "policy", send_prob=p) for p in (0.2, 0.8))
    assert method_key(cfg=low, method="rand_hlm", send_prob=None) != method_key(cfg=high, method="rand_hlm",
                                                                                  send_prob=None)
    aware = with_(cfg0, "block", stop="channel_aware")
    slower = with_(aware, "clock", tau_measure_ms=50.0)
    assert method_key(cfg=aware, method="block_hlm", send_prob=None) != method_key(cfg=slower, method="block_hlm",
                                                                                     send_prob=None)
    assert method_key(cfg=with_(cfg0, "clock", tau_measure_ms=50.0), method="block_hlm", send_prob=None) == \
        method_key(cfg=cfg0, method="block_hlm", send_prob=None)  # not channel-aware: the clock picks no token
    # the answer on the downlink is on that clock: its settings key channel-aware runs only
    far = with_(aware, "downlink", overhead_ms=50.0)
    assert method_key(cfg=far, method="block_hlm", send_prob=None) != method_key(cfg=aware, method="block_hlm",
                                                                                   send_prob=None)
    assert method_key(cfg=with_(cfg0, "downlink", overhead_ms=50.0), method="block_hlm", send_prob=None) == \
        method_key(cfg=cfg0, method="block_hlm", send_prob=None)
    # coupled sampling draws other tokens: a store shared with independent runs must not hand them over
    coupled = dataclasses.replace(cfg0, decode=dataclasses.replace(cfg0.decode, sampling="coupled"))
    for method in ("llm", "u_hlm"):
        assert method_key(cfg=coupled, method=method, send_prob=None) != method_key(cfg=cfg0, method=method,
                                                                                      send_prob=None)


def test_sweep_interrupted_mid_run_resumes_without_losing_or_duplicating_runs(tiny_pair_dirs, tmp_path):
    """Ctrl-C while trials are running, then the same command: every trial has exactly one finished child run,
    the runs finished before the interruption are kept (same run ids), and no (method, prompt) is decoded twice."""
    from mlflow.tracking import MlflowClient

    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE.replace("policy.u_th: {grid: [0.2, 0.6]}", "policy.u_th: {grid: [0.1, 0.3, 0.5, 0.7]}")
                     .replace("decode.max_new_tokens: 6", "decode.max_new_tokens: 24"))
    cmd, env = _sweep_command(space, tiny_pair_dirs, tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)

    def finished_children() -> list:
        experiment = client.get_experiment_by_name("uhlm-sweep") if (tmp_path / "mlruns").exists() else None
        if experiment is None:
            return []
        return [r for r in client.search_runs([experiment.experiment_id])
                if "mlflow.parentRunId" in r.data.tags and r.info.status == "FINISHED"]

    deadline = time.time() + 600
    while not finished_children() and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)  # what Ctrl-C does to the driver
    assert first.wait(timeout=300) == 130, (tmp_path / "first.log").read_text()[-3000:]
    before = {r.data.tags["uhlm.trial_key"]: r.info.run_id for r in finished_children()}
    assert 1 <= len(before) < 4, "the interruption came after the sweep finished: nothing was tested"
    assert "run the same command again to resume" in (tmp_path / "first.log").read_text()

    again = _run_sweep(space, tiny_pair_dirs, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming 'tiny'" in again.stdout
    experiment = client.get_experiment_by_name("uhlm-sweep")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4 and len({c.data.tags["uhlm.trial_key"] for c in children}) == 4
    assert all(c.info.status == "FINISHED" and "u_hlm.accuracy" in c.data.metrics for c in children)
    assert all(before[c.data.tags["uhlm.trial_key"]] == c.info.run_id for c in children if c.data.tags["uhlm.trial_key"]
               in before)
    assert sorted(c.data.params["trial.policy.u_th"] for c in children) == ["0.1", "0.3", "0.5", "0.7"]
    # the shared store holds each (method, prompt) once, across the interruption
    stores = list((tmp_path / "out" / "sweeps").glob("tiny-*/shared/*/*.jsonl"))
    assert len(stores) >= 2 + 4  # LLM and HLM once, U-HLM once per threshold, Rand-HLM per matched rate
    for store in stores:
        indices = [json.loads(line)["prompt_index"] for line in store.read_text().splitlines() if line.strip()]
        assert sorted(indices) == [0, 1], store
