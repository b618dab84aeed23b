"""Energy of a method's run on the modelled clock: each prompt's rounds laid end to end (`modelled_seconds`), the
radio's activities placed in them, and the summaries with their per-prompt parts for bootstrap intervals.

The model, its parts and its coefficients are described in `uhlm_ray/link/energy.py` and the README ("Energy and the
downlink").
"""

from __future__ import annotations

import math

from uhlm_ray.link.downlink import receive_seconds
from uhlm_ray.link.energy import DEVICE_PARTS, Energy, EnergyModel
from uhlm_ray.measures.clock import ModelledClock, modelled_seconds
from uhlm_ray.records import BlockRecord, PromptResult, RoundRecord


def measure_joules(*, record: RoundRecord | BlockRecord, clock: ModelledClock, model: EnergyModel) -> float:
    """The uncertainty measure's energy in a round that used it: K forwards per measurement (MC dropout, prompt
    perturbation), else the SLM's power for the measure's seconds on the clock."""
    seconds = clock.measure_seconds(record)
    if seconds <= 0.0:
        return 0.0
    k = model.extra_passes.get(record.method, 0)
    if k:
        drafts = len(record.drafts) if isinstance(record, BlockRecord) else 1
        return k * model.forward_j(tau_slm=clock.tau_slm) * drafts
    return model.compute_w(tau_slm=clock.tau_slm) * seconds


def verified_tokens(record: RoundRecord | BlockRecord) -> int:
    """Tokens of this round the LLM checked or chose."""
    if record.method == "llm":
        return 1
    if not record.sent:
        return 0
    if isinstance(record, BlockRecord):
        return sum(record.verified[:record.num_accepted]) + int(record.recovered or record.bonus)
    return 1


def llm_pass_tokens(record: RoundRecord | BlockRecord) -> int:
    """Tokens of the round's LLM pass (0 when it had none)."""
    if record.method == "llm":
        return 1
    if not record.sent:
        return 0
    return record.llm_pass_tokens if isinstance(record, BlockRecord) else max(record.catch_up_tokens, 1)


def _llm_seconds(record: RoundRecord | BlockRecord, clock: ModelledClock) -> float:
    if isinstance(record, BlockRecord):
        return clock.llm_pass_seconds(measured_s=record.tau_llm_s, tokens=record.llm_pass_tokens)
    return clock.tau_llm


def prompt_energy(*, records: list[RoundRecord | BlockRecord], clock: ModelledClock, model: EnergyModel) -> Energy:
    """One session's energy, its rounds end to end on the modelled clock (module docstring)."""
    e = Energy()
    now = 0.0
    last_end: float | None = None  # end of the radio's last activity; None: idle since the session began

    def activity(start: float, length: float) -> None:
        nonlocal last_end
        if last_end is None:
            e.promotion += model.promotion_j
        else:
            gap = max(start - last_end, 0.0)
            if gap > model.tail_s:  # the tail ran out: the radio went idle and must be promoted again
                e.tail += model.tail_w * model.tail_s
                e.promotion += model.promotion_j
            else:  # a tail cut short by this activity counts only up to it
                e.tail += model.tail_w * gap
        last_end = max(start + length, last_end if last_end is not None else -math.inf)

    for r in records:
        e.rounds += 1
        duration = modelled_seconds(record=r, clock=clock)
        e.bs += model.bs_j_per_token * llm_pass_tokens(r)
        e.verified_tokens += verified_tokens(r)
        if r.method == "llm":  # the LLM alone's token streams down as it is generated
            rx = receive_seconds(record=r, link=clock.downlink)
            if rx > 0:
                activity(now + duration, rx)
                e.rx += model.rx_j(seconds=rx, rate_bps=clock.downlink.rate_bps)
            now += duration
            continue
        steps = len(r.drafts) if isinstance(r, BlockRecord) else 1
        e.compute += steps * model.forward_j(tau_slm=clock.tau_slm)
        e.measure += measure_joules(record=r, clock=clock, model=model)
        drafted = now + steps * clock.tau_slm + clock.measure_seconds(r)
        if r.sent or r.deadline_fallback:
            up, air = r.tau_up_s, min(r.tau_air_s, r.tau_up_s)
            activity(drafted, up)
            e.tx += model.tx_j(air_s=air)
            e.wait += model.radio_active_w * (up - air)
            rx = receive_seconds(record=r, link=clock.downlink) if r.sent else 0.0
            if rx > 0:
                activity(drafted + up + _llm_seconds(r, clock), rx)
                e.rx += model.rx_j(seconds=rx, rate_bps=clock.downlink.rate_bps)
        now += duration
    if last_end is not None:  # the session's last tail runs in full
        e.tail += model.tail_w * model.tail_s
    return e


def result_energy(*, res: PromptResult, clock: ModelledClock) -> Energy | None:
    """A prompt's energy, or None when the clock carries no energy model."""
    if clock.energy is None:
        return None
    return prompt_energy(records=res.records, clock=clock, model=clock.energy)


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


ENERGY_METRICS = ("energy_device_j_per_token", "energy_device_j_per_round", "energy_bs_j_per_verified_token",
                  *(f"energy_{part}_j_per_token" for part in DEVICE_PARTS))


def energy_parts(*, energy: Energy, tokens: float) -> dict[str, tuple[float, float]]:
    """Numerator and denominator of every energy metric (a ratio of sums over prompts, as intervals.py needs)."""
    parts = {
        "energy_device_j_per_token": (energy.device, tokens),
        "energy_device_j_per_round": (energy.device, float(energy.rounds)),
        "energy_bs_j_per_verified_token": (energy.bs, float(energy.verified_tokens)) if energy.verified_tokens
        else (math.nan, math.nan),
    }
    for part in DEVICE_PARTS:
        parts[f"energy_{part}_j_per_token"] = (getattr(energy, part), tokens)
    return parts


def energy_summary(*, results: list[PromptResult], clock: ModelledClock, tokens: float) -> dict[str, float]:
    """The energy metrics of a method's run (NaN without an energy model on the clock)."""
    if clock.energy is None:
        return {name: math.nan for name in ENERGY_METRICS}
    total = sum((prompt_energy(records=res.records, clock=clock, model=clock.energy) for res in results), Energy())
    out = {name: _ratio(num, den) for name, (num, den) in energy_parts(energy=total, tokens=tokens).items()}
    out["energy_device_j"] = total.device
    out["energy_bs_j"] = total.bs
    return out
