"""The Ray Tune trainable of a sweep: one trial = one real decoding run of every method.

A trial may run on any node, so it writes nothing the sweep's results depend on: it decodes through the sweep's
shared store on the driver's node (actors/sweep_store.py), hands its per-round records to that store, and reports
its metrics to Tune. The driver logs everything to MLflow (jobs/sweep.py). The forward passes it shares with other
trials stay on its own node (`runtime.scratch_dir`): they change no result, only time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import ray
from ray import tune

from actors.sweep_store import RemoteStoreView
from uhlm_ray.config import ModelConfig, RuntimeConfig
from uhlm_ray.experiments.datasets import load_examples
from uhlm_ray.experiments.sweep import Objective, SearchSpace, evaluate_trial, trial_config
from uhlm_ray.experiments.tracking import finite_metrics, write_records_parquet
from uhlm_ray.measures.similarity import load_encoder
from uhlm_ray.models import load_pair
from uhlm_ray.models.prefix_cache import PrefixCache, prefix_cache


@lru_cache(maxsize=2)
def _pair(model_json: str):
    """Models stay loaded in a worker process across the trials it runs."""
    return load_pair(ModelConfig(**json.loads(model_json)))


@lru_cache(maxsize=2)
def _encoder(name: str):
    return load_encoder(name)


_PREFIXES: dict[str, PrefixCache | None] = {}  # per model, kept across the trials a worker process runs


def trial_key(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


def node_scratch(runtime: RuntimeConfig, *, sweep_id: str) -> Path:
    """This node's folder for a sweep's shared forward passes (the system temp folder unless configured)."""
    return Path(runtime.scratch_dir or tempfile.gettempdir()) / "uhlm_ray" / sweep_id


def run_trial(config: dict, sweep: dict) -> None:
    """Tune calls this with the trial's parameters (dotted config keys) and the sweep's constants."""
    started = time.time()
    params = dict(config)
    space = SearchSpace(**{**sweep["space"], "objectives": [Objective(**o) for o in sweep["space"]["objectives"]]})
    cfg = trial_config(base_overrides=sweep["overrides"], space=space, params=params)
    model_key = json.dumps(dataclasses.asdict(cfg.model), sort_keys=True)
    pair = _pair(model_key)
    encoder = _encoder(cfg.metrics.encoder)
    if model_key not in _PREFIXES:  # forward passes shared with the sweep's other trials on this node
        _PREFIXES[model_key] = prefix_cache(
            cfg.runtime, directory=node_scratch(cfg.runtime, sweep_id=sweep["sweep_id"]) / "prefixes")
    prefixes = _PREFIXES[model_key]
    before = (prefixes.misses, prefixes.hits) if prefixes is not None else (0, 0)
    store = sweep["store"]
    outcome = evaluate_trial(pair=pair, examples=load_examples(cfg.data), cfg=cfg, encoder=encoder,
                             store_for=lambda name: RemoteStoreView(store, name), prefixes=prefixes)

    metrics = finite_metrics({f"{m}.{k}": v for m, s in outcome.summaries.items() for k, v in s.items()})
    metrics["decoded_prompts"] = float(outcome.decoded_prompts)
    metrics["reused_prompts"] = float(outcome.reused_prompts)
    if prefixes is not None:  # forward passes this trial computed, and those it found computed by another trial
        metrics["passes_computed"] = float(prefixes.misses - before[0])
        metrics["passes_replayed"] = float(prefixes.hits - before[1])
    key = trial_key(params)
    with tempfile.TemporaryDirectory() as tmp:  # the records go to the driver's node, not to a file here
        for method, results in outcome.results.items():
            path = write_records_parquet(results=results, path=Path(tmp) / f"{method}_records.parquet")
            ray.get(store.put_artifact.remote(key, path.name, path.read_bytes()))
    # one line per trial in the driver's console and `ray job logs` (Ray prefixes it with the worker's pid and node)
    print(f"[trial {key}] {' '.join(f'{k}={v}' for k, v in sorted(params.items()))}: {outcome.decoded_prompts} "
          f"prompts decoded, {outcome.reused_prompts} reused, in {time.time() - started:.1f} s", flush=True)
    tune.report({**metrics, "trial_key": key, "trial_started": started, "trial_ended": time.time(),
                 "trial_node": ray.get_runtime_context().get_node_id()})

