"""A Ray Tune sweep over a search space file; every trial a real decoding run, all of it in MLflow.

    python jobs/sweep.py                                        # tune_spaces/default.yaml on the embedded pair
    python jobs/sweep.py paper_grid data.name=alpaca data.path=../shared/data
    python jobs/sweep.py tune_spaces/snr_sweep.yaml decode.max_new_tokens=32
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/sweep.py tradeoff_search \\
        tracking.tracking_uri=sqlite:///$PWD/mlruns/mlflow.db output_dir=$PWD/outputs/evaluate

The first argument names a space (a file, or a name under tune_spaces/); the rest are omegaconf overrides applied
to every trial. MLflow (experiment `uhlm-sweep`): one parent run per sweep with the Pareto frontiers (accuracy vs
modelled and vs wall throughput) as plots and tables and the empirical-versus-bound risk plot; one child run per
trial. Rerunning the same command resumes an interrupted sweep (Tune's restore; finished trials are kept, the
decoded prompts are in the shared store, MLflow runs are found again rather than duplicated).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from actors.connect import connect  # noqa: E402
from actors.sweep_mlflow import TrialRunLogger, TrialRuns  # noqa: E402
from actors.sweep_store import start_sweep_store  # noqa: E402
from actors.sweep_trial import node_scratch, run_trial  # noqa: E402
from uhlm_ray.config import RuntimeConfig, load_config  # noqa: E402
from uhlm_ray.sweep import SearchSpace, load_space  # noqa: E402
from uhlm_ray.sweep_report import frontier_report  # noqa: E402
from uhlm_ray.tracking import experiment_name, resolve_tracking_uri, setup_experiment  # noqa: E402
from uhlm_ray.validation import ConfigError  # noqa: E402

SPACES = Path(__file__).resolve().parents[1] / "tune_spaces"


def resolve_space(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        return path
    return SPACES / f"{name}.yaml"


def param_space(space: SearchSpace) -> dict:
    """The space's parameters as Tune sampling objects."""
    make = {"grid": tune.grid_search, "choice": tune.choice, "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v), "randint": lambda v: tune.randint(*v)}
    return {key: make[kind](values) for key, spec in space.params.items() for kind, values in spec.items()}


def expected_trials(space: SearchSpace) -> int:
    """Trials a complete sweep runs: every grid point num_samples times (other searches: num_samples)."""
    points = 1
    for spec in space.params.values():
        points *= len(spec["grid"]) if "grid" in spec else 1
    return points * space.num_samples


def search_alg(space: SearchSpace):
    if space.search != "optuna":
        return None
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(metric=[o.metric for o in space.objectives], mode=[o.mode for o in space.objectives],
                        seed=0)


@ray.remote(num_cpus=0)
def _free_scratch(runtime: dict, sweep_id: str) -> float:
    folder = node_scratch(RuntimeConfig(**runtime), sweep_id=sweep_id)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20 if folder.is_dir() else 0.0
    shutil.rmtree(folder, ignore_errors=True)
    return size


def free_node_scratch(*, runtime: RuntimeConfig, sweep_id: str) -> float:
    """Remove the sweep's node-local folders on every node alive now; returns the MiB freed."""
    tasks = [_free_scratch.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node["NodeID"],
                                                                                       soft=False))
             .remote(dataclasses.asdict(runtime), sweep_id) for node in ray.nodes() if node["Alive"]]
    return sum(ray.get(tasks))


def trial_node_cpus(runtime: RuntimeConfig) -> int:
    """The CPUs of the largest alive node that offers every resource a trial asks for (one trial runs on one node)."""
    wanted = runtime.trial_resources
    cpus = [node["Resources"].get("CPU", 0) for node in ray.nodes()
            if node["Alive"] and all(node["Resources"].get(k, 0) >= v for k, v in wanted.items())]
    if not cpus:
        raise ConfigError(f"runtime.trial_resources={dict(wanted)}: no node of the cluster offers them "
                          f"(nodes offer {sorted({k for n in ray.nodes() for k in n['Resources']})})")
    return int(max(cpus))


