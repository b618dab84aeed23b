"""Run several methods over a prompt set, storing each prompt's result as soon as it is done (resumable).

Results go to `<output_dir>/<run key>/<method>.jsonl`, one line per prompt. The run key hashes every setting that
changes what is decoded, so a rerun with the same settings skips finished prompts and a changed setting starts a
fresh folder instead of mixing results.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock
from omegaconf import OmegaConf

from uhlm_ray.config import BATCH_SIZE_DEFAULTS, EvaluateConfig
from uhlm_ray.decode import DeviceOutcome, decode_batch, device_job, is_exact, make_policy
from uhlm_ray.device.decoder import method_measure
from uhlm_ray.device.paraphrase import paraphrase_prompt_ids
from uhlm_ray.experiments.calibration import Calibration
from uhlm_ray.experiments.datasets import Example
from uhlm_ray.link.downlink import downlink_link, model_vocab_size
from uhlm_ray.link.energy import EXTRA_PASS_MEASURES, energy_model
from uhlm_ray.measures.agreement import agreement_summary
from uhlm_ray.measures.clock import ModelledClock, measured_clock
from uhlm_ray.measures.intervals import method_intervals, paired_intervals
from uhlm_ray.measures.metrics import rewalked, summarize
from uhlm_ray.measures.similarity import Encoder, response_similarity
from uhlm_ray.models.chat import chat_prompt_ids
from uhlm_ray.models.loading import ModelPair
from uhlm_ray.models.prefix_cache import PrefixCache, prefix_cache
from uhlm_ray.records import PromptResult
from uhlm_ray.validation import ConfigError

DECODE_SECTIONS = ("model", "uncertainty", "policy", "cu_hlm", "block", "channel", "payload", "decode", "data",
                   "metrics")
# sections that change no decoded token or stored record (the modelled clock is applied when summarising; the cell
# and reproduction jobs add their own section to the key); a new section must join one of the two lists. Exceptions,
# which the shared stores' `method_key` (experiments/sweep.py) names: the decode-time clock of channel-aware and
# deadline-fallback runs, and the batch size of clock.timing=measured
NON_DECODE_SECTIONS = ("clock", "tracking", "cell", "runtime", "reproduce", "downlink", "energy")


def run_key(cfg: EvaluateConfig, *, sections: tuple[str, ...] = DECODE_SECTIONS) -> str:
    """A short hash of the settings that determine the decoded tokens and their scores."""
    relevant = {k: OmegaConf.to_container(OmegaConf.structured(getattr(cfg, k))) for k in sections}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


class ResultStore:
    """Append-only JSONL per method; a line is written the moment a prompt finishes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _file(self, method: str) -> Path:
        return self.folder / f"{method}.jsonl"

    def load(self, method: str) -> dict[tuple[int, int], PromptResult]:
        """Finished prompts by (device index, prompt index); a key written twice counts once."""
        done: dict[tuple[int, int], PromptResult] = {}
        if self._file(method).is_file():
            for line in self._file(method).read_text().splitlines():
                if line.strip():  # a torn last line from an interrupted write is skipped and redone
                    try:
                        result = PromptResult.from_dict(json.loads(line))
                    except (json.JSONDecodeError, TypeError):
                        continue
                    done[(result.device_index, result.prompt_index)] = result
        return done

    def append(self, result: PromptResult) -> None:
        # concurrent sweep trials may share a store: a lock keeps each line whole
        with FileLock(str(self._file(result.method)) + ".lock"), self._file(result.method).open("a") as f:
            f.write(json.dumps(result.to_dict()) + "\n")
            f.flush()


def ordered_methods(methods: list[str]) -> list[str]:
    """U-HLM before Rand-HLM, so that Rand-HLM can match U-HLM's transmission rate."""
    order = ["llm", "slm", "hlm", "u_hlm", "rand_hlm", "cu_hlm", "block_hlm"]
    return sorted(methods, key=order.index)


def transmission_rate(results: list[PromptResult]) -> float:
    records = [r for res in results for r in res.records]
    return sum(r.sent for r in records) / len(records) if records else math.nan


def batch_size(*, cfg: EvaluateConfig, pair: ModelPair) -> int:
    """Prompts decoded in lockstep: `runtime.batch_size`, else 1 for clock.timing='measured' (its taus come from
    the run's own passes), else the default of the device the SLM is on."""
    if cfg.runtime.batch_size is not None:
        return cfg.runtime.batch_size
    if cfg.clock.timing == "measured":
        return 1
    device = next(pair.slm.model.parameters()).device.type
    return BATCH_SIZE_DEFAULTS.get(device, BATCH_SIZE_DEFAULTS["cpu"])


