"""Solo-pass costs for the modelled clock, measured once per model pair and machine and cached.

The modelled clock is the clock of ONE device (eq. 4): tau_SLM, tau_LLM, the block method's LLM pass by its length
and the uncertainty measure's cost must come from passes of one sequence, never from the batched passes a trial
uses to decode many prompts at once. They come from the configuration (`clock.tau_slm_ms`, ...) or from here: a
few solo passes on the first prompt, medians of `repeats`, written to `$UHLM_RAY_CACHE/calibration/<key>.json`. The
key names the models, their dtype, the device, torch's threads and the processor, so another machine (or a
sweep trial on another node) calibrates itself, and two runs of the same command on one machine share the same
figures: the modelled clock is deterministic.
"""

from __future__ import annotations

import hashlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from uhlm_ray.config import EvaluateConfig
from uhlm_ray.decode import perturbed_passes
from uhlm_ray.device.decoder import measure_uncertainty, method_measure
from uhlm_ray.models.batch_invariance import single_stream
from uhlm_ray.models.chat import chat_prompt_ids
from uhlm_ray.models.embedded import cache_root
from uhlm_ray.models.loading import LoadedModel, ModelPair
from uhlm_ray.models.session import CausalSession

CALIBRATION_VERSION = 1  # bump when what is measured changes, so old cache files are not reused
WARMUP = 2  # passes dropped before timing (allocator and kernel warm-up)


@dataclass(frozen=True)
class Calibration:
    """Medians of solo passes, in seconds. `llm_pass_s[k - 1]` is one LLM pass over k new tokens."""

    key: str
    machine: str
    tau_slm_s: float
    tau_llm_s: float
    llm_pass_s: tuple[float, ...]
    tau_measure_s: dict[str, float]  # one measurement of u by each measure the run uses, its extra passes included

    def to_dict(self) -> dict:
        out = asdict(self)
        out["llm_pass_s"] = list(self.llm_pass_s)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        return cls(**{**data, "llm_pass_s": tuple(data["llm_pass_s"])})


def machine_name(device: torch.device) -> str:
    """What a timing depends on besides the models: the processor (or GPU) and torch's threads."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return f"cpu:{cpu}:{torch.get_num_threads()} threads"


def _model_identity(model: LoadedModel) -> dict:
    params = list(model.model.parameters())
    return {"source": model.source, "dtype": str(params[0].dtype), "params": sum(p.numel() for p in params),
            "linear_backend": model.linear_backend}


def measures_used(cfg: EvaluateConfig) -> list[str]:
    """The uncertainty measures the run's methods put on the modelled clock."""
    return sorted({method_measure(method=m, cfg=cfg) for m in cfg.methods if m != "llm"})


def max_pass_tokens(cfg: EvaluateConfig) -> int:
    """The longest LLM pass priced from the table: a block of max_drafts plus two catch-up tokens."""
    return cfg.block.max_drafts + 2


def calibration_key(*, pair: ModelPair, cfg: EvaluateConfig) -> tuple[str, str]:
    device = next(pair.slm.model.parameters()).device
    machine = machine_name(device)
    parts = {"version": CALIBRATION_VERSION, "slm": _model_identity(pair.slm), "llm": _model_identity(pair.llm),
             "machine": machine, "torch": torch.__version__, "measures": measures_used(cfg),
             "k": cfg.uncertainty.k, "max_pass": max_pass_tokens(cfg)}
    if cfg.model.slm_head_vocab is not None:  # a trimmed head is a cheaper SLM step (absent: the keys made before)
        parts["slm_head_vocab"] = cfg.model.slm_head_vocab
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16], machine


