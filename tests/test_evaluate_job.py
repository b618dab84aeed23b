"""The evaluate job end to end on the tiny pair: a real MLflow sqlite store read back, and resumable results."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from uhlm_ray.config import METHODS, load_config
from uhlm_ray.experiments.calibration import run_calibration
from uhlm_ray.experiments.datasets import load_examples
from uhlm_ray.experiments.evaluate import ResultStore, evaluate_methods, format_table, summarize_methods
from uhlm_ray.measures.similarity import load_encoder

ROOT = Path(__file__).resolve().parents[1]


def _overrides(tiny_pair_dirs, tmp_path) -> list[str]:
    slm, llm = tiny_pair_dirs
    return [
        "model.pair=custom", f"model.slm={slm}", f"model.llm={llm}", "model.dtype=float32",
        "data.n_prompts=3", "decode.max_new_tokens=6", f"output_dir={tmp_path / 'out'}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "tracking.experiment=test-evaluate",
    ]


def test_job_prints_the_table_and_logs_one_run_per_method(tiny_pair_dirs, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, str(ROOT / "jobs" / "evaluate.py"), *_overrides(tiny_pair_dirs, tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "average SNR -8.92 dB" in done.stdout
    for label in ("| LLM |", "| SLM |", "| HLM |", "| Rand-HLM |", "| U-HLM |", "| CU-HLM |", "| Block-HLM |"):
        assert label in done.stdout
    assert "median | p95 | uploads/token | bits/token" in done.stdout

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("test-evaluate")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == len(METHODS)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    # our tags under one prefix, MLflow's own as they were
    ours = {k for k in parents[0].data.tags if not k.startswith("mlflow.")}
    assert ours == {"uhlm.run_key"} and parents[0].data.tags["mlflow.runName"].startswith("evaluate-")
    assert {r.data.params["method"] for r in children} == set(METHODS)
    cu = next(r for r in children if r.data.params["method"] == "cu_hlm")
    assert 0.0 < cu.data.metrics["compression_rate"] < 1.0  # top-p uploads are truncated
    hlm = next(r for r in children if r.data.params["method"] == "hlm")
    assert hlm.data.metrics["transmission_rate"] == 1.0
    assert 0.0 <= hlm.data.metrics["accuracy"] <= 1.0
    mlflow.set_tracking_uri(uri)
    local = mlflow.artifacts.download_artifacts(run_id=hlm.info.run_id, artifact_path="records/hlm_records.parquet",
                                                dst_path=str(tmp_path / "dl"))
    records = pd.read_parquet(local)
    assert len(records) == hlm.data.metrics["num_tokens"] and records["sent"].all()
    block = next(r for r in children if r.data.params["method"] == "block_hlm")
    assert block.data.metrics["exact"] == 1.0 and block.data.metrics["mean_accepted_length"] >= 1.0
    local = mlflow.artifacts.download_artifacts(run_id=block.info.run_id,
                                                artifact_path="records/block_hlm_records.parquet",
                                                dst_path=str(tmp_path / "dl"))
    rounds = pd.read_parquet(local)  # one row per block round, its drafts as a list
    assert rounds["tokens"].map(len).sum() >= block.data.metrics["num_tokens"]
    assert (tmp_path / "mlruns" / "artifacts").is_dir()  # artifacts beside the database, not in a stray folder

    # a second run with the same settings resumes: nothing is decoded again
    folder = next((tmp_path / "out" / "evaluate").iterdir())
    before = {p.name: p.read_text() for p in folder.glob("*.jsonl")}
    again = subprocess.run(cmd + ["tracking.enabled=false"], capture_output=True, text=True, env=env, cwd=tmp_path,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p.name: p.read_text() for p in folder.glob("*.jsonl")} == before


def test_bad_override_exits_with_a_named_field(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "jobs" / "evaluate.py"), "policy.u_th=3"], capture_output=True,
                          text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 2
    assert "policy.u_th=3.0 is outside the allowed range [0.0, 1.0]" in done.stderr


def test_interrupted_run_resumes_without_losing_or_repeating_prompts(tiny_pair, tiny_pair_dirs, tmp_path):
    cfg = load_config(overrides=_overrides(tiny_pair_dirs, tmp_path) + ["methods=[hlm,u_hlm]"])
    examples = load_examples(cfg.data)
    encoder = load_encoder("use")
    store = ResultStore(tmp_path / "store")
    seen = []

    def interrupt_after_four(result):
        seen.append(result)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_methods(pair=tiny_pair, examples=examples, cfg=cfg, encoder=encoder, store=store,
                         on_prompt=interrupt_after_four)
    assert len(store.load("hlm")) == 3 and len(store.load("u_hlm")) == 1

    resumed = evaluate_methods(pair=tiny_pair, examples=examples, cfg=cfg, encoder=encoder, store=store)
    for method in ("hlm", "u_hlm"):
        lines = [json.loads(line) for line in (tmp_path / "store" / f"{method}.jsonl").read_text().splitlines()]
        assert sorted(d["prompt_index"] for d in lines) == [0, 1, 2]  # each prompt exactly once
        stored = sorted(lines, key=lambda d: d["prompt_index"])
        assert [r.tokens for r in resumed[method]] == [d["tokens"] for d in stored]
    # the result finished before the interrupt is kept as is (in a lockstep batch, prompts finish in any order)
    assert resumed["u_hlm"][seen[3].prompt_index].tokens == seen[3].tokens
    calibration = run_calibration(pair=tiny_pair, prompt=examples[0].prompt, cfg=cfg)
    table = format_table(summarize_methods(results=resumed, cfg=cfg, calibration=calibration))
    assert "| HLM |" in table and "| U-HLM |" in table


def test_run_key_covers_every_section_that_changes_the_decoded_tokens():
    """A resumed run must never reuse results decoded under other settings: every config section is either in the
    run key or declared as not affecting decoding, and a change in each key section changes the key."""
    import dataclasses

    from uhlm_ray.config import EvaluateConfig
    from uhlm_ray.experiments.evaluate import DECODE_SECTIONS, NON_DECODE_SECTIONS, run_key

    sections = {name for name, value in vars(EvaluateConfig()).items() if dataclasses.is_dataclass(value)}
    assert sections == set(DECODE_SECTIONS) | set(NON_DECODE_SECTIONS)
    base = run_key(load_config(overrides=[]))
    for override in ("cu_hlm.u_th=0.2", "policy.channel_aware=true", "payload.sync_token_ids=false",
                     "uncertainty.k=5", "decode.seed=1"):
        assert run_key(load_config(overrides=[override])) != base, override
    assert run_key(load_config(overrides=["runtime.share_prefixes=false"])) == base  # sharing changes nothing