class SharedTime:
    """Each prompt's part of a lockstep's wall time, by processor sharing: the time between two finishes is split
    equally among the prompts decoding then, so a prompt's share is its own cost (not whatever happened since the
    previous finish) and the shares add up to the wall time; a bootstrap over prompts then resamples costs, not the
    batch's finish order. `count` prompts decode `width` at a time, each finished one's place going to the next
    (decode.Slots), so prompt j starts at the (j - width + 1)-th finish."""

    def __init__(self, *, count: int, width: int, now: float) -> None:
        self.count, self.width, self.last = count, width, now
        self.given = [0.0]  # given[k]: the time each decoding prompt had been given by the k-th finish

    def finish(self, j: int, *, now: float) -> float:
        """Prompt j has finished at `now`: its share."""
        decoding = min(self.width, self.count - (len(self.given) - 1))  # since the previous finish
        self.given.append(self.given[-1] + (now - self.last) / decoding)
        self.last = now
        return self.given[-1] - self.given[max(j - self.width + 1, 0)]


def run_method(
    *,
    pair: ModelPair,
    examples: list[Example],
    method: str,
    cfg: EvaluateConfig,
    encoder: Encoder | None,
    store: ResultStore | None,
    send_prob: float | None = None,
    on_prompt: Callable[[PromptResult], None] | None = None,
    prefixes: PrefixCache | None = None,
    stored: dict[tuple[int, int], PromptResult] | None = None,
    on_stored: Callable[[PromptResult], None] | None = None,
) -> list[PromptResult]:
    """Decode every example with one method, skipping those the store already holds (`stored`: the caller's
    `store.load(method)`, when it has read it already). The rest are decoded in lockstep, `batch_size` at a time,
    a finished prompt's place going to the next at once, and each result is stored the moment its prompt finishes.
    Without an encoder the responses are not scored.
    `on_prompt` hears of every result; `on_stored`, when given, hears of the stored ones instead (so that a progress
    bar's rate counts only what is decoded now)."""
    if stored is None:
        stored = store.load(method) if store is not None and cfg.resume else {}
    policy = make_policy(method=method, cfg=cfg, send_prob=send_prob)
    results: dict[int, PromptResult] = {i: stored[(0, i)] for i in range(len(examples)) if (0, i) in stored}
    pending = [i for i in range(len(examples)) if i not in results]
    report_stored = on_stored or on_prompt
    if report_stored is not None:  # what an earlier run stored counts as done now
        for i in sorted(results):
            report_stored(results[i])
    size = batch_size(cfg=cfg, pair=pair)
    jobs = [device_job(
        prompt_ids=chat_prompt_ids(tokenizer=pair.tokenizer, prompt=examples[i].prompt), prompt_index=i,
        method=method, cfg=cfg, policy=policy,
        paraphrase_ids=paraphrase_prompt_ids(tokenizer=pair.tokenizer, prompt=examples[i].prompt, cfg=cfg,
                                             prompt_index=i) if method != "llm" else None,  # LLM: no u
    ) for i in pending]
    sharing = SharedTime(count=len(pending), width=size, now=time.perf_counter())

    def finished(j: int, outcome: DeviceOutcome) -> None:
        index, example = pending[j], examples[pending[j]]
        response = pair.tokenizer.decode(outcome.tokens, skip_special_tokens=True)
        similarity = float(response_similarity(encoder=encoder, responses=[response],
                                               references=[example.reference])[0]) if encoder else math.nan
        result = PromptResult(
            method=method, prompt_index=index, example_id=example.id, reference=example.reference,
            response=response, tokens=outcome.tokens, stop_reason=outcome.stop_reason,
            prompt_tokens=len(jobs[j].prompt_ids), prefill_s=outcome.prefill_s, records=outcome.records,
            similarity=similarity, batch_size=min(size, len(pending)),
            decode_s=sharing.finish(j, now=time.perf_counter()),
        )
        if store is not None:
            store.append(result)
        results[index] = result
        if on_prompt is not None:
            on_prompt(result)

    if jobs:
        decode_batch(pair=pair, jobs=jobs, cfg=cfg, prefixes=prefixes, on_done=finished, width=size)
    return [results[i] for i in range(len(examples))]


def matched_send_prob(*, method: str, cfg: EvaluateConfig, results: dict[str, list[PromptResult]]) -> float | None:
    """Rand-HLM's send probability when it is not configured: the TR U-HLM measured in the same run."""
    if method == "rand_hlm" and cfg.policy.send_prob is None and "u_hlm" in results:
        return transmission_rate(results["u_hlm"])
    return None