def median_seconds(fn: Callable[[], object], *, repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of `repeats` calls of `fn`, after `warmup` calls (the first ones pack weights and pick
    kernels); what the benches time a product or a pass with."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _median_forward(session: CausalSession, *, tokens: list[int], repeats: int) -> float:
    """Median seconds of `repeats` solo passes, each over len(tokens) new tokens."""
    times = []
    for i in range(WARMUP + repeats):
        for token in tokens:
            session.append(token)
        session.next_logits()
        if i >= WARMUP:
            times.append(session.timing.forward_s)
    return statistics.median(times)


def _measure_seconds(*, pair: ModelPair, prompt_ids: list[int], cfg: EvaluateConfig, measure: str,
                     repeats: int) -> float:
    """One measurement of u by `measure` on a solo SLM session, with the K extra passes it needs."""
    session = CausalSession(model=pair.slm, prompt_ids=prompt_ids)
    paraphrased = [CausalSession(model=pair.slm, prompt_ids=prompt_ids) for _ in range(cfg.uncertainty.k)] \
        if measure == "prompt_perturbation" else []  # K prompts of the same length stand in for the paraphrases
    perturbed = perturbed_passes(measure=measure, session=session, paraphrased=paraphrased, cfg=cfg)
    rng = np.random.default_rng(0)
    times = []
    for i in range(WARMUP + repeats):
        logits = session.next_logits()
        probs = torch.softmax(logits, dim=-1)
        draft = int(torch.argmax(probs))
        start = time.perf_counter()
        measure_uncertainty(logits=logits, probs=probs, draft=draft, cfg=cfg, rng=rng, perturbed=perturbed,
                            measure=measure)
        if i >= WARMUP:
            times.append(time.perf_counter() - start)
        for s in (session, *paraphrased):  # the paraphrased sessions' passes run inside the next measurement
            s.append(draft)
    return statistics.median(times)


def measure_calibration(*, pair: ModelPair, prompt_ids: list[int], cfg: EvaluateConfig, repeats: int = 5
                        ) -> Calibration:
    """Time solo passes now (no prefix cache: every pass is computed, none replayed), as one device runs them: with
    the fast one-row kernel, whatever batch invariance the trial's lockstep uses (`single_stream`)."""
    key, machine = calibration_key(pair=pair, cfg=cfg)
    filler = list(prompt_ids[-max_pass_tokens(cfg):])  # real tokens, so that no pass meets an unusual input
    with single_stream(pair.slm.model, pair.llm.model):
        slm = CausalSession(model=pair.slm, prompt_ids=prompt_ids)
        tau_slm = _median_forward(slm, tokens=filler[:1], repeats=repeats)
        llm = CausalSession(model=pair.llm, prompt_ids=prompt_ids)
        passes = tuple(_median_forward(llm, tokens=(filler * max_pass_tokens(cfg))[:k], repeats=repeats)
                       for k in range(1, max_pass_tokens(cfg) + 1))
        measures = {m: _measure_seconds(pair=pair, prompt_ids=prompt_ids, cfg=cfg, measure=m, repeats=repeats)
                    for m in measures_used(cfg)}
    return Calibration(key=key, machine=machine, tau_slm_s=tau_slm, tau_llm_s=passes[0], llm_pass_s=passes,
                       tau_measure_s=measures)


def calibrate(*, pair: ModelPair, prompt_ids: list[int], cfg: EvaluateConfig, folder: Path | None = None
              ) -> Calibration:
    """The cached calibration of this pair on this machine, measured first if there is none (one process at a time:
    concurrent sweep trials wait for the first and read its file)."""
    key, _ = calibration_key(pair=pair, cfg=cfg)
    folder = folder or cache_root() / "calibration"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.json"
    with FileLock(str(path) + ".lock"):
        if path.is_file():
            try:
                return Calibration.from_dict(json.loads(path.read_text()))
            except (json.JSONDecodeError, TypeError, KeyError):
                pass  # a torn or older file is measured again
        calibration = measure_calibration(pair=pair, prompt_ids=prompt_ids, cfg=cfg)
        path.write_text(json.dumps(calibration.to_dict(), indent=1))
        return calibration


def run_calibration(*, pair: ModelPair, prompt: str, cfg: EvaluateConfig) -> Calibration | None:
    """The calibration a run's modelled clock uses under clock.timing='calibrated' (None: 'measured'), timed on
    the run's first prompt."""
    if cfg.clock.timing == "measured":
        return None
    return calibrate(pair=pair, prompt_ids=chat_prompt_ids(tokenizer=pair.tokenizer, prompt=prompt), cfg=cfg)
