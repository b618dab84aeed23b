"""A sweep's trial results and MLflow child runs, written by the driver alone (as Ray's MLflowLoggerCallback does).

Trials report their metrics to Tune and leave their records in the sweep store on the driver's node
(actors/sweep_store.py), so whatever node a trial ran on, its run lands in the driver's tracking store. The driver
also keeps every reported result in the sweep folder (`trials.jsonl`): Tune's own per-trial files are written on
the trial's node, which the driver may not see, so the sweep's report never reads them. Each trial has one child
run, found again by its `uhlm.trial_key` tag after an interruption, named by its parameters, spanning the trial's own
start and end. `SweepProgress` is the console's view of the same events.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray import tune

from uhlm_ray.experiments.sweep import SearchSpace, trial_config
from uhlm_ray.experiments.tracking import finite_metrics, flat_params, log_params, tag

BOOKKEEPING = ("trial_key", "trial_started", "trial_ended", "trial_node")


def trial_label(*, space: SearchSpace, params: dict) -> str:
    """A child run's name: the trial's parameters by their last key part, e.g. `u_th=0.431 payload=ids` (the full
    dotted key where two parameters share a last part)."""
    short = [key.rsplit(".", 1)[-1] for key in params]
    parts = [f"{name if short.count(name) == 1 else key}={_value(value)}"
             for key, name, value in zip(params, short, params.values(), strict=True)]
    return " ".join(parts) or space.name


def _value(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class TrialRuns:
    """Creates, fills and finishes one child run per trial, never twice; keeps every result in `trials.jsonl`.
    Without a client (tracking.enabled=false) only the file is written."""

    def __init__(self, *, client: MlflowClient | None, experiment_id: str, parent_id: str | None,
                 space: SearchSpace, overrides: list[str], folder: Path) -> None:
        self.client, self.experiment_id, self.parent_id = client, experiment_id, parent_id
        self.space, self.overrides = space, overrides
        self.artifacts, self.results = folder / "artifacts", folder / "trials.jsonl"

    def log_report(self, folder: Path) -> None:
        if self.client is not None:
            self.client.log_artifacts(self.parent_id, str(folder), "frontier")

    def log_sweep_metrics(self, metrics: dict[str, float]) -> None:
        if self.client is not None:
            now = int(time.time() * 1000)
            self.client.log_batch(self.parent_id, metrics=[Metric(key, value, now, 0)
                                                           for key, value in finite_metrics(metrics).items()])

    def record(self, *, params: dict, result: dict) -> None:
        """Keep a reported result in the driver's sweep folder, then log its run."""
        kept = {k: v for k, v in result.items() if isinstance(v, int | float | str) and not isinstance(v, bool)}
        with self.results.open("a") as f:
            f.write(json.dumps({"params": params, "result": kept}) + "\n")
        self.log(params=params, result=kept)

    def recorded(self) -> list[dict]:
        """Every trial result this sweep has reported, once each (the last report of a trial key wins), as
        `{**metrics, "params": {...}}`."""
        by_key: dict[str, dict] = {}
        if self.results.is_file():
            for line in self.results.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a torn last line of an interrupted write
                    continue
                by_key[entry["result"]["trial_key"]] = {**entry["result"], "params": entry["params"]}
        return list(by_key.values())

    def find(self, key: str):
        for sweep_tag, key_tag in ((tag("sweep_run_id"), tag("trial_key")),
                                   ("sweep_run_id", "trial_key")):  # runs logged before the tags had a prefix
            runs = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{sweep_tag}` = '{self.parent_id}' and "
                                                    f"tags.`{key_tag}` = '{key}'")
            if runs:
                return runs[0]
        return None

    def log(self, *, params: dict, result: dict) -> str | None:
        """The trial's child run, complete: parameters, metrics, records; returns its id."""
        if self.client is None:
            return None
        key = result["trial_key"]
        existing = self.find(key)
        if existing is not None and existing.info.status == "FINISHED":
            return existing.info.run_id  # logged before an interruption: nothing twice
        started = int(result.get("trial_started", time.time()) * 1000)
        if existing is None:
            run_id = self.client.create_run(
                self.experiment_id, run_name=trial_label(space=self.space, params=params), start_time=started,
                tags={"mlflow.parentRunId": self.parent_id, tag("sweep_run_id"): self.parent_id, tag("trial_key"): key,
                      tag("sweep"): self.space.name, tag("trial_node"): str(result.get("trial_node", ""))}).info.run_id
        else:
            run_id = existing.info.run_id  # interrupted while logging: complete it, add nothing
        cfg = trial_config(base_overrides=self.overrides, space=self.space, params=params)
        log_params(self.client, run_id, {**flat_params(cfg), **{f"trial.{k}": str(v) for k, v in params.items()}})
        ended = int(result.get("trial_ended", time.time()) * 1000)
        self.client.log_batch(run_id, metrics=[
            Metric(k, float(v), ended, 0) for k, v in result.items()
            if k not in BOOKKEEPING and isinstance(v, int | float) and not isinstance(v, bool)])
        folder = self.artifacts / key
        if folder.is_dir():
            self.client.log_artifacts(run_id, str(folder), "records")
        self.client.set_terminated(run_id, end_time=ended)
        return run_id


class TrialRunLogger(tune.Callback):
    """Logs each trial's child run the moment Tune hands its result to the driver."""

    def __init__(self, runs: TrialRuns) -> None:
        self.runs = runs

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if "trial_key" in result:
            self.runs.record(params=dict(trial.config or {}), result=result)



class SweepProgress(tune.Callback):
    """The sweep's console (Tune's own boxes are off): a line when a trial starts (with the time left at the pace
    so far) and one when it ends (trials done of total, what it reported for the objectives)."""

    def __init__(self, *, space: SearchSpace, total: int, done_before: int) -> None:
        self.space, self.total, self.done, self.failed = space, total, done_before, 0
        self.started = time.time()
        self.finished_here = 0

    def _eta(self) -> str:
        left = self.total - self.done - self.failed
        if not self.finished_here or left <= 0:
            return ""
        per_trial = (time.time() - self.started) / self.finished_here
        return f"; about {per_trial * left / 60:.0f} min left" if per_trial * left >= 60 else \
            f"; about {per_trial * left:.0f} s left"

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        print(f"[sweep] trial {self.done + self.failed + 1}/{self.total} started "
              f"({trial_label(space=self.space, params=dict(trial.config or {}))}){self._eta()}", flush=True)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if "trial_key" not in result:
            return
        self.done += 1
        self.finished_here += 1
        seconds = result.get("trial_ended", 0) - result.get("trial_started", 0)
        objectives = ", ".join(f"{o.metric}={result[o.metric]:.4g}" for o in self.space.objectives
                               if isinstance(result.get(o.metric), int | float))
        print(f"[sweep] trial {self.done}/{self.total} done in {seconds:.0f} s "
              f"({trial_label(space=self.space, params=dict(trial.config or {}))}): {objectives}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.failed += 1
        print(f"[sweep] trial {trial_label(space=self.space, params=dict(trial.config or {}))} failed "
              f"({self.failed} so far); the cause is printed at the end", flush=True)