def evaluate_methods(
    *,
    pair: ModelPair,
    examples: list[Example],
    cfg: EvaluateConfig,
    encoder: Encoder,
    store: ResultStore | None,
    on_prompt: Callable[[PromptResult], None] | None = None,
) -> dict[str, list[PromptResult]]:
    results: dict[str, list[PromptResult]] = {}
    prefixes = prefix_cache(cfg.runtime)  # every method drafts the same prompts: shared passes are computed once
    for method in ordered_methods(cfg.methods):
        send_prob = matched_send_prob(method=method, cfg=cfg, results=results)
        results[method] = run_method(
            pair=pair, examples=examples, method=method, cfg=cfg, encoder=encoder, store=store,
            send_prob=send_prob, on_prompt=on_prompt, prefixes=prefixes,
        )
    return results


def run_clock(*, results: dict[str, list[PromptResult]], cfg: EvaluateConfig,
              calibration: Calibration | None = None, vocab_size: int | None = None) -> ModelledClock:
    """The modelled clock shared by every method of a run, the clock of one device: configured times, else the
    calibration's solo passes (the jobs pass one under clock.timing='calibrated'), else medians measured in the
    run's records, which must then come from batch-1 decoding. A block round's LLM pass is priced by its length
    as calibrated (or as measured), scaled to the clock's tau_LLM, or flat (`clock.llm_pass`). The clock also carries
    the downlink (`downlink`, ids of ceil(log2 `vocab_size`) bits; None: |V| from the pair's config.json) and the
    energy coefficients (`energy`)."""
    records = [r for rs in results.values() for res in rs for r in res.records]
    if calibration is None:  # a caller without a calibration: the records' own medians, batch 1 only
        if any(res.batch_size > 1 for rs in results.values() for res in rs) and \
                (cfg.clock.tau_slm_ms is None or cfg.clock.tau_llm_ms is None):
            raise ConfigError("the modelled clock cannot take tau from batched passes: pass the run's calibration "
                              "(experiments/calibration.py run_calibration), decode with runtime.batch_size=1, or "
                              "configure clock.tau_slm_ms and clock.tau_llm_ms")
        measured = measured_clock(records)
        tau_slm, tau_llm, one_token, table = measured.tau_slm, measured.tau_llm, measured.tau_llm, ()
        tau_measure = {}
    else:
        tau_slm, tau_llm, one_token = calibration.tau_slm_s, calibration.tau_llm_s, calibration.tau_llm_s
        table = calibration.llm_pass_s
        tau_measure = {m: calibration.tau_measure_s[method_measure(method=m, cfg=cfg)]
                       for m in cfg.methods if m != "llm" and method_measure(method=m, cfg=cfg)
                       in calibration.tau_measure_s}
    if cfg.clock.tau_measure_ms is not None:
        tau_measure = {m: cfg.clock.tau_measure_ms / 1e3 for m in cfg.methods if m != "llm"}
    tau_slm = cfg.clock.tau_slm_ms / 1e3 if cfg.clock.tau_slm_ms is not None else tau_slm
    tau_llm = cfg.clock.tau_llm_ms / 1e3 if cfg.clock.tau_llm_ms is not None else tau_llm
    if vocab_size is None:  # the downlink's ids: |V| from the pair's config.json (nothing to price without records)
        vocab_size = model_vocab_size(cfg.model) if records else 2
    # the device's energy: MC dropout and prompt perturbation run K more SLM forwards per measurement
    extra_passes = {m: cfg.uncertainty.k for m in cfg.methods
                    if m != "llm" and method_measure(method=m, cfg=cfg) in EXTRA_PASS_MEASURES}
    return ModelledClock(
        tau_slm=tau_slm, tau_llm=tau_llm, llm_pass=cfg.clock.llm_pass, flat_pass_tokens=cfg.clock.flat_pass_tokens,
        llm_scale=tau_llm / one_token if math.isfinite(one_token) and one_token > 0 else 1.0, llm_pass_s=table,
        tau_measure=tau_measure,
        downlink=downlink_link(downlink=cfg.downlink, channel=cfg.channel, vocab_size=vocab_size),
        energy=energy_model(energy=cfg.energy, channel=cfg.channel, extra_passes=extra_passes),
    )


def ratio(value: float, reference: float) -> float:
    """value / reference; NaN where the reference is zero or not a number (a zero throughput must not end a run
    whose results are all computed)."""
    return value / reference if reference and math.isfinite(reference) else math.nan


