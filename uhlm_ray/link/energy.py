"""Device energy per round and per token, and base-station energy per verified token, on the modelled clock.

Each prompt is one session of one device. Its rounds are laid end to end on the modelled clock (`modelled_seconds`),
and within a round the device drafts (n SLM forwards and the uncertainty measure), uploads, waits for the LLM's pass
and receives the answer (`link/downlink.py`). The device's energy has these parts (`Energy`), which add up to its
total:

- compute: each SLM forward costs `energy.slm_j_per_forward` (or `energy.slm_power_w` x tau_SLM when that is set);
- measure: the uncertainty measure, where the policy or stop rule uses it: MC dropout and prompt perturbation run K
  more SLM forwards per measurement (K = `uncertainty.k`); temperature perturbation's vectorised sampling (and the
  entropy or confidence read off x) costs the SLM's power for its own seconds on the clock;
- tx: the radio while on air, (p / eta_PA + P_active) x tau_air, with p the channel's transmit power, eta_PA the power
  amplifier's efficiency and P_active the modem's power while it sends or receives (Huang et al.'s beta);
- wait: the rest of an upload (scheduling request and grant, ARQ's NACK round trips, inversion's waits in a fade),
  when the modem is connected and busy but not on air, at P_active;
- rx: receiving the downlink, (P_active + alpha_d R_d) x its seconds (Huang et al.'s downlink model, R_d in Mbit/s);
- tail: after the radio's last activity it stays in RRC_CONNECTED for the tail time at the tail power (Huang et al.,
  MobiSys 2012). A tail cut short by the next activity counts only up to it; the session's last tail runs in full;
- promotion: an activity after a full tail (or the session's first) pays the RRC_IDLE -> RRC_CONNECTED promotion,
  P_pro x T_pro (its delay is not on the modelled clock, whose uplink overhead is `channel.upload_overhead_ms`).

The base station's energy is `energy.bs_j_per_token` per token of each LLM pass (a verification pass over catch-up
tokens and drafts, or the LLM alone's one token), reported per verified token: tokens the LLM checked or chose
(accepted drafts, recovered, bonus and resampled tokens, the LLM alone's own). Its radio is left out.

The SLM alone never uses the radio: its energy is compute only. Every coefficient's default and its source are in the
README ("Energy and the downlink"). The coefficients and the per-activity formulas are here; the walk over a session's
rounds on the modelled clock and the summaries are in `uhlm_ray/measures/energy.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from uhlm_ray.config import ChannelConfig, EnergyConfig
from uhlm_ray.snr import dbm_to_watts

# measures that run K more SLM forwards per measurement; the others are vectorised or read off x
EXTRA_PASS_MEASURES = ("mc_dropout", "prompt_perturbation")
DEVICE_PARTS = ("compute", "measure", "tx", "wait", "rx", "tail", "promotion")


@dataclass(frozen=True)
class EnergyModel:
    """The coefficients of a run (W, J, s), resolved from `EnergyConfig` and the channel's transmit power."""

    slm_j_per_forward: float
    slm_power_w: float | None
    pa_w: float  # p / eta_PA
    radio_active_w: float
    rx_w_per_mbps: float
    tail_w: float
    tail_s: float
    promotion_j: float
    bs_j_per_token: float
    extra_passes: Mapping[str, int] = field(default_factory=dict)  # method -> K SLM forwards per measurement

    def forward_j(self, *, tau_slm: float) -> float:
        """One SLM forward: configured joules, or the SLM's power x tau_SLM (of the modelled clock)."""
        return self.slm_j_per_forward if self.slm_power_w is None else self.slm_power_w * tau_slm

    def compute_w(self, *, tau_slm: float) -> float:
        """The SLM's power while it computes, for work priced by its seconds (a vectorised measure)."""
        if self.slm_power_w is not None:
            return self.slm_power_w
        return self.slm_j_per_forward / tau_slm if tau_slm > 0 else 0.0

    def tx_j(self, *, air_s: float) -> float:
        """On air: the PA's draw p / eta_PA and the modem's P_active."""
        return (self.pa_w + self.radio_active_w) * air_s

    def rx_j(self, *, seconds: float, rate_bps: float) -> float:
        """Receiving: (P_active + alpha_d R_d) x seconds, R_d in Mbit/s (Huang et al.'s downlink model)."""
        return (self.radio_active_w + self.rx_w_per_mbps * rate_bps / 1e6) * seconds


def energy_model(*, energy: EnergyConfig, channel: ChannelConfig, extra_passes: Mapping[str, int]) -> EnergyModel:
    return EnergyModel(
        slm_j_per_forward=energy.slm_j_per_forward, slm_power_w=energy.slm_power_w,
        pa_w=dbm_to_watts(channel.tx_power_dbm) / energy.pa_efficiency, radio_active_w=energy.radio_active_w,
        rx_w_per_mbps=energy.rx_w_per_mbps, tail_w=energy.tail_w, tail_s=energy.tail_s,
        promotion_j=energy.promotion_w * energy.promotion_s, bs_j_per_token=energy.bs_j_per_token,
        extra_passes=dict(extra_passes))


@dataclass
class Energy:
    """Joules of one prompt (or a sum of prompts): the device's parts, which add up to `device`, and the base
    station's."""

    compute: float = 0.0
    measure: float = 0.0
    tx: float = 0.0
    wait: float = 0.0
    rx: float = 0.0
    tail: float = 0.0
    promotion: float = 0.0
    bs: float = 0.0
    rounds: int = 0
    verified_tokens: int = 0

    @property
    def device(self) -> float:
        return sum(getattr(self, part) for part in DEVICE_PARTS)

    @property
    def radio(self) -> float:
        return self.tx + self.wait + self.rx + self.tail + self.promotion

    def __add__(self, other: Energy) -> Energy:
        return Energy(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})
