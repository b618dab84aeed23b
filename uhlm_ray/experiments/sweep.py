"""Sweeps without Ray: search spaces from YAML, one trial's evaluation with shared work, Pareto frontiers.

A space file (tune_spaces/*.yaml):

    name: threshold                      # the sweep's name (MLflow parent run, Tune experiment folder)
    description: ...
    objectives:                          # what the search optimises and what the frontier is drawn for
      - {metric: u_hlm.accuracy, mode: max}
      - {metric: u_hlm.throughput_modelled, mode: max}
    search: grid                         # grid | random | optuna (Bayesian, TPE; multi-objective)
    num_samples: 1                       # grid: repeats of the grid; random/optuna: trials
    methods: [llm, slm, hlm, u_hlm, rand_hlm]
    base: {data.n_prompts: 3}            # settings of every trial (the command line's overrides win over them)
    params:                              # dotted config keys
      policy.u_th: {grid: [0.2, 0.431, 0.6]}
      uncertainty.theta_max: {uniform: [0.5, 3.0]}
      uncertainty.k: {choice: [10, 20]}

Shared work: a method's decoded prompts depend only on some settings (the LLM alone ignores u_th and K; no token
depends on the channel, only the modelled uplink does, unless the threshold or the block stop is channel-aware or a
missed deadline falls back to the draft). Each (method, prompt)
is stored once under a key of exactly those settings, in a store all trials of a sweep share; a trial decodes only
what no earlier trial has, and recomputes each record's uplink time for its own channel from the stored fading gain
(`rechannel`). Below that, the forward passes trials share are computed once (models/prefix_cache.py).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import yaml
from omegaconf import OmegaConf

from uhlm_ray.cell import CELL_FIGURES, virtual_cell_figures
from uhlm_ray.config import METHODS, ChannelConfig, EvaluateConfig, load_config
from uhlm_ray.device.decoder import method_measure
from uhlm_ray.experiments.calibration import run_calibration
from uhlm_ray.experiments.datasets import Example
from uhlm_ray.experiments.evaluate import ResultStore, matched_send_prob, ordered_methods, run_method, summarize_methods
from uhlm_ray.link.fading import DecodeClock, has_time_axis
from uhlm_ray.link.reprice import reprice_results
from uhlm_ray.measures.cu_theory import operating_point
from uhlm_ray.measures.similarity import Encoder
from uhlm_ray.measures.theory import risk_at_threshold
from uhlm_ray.models.loading import ModelPair
from uhlm_ray.models.prefix_cache import PrefixCache
from uhlm_ray.records import PromptResult
from uhlm_ray.snr import mean_snr
from uhlm_ray.validation import ConfigError, check_choice, check_range

SEARCHES = ("grid", "random", "optuna")
DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")


@dataclass
class Objective:
    metric: str  # "<method>.<summary key>", e.g. "u_hlm.accuracy"
    mode: str  # "max" or "min"


@dataclass
class SearchSpace:
    name: str
    objectives: list[Objective]
    params: dict[str, dict]
    search: str = "grid"
    num_samples: int = 1
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    base: dict[str, object] = field(default_factory=dict)
    description: str = ""
    max_concurrent_trials: int = 1


def load_space(path: str | Path, *, overrides: list[str] = ()) -> SearchSpace:
    """Read and check a space file against the command line's `overrides`; errors name the file and the field."""
    return load_space_and_configs(path, overrides=overrides)[0]