def summarize_methods(*, results: dict[str, list[PromptResult]], cfg: EvaluateConfig,
                      calibration: Calibration | None = None, vocab_size: int | None = None
                      ) -> dict[str, dict[str, float]]:
    clock = run_clock(results=results, cfg=cfg, calibration=calibration, vocab_size=vocab_size)
    # on this clock once, so that every summary and its interval read the same priced records
    results = {method: rewalked(results=rs, clock=clock, channel=cfg.channel, seed=cfg.decode.seed)
               for method, rs in results.items()}
    summaries = {
        method: summarize(results=rs, clock=clock, channel=cfg.channel, seed=cfg.decode.seed,
                          snr_sweep_db=cfg.clock.snr_sweep_db, rewalk=False)
        for method, rs in results.items()
    }
    for method, s in summaries.items():
        s["clock_calibrated"] = float(calibration is not None)  # the clock's times: 1 calibrated solo passes
        s["all_verified"] = s["exact"]  # what this run did: no token committed unverified
        s["exact"] = float(is_exact(method=method, cfg=cfg))  # what the configuration guarantees
        s["coupled"] = float(cfg.decode.sampling == "coupled")
        if cfg.decode.sampling == "coupled" and method != "llm":  # where it leaves the LLM alone's response
            s.update(agreement_summary(results=results[method], reference=results.get("llm")))
    for method, s in summaries.items():  # 95% bootstrap intervals over prompts
        s.update(method_intervals(results=results[method], clock=clock, seed=cfg.decode.seed))
    for base in ("llm", "hlm"):
        if base in summaries:
            reference = summaries[base]
            for method, s in summaries.items():
                for key in (["accuracy"] if base == "llm" else []) + ["throughput_modelled", "throughput_wall",
                                                                      "throughput_experiment",
                                                                      "energy_device_j_per_token"]:
                    s[f"{key}_vs_{base}"] = ratio(s.get(key, math.nan), reference.get(key, math.nan))
                if method != base:  # paired on the same prompts
                    s.update(paired_intervals(results=results[method], reference=results[base], clock=clock,
                                              name=base, seed=cfg.decode.seed))
    return summaries


def format_value(value: float | None, fmt: str) -> str:
    """A table cell: "-" for a metric that does not apply (None or NaN)."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return "-" if missing else fmt.format(value)


def format_with_interval(summary: dict[str, float], *, key: str, fmt: str) -> str:
    """A table cell with its 95% interval when the summary has one: "0.512 [0.431, 0.598]"."""
    cell = format_value(summary.get(key), fmt)
    low, high = summary.get(f"{key}_ci_low"), summary.get(f"{key}_ci_high")
    if cell == "-" or low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return cell
    return f"{cell} [{fmt.format(low)}, {fmt.format(high)}]"


METHOD_LABELS = {"llm": "LLM", "slm": "SLM", "hlm": "HLM", "rand_hlm": "Rand-HLM", "u_hlm": "U-HLM",
                 "cu_hlm": "CU-HLM", "block_hlm": "Block-HLM"}


def format_table(summaries: dict[str, dict[str, float]]) -> str:
    """A Markdown table in the spirit of the paper's Table I and Fig. 6, each figure with its 95% bootstrap
    interval over prompts where it has one (comparisons with the LLM paired on the same prompts)."""
    columns = [
        ("accuracy", "cos sim", "{:.4f}"),
        ("accuracy_vs_llm", "vs LLM", "{:.2%}"),
        ("exact", "exact", "{:.0f}"),
        ("transmission_rate", "TR", "{:.2%}"),
        ("true_skip_rate", "TSR", "{:.2%}"),
        ("acceptance_rate", "accept", "{:.2%}"),
        ("rejection_risk", "risk", "{:.4f}"),
        ("compression_rate", "compr.", "{:.2%}"),
        ("throughput_modelled", "tok/s model", "{:.3f}"),
        ("throughput_modelled_vs_llm", "x LLM", "{:.2f}"),
        ("throughput_modelled_vs_hlm", "x HLM", "{:.2f}"),
        ("throughput_experiment", "tok/s exp.", "{:.2f}"),
        ("throughput_wall", "tok/s wall", "{:.2f}"),
        ("throughput_wall_vs_llm", "x LLM", "{:.2f}"),
        ("num_tokens", "tokens", "{:.0f}"),
    ]
    header = "| method | " + " | ".join(label for _, label, _ in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    lines = [header, rule]
    for method, s in summaries.items():
        cells = [format_with_interval(s, key=key, fmt=fmt) for key, _, fmt in columns]
        lines.append(f"| {METHOD_LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