def main(argv: list[str]) -> int:
    if argv and "=" not in argv[0] and not argv[0].startswith("-"):
        name, overrides = argv[0], argv[1:]
    else:
        name, overrides = "default", argv
    try:
        space = load_space(resolve_space(name))
        base_cfg = load_config(overrides=overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    described = json.dumps([dataclasses.asdict(space), overrides], sort_keys=True, default=str)
    digest = hashlib.sha256(described.encode()).hexdigest()[:10]
    sweep_dir = (Path(base_cfg.output_dir).parent / "sweeps" / f"{space.name}-{digest}").resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)

    import mlflow

    experiment_id = setup_experiment(base_cfg.tracking, job="sweep")
    tracking_uri = resolve_tracking_uri(base_cfg.tracking)
    parent_file = sweep_dir / "mlflow_parent_run_id"
    client = mlflow.tracking.MlflowClient(tracking_uri=tracking_uri)
    if parent_file.is_file():
        parent_id = parent_file.read_text().strip()
        client.update_run(parent_id, status="RUNNING")
        print(f"[sweep] resuming {space.name!r}: parent run {parent_id}")
    else:
        parent = client.create_run(experiment_id, run_name=f"sweep-{space.name}-{digest}",
                                   tags={"sweep": space.name, "sweep_dir": str(sweep_dir)})
        parent_id = parent.info.run_id
        parent_file.write_text(parent_id)
        client.log_param(parent_id, "space", json.dumps(dataclasses.asdict(space))[:6000])
        client.log_param(parent_id, "overrides", " ".join(overrides)[:6000] or "-")
        client.log_artifact(parent_id, str(resolve_space(name)), "space")

    connect(base_cfg.runtime, job="sweep")
    store = start_sweep_store(sweep_dir)  # on this node: what trials share and hand back lives in sweep_dir
    runs = TrialRuns(client=client, experiment_id=experiment_id, parent_id=parent_id, space=space,
                     overrides=list(overrides), folder=sweep_dir)
    try:
        per_trial = max(1, trial_node_cpus(base_cfg.runtime) // max(1, space.max_concurrent_trials))
    except ConfigError as err:
        client.set_terminated(parent_id, status="FAILED")
        print(f"error: {err}", file=sys.stderr)
        return 2
    constants = {"space": dataclasses.asdict(space), "overrides": list(overrides), "sweep_id": sweep_dir.name,
                 "store": store}
    resources = tune.PlacementGroupFactory([{"CPU": per_trial, **base_cfg.runtime.trial_resources}])
    trainable = tune.with_resources(tune.with_parameters(run_trial, sweep=constants), resources)
    storage = sweep_dir / "tune"
    start = time.perf_counter()
    if tune.Tuner.can_restore(str(storage / space.name)):
        tuner = tune.Tuner.restore(str(storage / space.name), trainable=trainable, resume_errored=True,
                                   param_space=param_space(space))
    else:
        objective = space.objectives[0]
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(space),
            tune_config=tune.TuneConfig(
                num_samples=space.num_samples, max_concurrent_trials=space.max_concurrent_trials,
                search_alg=search_alg(space),
                metric=None if space.search == "optuna" else objective.metric,
                mode=None if space.search == "optuna" else objective.mode,
            ),
            run_config=tune.RunConfig(name=space.name, storage_path=str(storage), verbose=1,
                                      callbacks=[TrialRunLogger(runs)]),
        )
    grid = tuner.fit()
    elapsed = time.perf_counter() - start
    trials = runs.recorded()  # what the trials reported to this driver, whichever node they ran on
    for trial in trials:  # a result the driver kept but had not logged when it was interrupted is logged now
        runs.log(params=trial["params"], result=trial)
    errors = [str(r.error)[:300] for r in grid if r.error is not None]
    if len(trials) + len(errors) < expected_trials(space):  # Ctrl-C / `ray job stop`: Tune saved its state
        client.set_terminated(parent_id, status="KILLED")
        print(f"[sweep] interrupted after {len(trials)} of {expected_trials(space)} trials; run the same command "
              f"again to resume (parent run {parent_id}, files in {sweep_dir})", file=sys.stderr)
        return 130
    report = frontier_report(trials=trials, space=space, folder=sweep_dir / "report")
    for path in sorted((sweep_dir / "report").iterdir()):
        client.log_artifact(parent_id, str(path), "frontier")
    decoded = sum(t.get("decoded_prompts", 0) for t in trials)
    reused = sum(t.get("reused_prompts", 0) for t in trials)
    computed = sum(t.get("passes_computed", 0) for t in trials)
    replayed = sum(t.get("passes_replayed", 0) for t in trials)
    for key, value in {"num_trials": len(trials), "num_errors": len(errors), "sweep_wall_s": elapsed,
                       "decoded_prompts": decoded, "reused_prompts": reused,
                       "shared_work_ratio": (decoded + reused) / decoded if decoded else float("nan"),
                       "passes_computed": computed, "passes_replayed": replayed}.items():
        client.log_metric(parent_id, key, float(value))
    client.set_terminated(parent_id, status="FAILED" if errors else "FINISHED")
    if not errors:  # shared forward passes only speed up this sweep's resume: free every node's disk
        freed = free_node_scratch(runtime=base_cfg.runtime, sweep_id=sweep_dir.name)
        print(f"[sweep] removed the shared forward passes ({freed:.0f} MiB over the nodes) now that every trial "
              "is done")
    print(report)
    print(f"\n[sweep] {len(trials)} trials in {elapsed:.0f} s; (method, prompt) runs decoded {decoded:.0f}, reused "
          f"{reused:.0f} (a sweep without sharing would decode {decoded + reused:.0f}); forward passes computed "
          f"{computed:.0f}, replayed from other runs {replayed:.0f}; parent run {parent_id} in "
          f"experiment {experiment_name(base_cfg.tracking, job='sweep')!r}; files in {sweep_dir}")
    for err in errors:
        print(f"[sweep] trial error: {err}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
