"""A Ray Tune sweep over a search space file; every trial a real decoding run, all of it in MLflow.

    python jobs/sweep.py                                        # tune_spaces/default.yaml on the embedded pair
    python jobs/sweep.py paper_grid data.name=alpaca data.path=../shared/data
    python jobs/sweep.py tune_spaces/snr_sweep.yaml decode.max_new_tokens=32
    ray job submit --address http://127.0.0.1:8265 --runtime-env runtime_env.yaml -- uhlm-sweep tradeoff_search

The first argument names a space (a file, or a name under tune_spaces/); the rest are omegaconf overrides applied
to every trial. MLflow (experiment `uhlm-sweep`): one parent run per sweep with the Pareto frontiers (accuracy vs
modelled and vs experiment throughput) as plots and tables and the empirical-versus-bound risk plot, and the space as
`space/space.json`; one child run per trial. Rerunning the same command resumes an interrupted sweep (Tune's restore;
finished trials are kept, the decoded prompts are in the shared store, MLflow runs are found again rather than
duplicated).
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
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0, no experiment box either: SweepProgress reports

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from actors.connect import connect  # noqa: E402
from actors.sweep_mlflow import SweepProgress, TrialRunLogger, TrialRuns, trial_label  # noqa: E402
from actors.sweep_store import start_sweep_store  # noqa: E402
from actors.sweep_trial import node_scratch, run_trial  # noqa: E402
from uhlm_ray.cli import check_writable_folder, refusals  # noqa: E402
from uhlm_ray.config import EvaluateConfig, RuntimeConfig  # noqa: E402
from uhlm_ray.experiments.datasets import load_examples  # noqa: E402
from uhlm_ray.experiments.locations import job_folder, output_root  # noqa: E402
from uhlm_ray.experiments.sweep import SearchSpace, load_space_and_configs  # noqa: E402
from uhlm_ray.experiments.sweep_report import frontier_report, trial_table  # noqa: E402
from uhlm_ray.experiments.tracking import (  # noqa: E402
    experiment_name,
    log_params,
    resolve_tracking_uri,
    setup_experiment,
    tag,
)
from uhlm_ray.models.preflight import check_model_sources  # noqa: E402
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


def preflight(name: str, overrides: list[str]) -> tuple[SearchSpace, EvaluateConfig, int]:
    """Everything knowable before Tune starts: the space (every value of every parameter, the objectives), the
    command line, every data set and model pair the trials will read, the cluster and its placement. Returns the
    space, the first trial's config and the CPUs per trial."""
    space, configs = load_space_and_configs(resolve_space(name), overrides=overrides)
    for data in {json.dumps(dataclasses.asdict(c.data), sort_keys=True): c.data for c in configs}.values():
        load_examples(data)
    for model in {json.dumps(dataclasses.asdict(c.model), sort_keys=True): c.model for c in configs}.values():
        check_model_sources(model)  # assembles the embedded pair here, with progress, before any trial needs it
    cfg = configs[0]
    check_writable_folder(str(output_root(cfg.output_dir)), field="output_dir")
    connect(cfg.runtime, job="sweep")
    per_trial = max(1, trial_node_cpus(cfg.runtime) // max(1, space.max_concurrent_trials))
    return space, cfg, per_trial


def parent_note(space: SearchSpace) -> str:
    """The parent run's description in the MLflow UI: where to look first, then what the sweep is."""
    objectives = ", ".join(f"{o.metric} ({o.mode})" for o in space.objectives)
    return ("**Look at** this run's artifacts: `frontier/frontier_modelled.png`, `frontier/frontier_experiment.png` "
            "and `frontier/frontier_energy.png` (accuracy against modelled and experiment throughput and against the "
            "device's energy per token, every method of every trial, the Pareto frontier "
            "dashed and its points labelled with their parameters), `frontier/frontier.md` (the frontiers as tables "
            "and where exact hybrid inference stands against the LLM alone), `frontier/risk.png` (U-HLM's measured "
            "rejection risk against Theorem 1). One child run per trial, named by its parameters: compare them in "
            f"the chart view or sort by an objective ({objectives}).\n\n"
            f"**{space.name}**: {space.description or 'a sweep of ' + ', '.join(space.params)}")


def error_cause(error: object) -> str:
    """The last line of a trial's error, where Tune's traceback names the cause."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def main(argv: list[str]) -> int:
    if argv and "=" not in argv[0] and not argv[0].startswith("-"):
        name, overrides = argv[0], argv[1:]
    else:
        name, overrides = "default", argv
    with refusals():  # one line on stderr, exit 2, before any model loads or Tune starts
        space, base_cfg, per_trial = preflight(name, overrides)
    described = json.dumps([dataclasses.asdict(space), overrides], sort_keys=True, default=str)
    digest = hashlib.sha256(described.encode()).hexdigest()[:10]
    sweep_dir = job_folder(output_dir=base_cfg.output_dir, job="sweep") / f"{space.name}-{digest}"
    sweep_dir.mkdir(parents=True, exist_ok=True)
    total = expected_trials(space)

    client = parent_id = None
    experiment_id = ""
    if base_cfg.tracking.enabled:
        import mlflow

        experiment_id = setup_experiment(base_cfg.tracking, job="sweep")
        client = mlflow.tracking.MlflowClient(tracking_uri=resolve_tracking_uri(base_cfg.tracking))
        parent_file = sweep_dir / "mlflow_parent_run_id"
        if parent_file.is_file():
            parent_id = parent_file.read_text().strip()
            client.update_run(parent_id, status="RUNNING")
        else:
            parent = client.create_run(experiment_id, run_name=f"sweep {space.name} ({total} trials)",
                                       tags={tag("sweep"): space.name, tag("sweep_dir"): str(sweep_dir),
                                             "mlflow.note.content": parent_note(space)})
            parent_id = parent.info.run_id
            parent_file.write_text(parent_id)
            # the space whole, as checked (space/space.json) and as written (its file); no param could hold it
            client.log_dict(parent_id, dataclasses.asdict(space), "space/space.json")
            client.log_artifact(parent_id, str(resolve_space(name)), "space")
            log_params(client, parent_id, {"overrides": " ".join(overrides) or "-"})
    runs = TrialRuns(client=client, experiment_id=experiment_id, parent_id=parent_id, space=space,
                     overrides=list(overrides), folder=sweep_dir)
    done_before = len(runs.recorded())
    if done_before:
        print(f"[sweep] resuming {space.name!r}: {done_before} of {total} trials already done"
              + (f" (parent run {parent_id})" if parent_id else ""))
    status = "FAILED"  # what the parent run says if anything below raises
    try:
        code, status = run_sweep(space=space, base_cfg=base_cfg, overrides=overrides, per_trial=per_trial,
                                 sweep_dir=sweep_dir, runs=runs, total=total, done_before=done_before)
        return code
    except KeyboardInterrupt:
        status = "KILLED"
        print(f"[sweep] interrupted; run the same command again to resume (files in {sweep_dir})", file=sys.stderr)
        return 130
    except Exception as err:
        print(f"[sweep] failed: {type(err).__name__}: {err}", file=sys.stderr)
        raise
    finally:
        if client is not None:
            client.set_terminated(parent_id, status=status)


def run_sweep(*, space: SearchSpace, base_cfg: EvaluateConfig, overrides: list[str], per_trial: int,
              sweep_dir: Path, runs: TrialRuns, total: int, done_before: int) -> tuple[int, str]:
    """Tune's run (or its resume), then the report; returns the exit code and the parent run's status."""
    store = start_sweep_store(sweep_dir)  # on this node: what trials share and hand back lives in sweep_dir
    constants = {"space": dataclasses.asdict(space), "overrides": list(overrides), "sweep_id": sweep_dir.name,
                 "store": store}
    resources = tune.PlacementGroupFactory([{"CPU": per_trial, **base_cfg.runtime.trial_resources}])
    trainable = tune.with_resources(tune.with_parameters(run_trial, sweep=constants), resources)
    storage = sweep_dir / "tune"
    callbacks = [TrialRunLogger(runs), SweepProgress(space=space, total=total, done_before=done_before)]
    start = time.perf_counter()
    print(f"[sweep] {space.name}: {total} trials of {', '.join(space.methods)} over {', '.join(space.params)}; "
          f"{per_trial} CPUs each, up to {space.max_concurrent_trials} at a time", flush=True)
    if tune.Tuner.can_restore(str(storage / space.name)):
        tuner = tune.Tuner.restore(str(storage / space.name), trainable=trainable, resume_errored=True,
                                   param_space=param_space(space))
        tuner._local_tuner._run_config.callbacks = callbacks  # a restored run keeps no callbacks of its own
        tuner._local_tuner._run_config.verbose = 0
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
            # verbose=0: Tune's per-trial boxes would drown the console; SweepProgress prints a line per trial
            run_config=tune.RunConfig(name=space.name, storage_path=str(storage), verbose=0, callbacks=callbacks),
        )
    grid = tuner.fit()
    elapsed = time.perf_counter() - start
    trials = runs.recorded()  # what the trials reported to this driver, whichever node they ran on
    for trial in trials:  # a result the driver kept but had not logged when it was interrupted is logged now
        runs.log(params=trial["params"], result=trial)
    errors = [(r.config, error_cause(r.error)) for r in grid if r.error is not None]
    if len(trials) + len(errors) < total:  # Ctrl-C / `ray job stop`: Tune saved its state
        print(f"[sweep] interrupted after {len(trials)} of {total} trials; run the same command again to resume "
              f"(files in {sweep_dir})", file=sys.stderr)
        return 130, "KILLED"
    report = frontier_report(trials=trials, space=space, folder=sweep_dir / "report")
    runs.log_report(sweep_dir / "report")
    decoded = sum(t.get("decoded_prompts", 0) for t in trials)
    reused = sum(t.get("reused_prompts", 0) for t in trials)
    computed = sum(t.get("passes_computed", 0) for t in trials)
    replayed = sum(t.get("passes_replayed", 0) for t in trials)
    runs.log_sweep_metrics({"num_trials": len(trials), "num_errors": len(errors), "sweep_wall_s": elapsed,
                            "decoded_prompts": decoded, "reused_prompts": reused,
                            "shared_work_ratio": (decoded + reused) / decoded if decoded else float("nan"),
                            "passes_computed": computed, "passes_replayed": replayed})
    freed = 0.0
    if not errors:  # shared forward passes only speed up this sweep's resume: free every node's disk
        freed = free_node_scratch(runtime=base_cfg.runtime, sweep_id=sweep_dir.name)
    print(report)
    print("\n" + trial_table(trials=trials, space=space))
    print(f"\n[sweep] {len(trials)} trials in {elapsed:.0f} s; (method, prompt) runs decoded {decoded:.0f}, reused "
          f"{reused:.0f}; forward passes computed {computed:.0f}, replayed {replayed:.0f}; files in {sweep_dir}")
    if not errors:
        print(f"[sweep] removed the shared forward passes ({freed:.0f} MiB over the nodes) now that every trial "
              "is done")
    if runs.parent_id:
        print(f"[sweep] MLflow: parent run {runs.parent_id} in experiment "
              f"{experiment_name(base_cfg.tracking, job='sweep')!r} ({resolve_tracking_uri(base_cfg.tracking)})")
    for config, cause in errors:
        print(f"[sweep] trial {trial_label(space=space, params=config)} failed: {cause}", file=sys.stderr)
    return (1, "FAILED") if errors else (0, "FINISHED")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