def load_space_and_configs(path: str | Path, *, overrides: list[str] = ()) -> \
        tuple[SearchSpace, list[EvaluateConfig]]:
    """The checked space and the trial configs that cover every value a parameter can take (each grid and choice
    value, both ends of a range; `candidate_configs`), tried so that no trial can fail on its settings after the
    sweep has started."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space {str(path)!r} not found (see tune_spaces/)")
    where = path.name
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a space file is a mapping of name, objectives, params, ...")
    unknown = set(raw) - {f.name for f in dataclasses.fields(SearchSpace)}
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; allowed "
                          f"{sorted(f.name for f in dataclasses.fields(SearchSpace))}")
    for key in ("name", "objectives", "params"):
        if key not in raw:
            raise ConfigError(f"{where}: missing field {key!r}")
    if not isinstance(raw["objectives"], list) or not raw["objectives"]:
        raise ConfigError(f"{where}: objectives must list at least one {{metric: <method>.<metric>, mode: max|min}}")
    for i, o in enumerate(raw["objectives"]):
        if not isinstance(o, dict) or set(o) != {"metric", "mode"}:
            raise ConfigError(f"{where}: objectives[{i}] must be {{metric: <method>.<metric>, mode: max|min}}, "
                              f"got {o!r}")
    if not isinstance(raw["params"], dict) or not raw["params"]:
        raise ConfigError(f"{where}: params must map at least one dotted config key to a distribution")
    objectives = [Objective(**o) for o in raw.pop("objectives")]
    space = SearchSpace(objectives=objectives, **raw)
    command_line = _override_keys(overrides)
    if "methods" in command_line:  # the command line wins over the space here too
        space.methods = list(load_config(overrides=[o for o in overrides if o.startswith("methods=")]).methods)
    if not space.methods:
        raise ConfigError(f"{where}: methods is empty; list at least one of {list(METHODS)}")
    check_choice(space.search, field=f"{where}: search", allowed=SEARCHES)
    check_range(space.num_samples, field=f"{where}: num_samples", low=1)
    check_range(space.max_concurrent_trials, field=f"{where}: max_concurrent_trials", low=1)
    for i, method in enumerate(space.methods):
        check_choice(method, field=f"{where}: methods[{i}]", allowed=METHODS)
    for key, spec in space.params.items():
        if key in command_line:
            raise ConfigError(f"{where}: params.{key} is swept by the space and also set on the command line "
                              f"({key}={command_line[key]}); drop one of them")
        _check_distribution(spec, field=f"{where}: params.{key}", search=space.search)
    configs = candidate_configs(space=space, overrides=overrides, where=where)
    names = metric_names(configs[0])
    for i, o in enumerate(space.objectives):
        check_choice(o.mode, field=f"{where}: objectives[{i}].mode", allowed=("max", "min"))
        method = o.metric.split(".", 1)[0]
        check_choice(method, field=f"{where}: objectives[{i}].metric's method", allowed=space.methods)
        if o.metric not in names:
            close = difflib.get_close_matches(o.metric, sorted(names), n=3)
            raise ConfigError(f"{where}: objectives[{i}].metric={o.metric!r} is not a metric a trial reports"
                              + (f"; did you mean {' or '.join(map(repr, close))}?" if close else
                                 f"; e.g. {method}.accuracy, {method}.throughput_modelled"))
    return space, configs


def candidate_configs(*, space: SearchSpace, overrides: list[str] | tuple[str, ...], where: str = "") -> \
        list[EvaluateConfig]:
    """Trial configs that cover every value of every parameter (each on top of the others' first values), the
    first point first. Each value is tried alone first, so that a refused one is named with its parameter."""
    overrides = list(overrides)
    try:  # the space's base and the command line alone: a fault there is not a parameter's
        trial_config(base_overrides=overrides, space=space, params={})
    except ConfigError as err:
        raise ConfigError(f"{where or space.name} base / command line: {err}") from err
    for key, spec in space.params.items():
        for value in _candidates(spec):
            try:
                trial_config(base_overrides=overrides, space=space, params={key: value})
            except ConfigError as err:
                raise ConfigError(f"{where or space.name}: params.{key} value {value!r} is refused: {err}") from err
    first = {k: _candidates(v)[0] for k, v in space.params.items()}
    return [trial_config(base_overrides=overrides, space=space, params=first),
            *(trial_config(base_overrides=overrides, space=space, params={**first, key: value})
              for key, spec in space.params.items() for value in _candidates(spec)[1:])]


def _override_keys(overrides: list[str] | tuple[str, ...]) -> dict[str, str]:
    return dict(o.split("=", 1) for o in overrides if "=" in o)


def _check_distribution(spec: object, *, field: str, search: str) -> None:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{field} must be one of {{{', '.join(DISTRIBUTIONS)}: ...}}, got {spec!r}")
    ((kind, values),) = spec.items()
    check_choice(kind, field=field, allowed=DISTRIBUTIONS)
    if kind == "grid" and search != "grid":
        raise ConfigError(f"{field} is a grid but search={search!r}; use choice")
    if kind in ("grid", "choice"):
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{field}: {kind} must be a non-empty list of values, got {values!r}")
        return
    if not (isinstance(values, list) and len(values) == 2 and all(isinstance(v, int | float) for v in values)
            and values[0] < values[1]):
        raise ConfigError(f"{field}: {kind} must be [low, high] with low < high, got {values!r}")
    if kind == "loguniform" and values[0] <= 0:
        raise ConfigError(f"{field}: loguniform needs low > 0, got {values!r}")


def _candidates(spec: dict) -> list[object]:
    """Every value a distribution can produce that matters for checking: each listed value, or both ends of a
    range (randint's upper end is exclusive)."""
    ((kind, values),) = spec.items()
    if kind in ("grid", "choice"):
        return list(values)
    if kind == "randint":
        return [int(values[0]), int(values[1]) - 1]
    return [float(values[0]), float(values[1])]


def metric_names(cfg: EvaluateConfig) -> set[str]:
    """`<method>.<metric>` for every metric a trial of `cfg` reports, from the summaries of an empty run."""
    from uhlm_ray.experiments.evaluate import run_clock
    from uhlm_ray.measures.block_metrics import summarize_blocks

    summaries = summarize_methods(results={m: [] for m in cfg.methods}, cfg=cfg)
    if "block_hlm" in summaries:
        summaries["block_hlm"].update(summarize_blocks(results=[], clock=run_clock(results={}, cfg=cfg)))
    if "u_hlm" in summaries:
        summaries["u_hlm"].update(risk_at_threshold([], u_th=cfg.policy.u_th))
    if "cu_hlm" in summaries:
        summaries["cu_hlm"].update(operating_point([], budget=cfg.cu_hlm.risk_budget))
    if cfg.cell.method in summaries:  # cell figures of the cell's method (uhlm_ray/cell.py virtual_cell_figures)
        summaries[cfg.cell.method].update(dict.fromkeys(CELL_FIGURES, float("nan")))
    return {f"{method}.{key}" for method, summary in summaries.items() for key in summary}


def trial_config(*, base_overrides: list[str], space: SearchSpace, params: dict[str, object]) -> EvaluateConfig:
    """The evaluate config of one trial: defaults <- space base and methods <- command line <- the trial's
    parameters (the command line wins over the space, as the README says; it may not set a swept key)."""
    overrides = [*(f"{k}={_dot(v)}" for k, v in space.base.items()), f"methods={_dot(space.methods)}",
                 *base_overrides, *(f"{k}={_dot(v)}" for k, v in params.items())]
    return load_config(overrides=overrides)


def _dot(value: object) -> str:
    """A value as a dotlist override reads it (YAML's null is "null": str(None) would be the string "None")."""
    return json.dumps(value) if isinstance(value, list | dict) or value is None else str(value)


# --- shared work -----------------------------------------------------------------------------------------------

def method_key(*, cfg: EvaluateConfig, method: str, send_prob: float | None) -> str:
    """A hash of the settings a method's tokens and records depend on (never the channel)."""
    def section(name: str) -> object:
        return OmegaConf.to_container(OmegaConf.structured(getattr(cfg, name)))

    relevant: dict[str, object] = {"method": method, "model": section("model"), "data": section("data"),
                                   "metrics": section("metrics"), "payload": section("payload"),
                                   "seed": cfg.decode.seed, "max_new_tokens": cfg.decode.max_new_tokens,
                                   "scored": method in cfg.decode.evaluation_methods}
    if cfg.decode.sampling != "independent":  # (left out when independent, so that older stores keep their keys)
        relevant["sampling"] = cfg.decode.sampling
    if cfg.model.slm_head_vocab is not None:  # a trimmed head's full uploads are priced over its kept ids (session 19)
        relevant["dense_payload"] = "support"
    if method != "llm":  # u is recorded for every hybrid method (Fig. 3 needs it), so its settings matter
        relevant["uncertainty"] = section("uncertainty")
    if method == "u_hlm":
        relevant["u_th"] = cfg.policy.u_th
    if method == "cu_hlm":
        relevant["cu_hlm"] = section("cu_hlm")
    if method == "block_hlm":
        relevant["block"] = section("block")
    channel_aware = (method in ("u_hlm", "cu_hlm") and cfg.policy.channel_aware) or \
        (method == "block_hlm" and cfg.block.stop == "channel_aware")
    # the device's decode-time clock prices channel-aware decisions and sets when each round reads its fade
    decode_clock = dataclasses.asdict(DecodeClock.from_config(cfg.clock, measure=cfg.uncertainty.measure,
                                                              k=cfg.uncertainty.k))
    if cfg.downlink.enabled:  # the answer's way back is on that clock (left out when off, as in older stores' keys)
        decode_clock["downlink"] = section("downlink")
    else:
        decode_clock.pop("downlink")
    link = section("channel")
    if cfg.channel.model == "arq" and cfg.channel.arq_rate is None and has_time_axis(cfg.channel):
        link["arq_rate"] = "chosen on the process"  # not the independent-attempts rate of older stores
    if channel_aware:  # then the tokens depend on the channel too
        relevant["channel_aware"] = {"channel": link, "fit": [cfg.policy.fit_a, cfg.policy.fit_b],
                                     "clock": decode_clock}
    if cfg.channel.deadline_ms is not None and cfg.channel.deadline_mode == "fallback" and method != "llm":
        # a missed deadline keeps the draft: the channel, read on the decode-time clock, picks tokens
        relevant["deadline"] = {"channel": link, "clock": decode_clock}
    if method == "rand_hlm":  # the probability it draws with: matched to U-HLM's TR, configured, or 0.5
        chosen = send_prob if send_prob is not None else cfg.policy.send_prob
        relevant["send_prob"] = round(0.5 if chosen is None else chosen, 6)
    if cfg.clock.timing == "measured":  # its taus come from the stored passes, which must be solo (batch 1)
        relevant["batch_size"] = cfg.runtime.batch_size or 1
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def rechannel(*, results: list[PromptResult], channel: ChannelConfig, seed: int, clock: DecodeClock
              ) -> list[PromptResult]:
    """Copies with each sent round's SNR and uplink time recomputed for `channel`, from the round's own keyed fading
    draws (uhlm_ray/link/reprice.py), each prompt re-walked on the decode-time `clock` of the trial
    (`DecodeClock.for_run`), so they equal the records of a device decoding on that channel: decoded prompts are
    shared by trials that differ only in the channel."""
    return reprice_results(results=results, channel=channel, mean_snr=mean_snr(channel), seed=seed, clock=clock)


@dataclass
class TrialOutcome:
    summaries: dict[str, dict[str, float]]
    results: dict[str, list[PromptResult]]
    decoded_prompts: int  # (method, prompt) pairs this trial decoded itself
    reused_prompts: int  # ... and those it found in the shared store


class StoreView(Protocol):
    """One method key's part of a sweep's shared store: what `run_method` needs of a ResultStore."""

    def load(self, method: str) -> dict[tuple[int, int], PromptResult]: ...

    def append(self, result: PromptResult) -> None: ...


def local_store(shared_dir: Path) -> Callable[[str], StoreView]:
    """The shared store as folders on this machine, one per method key (a sweep's trials use a store on the
    driver's node instead: actors/sweep_store.py)."""
    return lambda name: ResultStore(shared_dir / name)


def evaluate_trial(
    *, pair: ModelPair, examples: list[Example], cfg: EvaluateConfig, encoder: Encoder,
    store_for: Callable[[str], StoreView], prefixes: PrefixCache | None = None,
    on_prompt: Callable[[PromptResult], None] | None = None,
    on_stored: Callable[[PromptResult], None] | None = None,
) -> TrialOutcome:
    """Every method of one trial, reusing what earlier trials of the sweep already decoded (`store_for` gives the
    shared store's part for a method key); `on_prompt` and `on_stored` as in `run_method`."""
    results: dict[str, list[PromptResult]] = {}
    decoded = reused = 0
    for method in ordered_methods(cfg.methods):
        send_prob = matched_send_prob(method=method, cfg=cfg, results=results)
        store = store_for(f"{method}-{method_key(cfg=cfg, method=method, send_prob=send_prob)}")
        stored = store.load(method) if cfg.resume else {}  # resume=false decodes again (the new lines win)
        found = sum((0, index) in stored for index in range(len(examples)))
        method_results = run_method(pair=pair, examples=examples, method=method, cfg=cfg, encoder=encoder,
                                    store=store, send_prob=send_prob, prefixes=prefixes, stored=stored,
                                    on_prompt=on_prompt, on_stored=on_stored)
        reused += found
        decoded += len(examples) - found
        decode_clock = DecodeClock.for_run(cfg, measure=method_measure(method=method, cfg=cfg),
                                           vocab_size=pair.vocab_size)
        results[method] = rechannel(results=method_results, channel=cfg.channel, seed=cfg.decode.seed,
                                    clock=decode_clock)
    calibration = run_calibration(pair=pair, prompt=examples[0].prompt, cfg=cfg) if examples else None
    summaries = summarize_methods(results=results, cfg=cfg, calibration=calibration, vocab_size=pair.vocab_size)
    if "u_hlm" in results:  # Theorem 1's risk for this trial's threshold, beside the measured rejection risk
        summaries["u_hlm"].update(risk_at_threshold([r for res in results["u_hlm"] for r in res.records],
                                                    u_th=cfg.policy.u_th))
    if "cu_hlm" in results:  # the threshold that would meet the risk budget on this trial's records
        summaries["cu_hlm"].update(operating_point([r for res in results["cu_hlm"] for r in res.records],
                                                   budget=cfg.cu_hlm.risk_budget))
    if cfg.cell.method in results:  # its prompts made into cfg.cell's cell, priced under cfg.cell.scheduler
        from uhlm_ray.experiments.evaluate import run_clock

        summaries[cfg.cell.method].update(virtual_cell_figures(
            results=results[cfg.cell.method], cfg=cfg,
            clock=run_clock(results=results, cfg=cfg, calibration=calibration)))
    return TrialOutcome(summaries=summaries, results=results, decoded_prompts=decoded, reused_prompts=reused)


# --- frontiers -----------------------------------------------------------------------------------------------

def pareto_front(points: list[dict], *, x: str, y: str, x_mode: str = "max") -> list[dict]:
    """Points not dominated when y is maximised and x maximised (throughput) or, with x_mode="min", minimised
    (energy per token); sorted by x."""
    check_choice(x_mode, field="x_mode", allowed=("max", "min"))
    sign = 1.0 if x_mode == "max" else -1.0
    valid = [p for p in points if np.isfinite(p.get(x, np.nan)) and np.isfinite(p.get(y, np.nan))]
    front = [p for p in valid
             if not any(sign * q[x] >= sign * p[x] and q[y] >= p[y] and (q[x] != p[x] or q[y] > p[y])
                        for q in valid)]
    return sorted(front, key=lambda p: p[x])
