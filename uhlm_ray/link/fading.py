"""One Rayleigh fading process in time per (seed, device, prompt), on the modelled clock.

The channel power gain is h(t) = |g(t)|^2 with g(t) a zero-mean, unit-power circular complex Gaussian process, so
h(t) ~ Exp(1) at every instant. t is modelled seconds from the start of the prompt's first round
(`uhlm_ray.measures.clock.modelled_seconds` summed over the rounds before). The device moves at `channel.speed_kmh`
on a carrier of `channel.carrier_ghz`, so its maximum Doppler frequency is f_D = v f_c / c (`doppler_hz`).

Processes (`channel.process`):

- `gauss_markov` (default): the first-order Gauss-Markov (AR(1)) approximation of Clarke/Jakes fading, sampled
  every T = `channel.fading_step_ms` (default: Clarke's coherence time 9 / (16 pi f_D), 32 ms at 3 km/h and 2 GHz)
  and held between samples:
  g_k = rho g_{k-1} + sqrt(1 - rho^2) w_k, w_k ~ CN(0, 1), rho = J0(2 pi f_D T) (Baddour and Beaulieu,
  "Autoregressive modeling for fading channel simulation", IEEE TWC 4(4), 2005; M. Medard, IEEE T-IT 46(3), 2000).
  Its lag-1 correlation is Clarke's exactly; at lag k it is rho^k, not J0(2 pi f_D k T): an AR(1) sampled much
  faster than f_D decorrelates far more slowly than Clarke's model (sampled every 1 ms at 3 km/h and 2 GHz,
  correlation 0.5 after about 2.3 s instead of 43 ms), hence the coherence-time step by default. Its power h_k
  is a Markov chain, which the expectations below use exactly.
- `clarke`: Clarke/Jakes correlation itself (R. H. Clarke, Bell Syst. Tech. J. 47(6), 1968; W. C. Jakes, Microwave
  Mobile Communications, 1974) as a statistical sum of sinusoids, g(t) = M^-1/2 sum_n exp(j(2 pi f_D cos(a_n) t +
  phi_n)) with a_n, phi_n uniform (Zheng and Xiao, IEEE T-COM 51(6), 2003), so E[g(t + tau) g*(t)] =
  J0(2 pi f_D tau) at every lag; sampled every T and held. The marginal of h is Exp(1) as M grows (M = 64 here).
- `block`: i.i.d. Exp(1) per `channel.coherence_ms` block, the textbook block-fading special case.
- `per_round`: the U-HLM paper's: one h drawn per round from the round's keyed generator and held for the whole
  upload (ARQ retries and inversion waits draw new blocks). No time axis; `jobs/reproduce.py` uses it.

`channel.fading=none` means h = 1 whatever the process. Draws are keyed (`Purpose.CHANNEL`, one key per chunk of
`CHUNK` samples), so every method and trial of a run sees the same realisation of a device's channel for a prompt,
and the samples are generated lazily in vectorised chunks (`scipy.signal.lfilter` for the AR(1)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.signal import lfilter
from scipy.special import j0

from uhlm_ray.config import ChannelConfig, ClockConfig, EvaluateConfig
from uhlm_ray.link.downlink import DownlinkLink, downlink_link, downlink_seconds
from uhlm_ray.records import BlockRecord, RoundRecord
from uhlm_ray.sampling.rng import Purpose, SessionKey

SPEED_OF_LIGHT = 299_792_458.0  # m/s
CHUNK = 2048  # samples generated per keyed chunk
CLARKE_CHUNK = 256  # samples of the sum of sinusoids evaluated at once
SINUSOIDS = 64  # M of the `clarke` sum of sinusoids
TIME_PROCESSES = ("gauss_markov", "clarke", "block")  # processes with a time axis (per_round has none)


def doppler_hz(*, speed_kmh: float, carrier_ghz: float) -> float:
    """Maximum Doppler frequency f_D = v f_c / c (Hz)."""
    return speed_kmh / 3.6 * carrier_ghz * 1e9 / SPEED_OF_LIGHT


def gauss_markov_rho(*, doppler: float, step_s: float) -> float:
    """rho = J0(2 pi f_D T): Clarke's correlation of g at one sampling step, the AR(1) coefficient."""
    return float(j0(2.0 * math.pi * doppler * step_s))


def has_time_axis(channel: ChannelConfig) -> bool:
    """Whether h depends on when a bit is sent (a fading process in time), not just on the round."""
    return channel.fading != "none" and channel.process in TIME_PROCESSES


def coherence_seconds(*, doppler: float) -> float:
    """Clarke's coherence time T_c = 9 / (16 pi f_D) (Rappaport, Wireless Communications, eq. 5.40.b): the lag at
    which the envelope's correlation falls to about 0.5; a static channel (f_D = 0) has none (1 s stands in)."""
    return 9.0 / (16.0 * math.pi * doppler) if doppler > 0 else 1.0


def step_seconds(channel: ChannelConfig) -> float:
    """The process's sampling step: one coherence block for `block`, else `fading_step_ms`, which by default
    (None) is the coherence time at the device's speed, so that an AR(1) decorrelates on Clarke's time scale (its
    lag-k correlation is rho^k: sampled every 1 ms at 3 km/h it would still be 0.5 after 2.3 s, against 43 ms)."""
    if channel.process == "block":
        return channel.coherence_ms / 1e3
    if channel.fading_step_ms is not None:
        return channel.fading_step_ms / 1e3
    return coherence_seconds(doppler=doppler_hz(speed_kmh=channel.speed_kmh, carrier_ghz=channel.carrier_ghz))


ChunkRng = Callable[[int], np.random.Generator]  # chunk index (0: the initial state) -> its keyed generator


class FadingProcess:
    """h(t) of one device in one prompt: piecewise constant on steps [k T, (k + 1) T), generated lazily."""

    def __init__(self, *, kind: str, step_s: float, doppler: float, chunk_rng: ChunkRng) -> None:
        if kind not in TIME_PROCESSES:
            raise ValueError(f"process {kind!r} has no time axis; one of {TIME_PROCESSES}")
        self.kind, self.step_s, self.doppler = kind, step_s, doppler
        self.rho = gauss_markov_rho(doppler=doppler, step_s=step_s) if kind == "gauss_markov" else 0.0
        self._chunk_rng = chunk_rng
        # samples per chunk: a sum of sinusoids draws nothing per chunk, so it evaluates short chunks on demand
        self.chunk = CLARKE_CHUNK if kind == "clarke" else CHUNK
        self._data = np.empty(0)  # per step: g (complex), or h for `block`; the first `_made` are made
        self._made = 0
        self._state: complex | None = None  # the AR(1)'s last g
        self._sinusoids: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def static(self) -> bool:
        """No Doppler: the gain never changes after the first sample (an upload stuck in a fade never ends)."""
        return self.kind != "block" and self.doppler == 0.0

    def step_index(self, t: float) -> int:
        # a small tolerance, so that a time summed from step lengths lands in the step it ends, not the one before
        return max(int(math.floor(t / self.step_s + 1e-9)), 0)

    def gain_at(self, t: float) -> float:
        """h(t); NaN at an infinite time (after an upload that never ends)."""
        return float(self.gains(self.step_index(t), 1)[0]) if math.isfinite(t) else math.nan

    def gains(self, first: int, count: int) -> np.ndarray:
        """h of steps first .. first + count - 1 [count] float64."""
        samples = self._samples(first, count)
        return samples if self.kind == "block" else np.abs(samples) ** 2

    def complex_gains(self, first: int, count: int) -> np.ndarray:
        """g of steps first .. first + count - 1 [count] complex128 (`gauss_markov` and `clarke`; `block` draws h
        alone)."""
        if self.kind == "block":
            raise ValueError("process=block draws the power gain h alone, not the complex gain g")
        return self._samples(first, count)

    def _samples(self, first: int, count: int) -> np.ndarray:
        """A view of samples first .. first + count - 1, made chunk by chunk in order as far as asked."""
        needed = first + count
        if needed > self._made:
            chunks = [self._make_chunk(c) for c in range(self._made // self.chunk, -(-needed // self.chunk))]
            made = self._made + sum(len(c) for c in chunks)
            if made > len(self._data):  # no room: double, so reading on costs amortised O(1) a sample
                data = np.empty(max(2 * len(self._data), made), dtype=chunks[0].dtype)
                data[:self._made] = self._data[:self._made]
                self._data = data
            for c in chunks:
                self._data[self._made:self._made + len(c)] = c
                self._made += len(c)
        return self._data[first:needed]

    def _make_chunk(self, c: int) -> np.ndarray:
        rng = self._chunk_rng(c + 1)
        if self.kind == "block":
            return rng.exponential(1.0, size=CHUNK)
        if self.kind == "clarke":
            if self._sinusoids is None:
                init = self._chunk_rng(0)
                angles, phases = init.uniform(0.0, 2.0 * math.pi, size=(2, SINUSOIDS))
                self._sinusoids = (2.0 * math.pi * self.doppler * np.cos(angles), phases)
            return clarke_process(times=(c * self.chunk + np.arange(self.chunk)) * self.step_s,
                                  sinusoids=self._sinusoids)
        if self._state is None:
            self._state = complex(*(self._chunk_rng(0).standard_normal(2) / math.sqrt(2.0)))
        w = (rng.standard_normal(CHUNK) + 1j * rng.standard_normal(CHUNK)) / math.sqrt(2.0)
        g = ar1_filter(innovations=w, rho=self.rho, state=np.array([self._state]))[0]
        self._state = complex(g[-1])
        return g


def ar1_filter(*, innovations: np.ndarray, rho: float, state: np.ndarray) -> np.ndarray:
    """g_k = rho g_{k-1} + sqrt(1 - rho^2) w_k along the last axis, from g_{-1} = `state` [...]: [..., K] complex."""
    w = np.atleast_2d(innovations)
    zi = (rho * np.asarray(state, dtype=complex)).reshape(-1, 1) * np.ones((w.shape[0], 1))
    out, _ = lfilter([math.sqrt(max(1.0 - rho * rho, 0.0))], [1.0, -rho], w, axis=-1, zi=zi)
    return out


def clarke_process(*, times: np.ndarray, sinusoids: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """g(t) of the sum of sinusoids at `times` [K], angular frequencies and phases [M]: [K] complex128."""
    omega, phases = sinusoids
    return np.exp(1j * (np.outer(times, omega) + phases)).sum(axis=1) / math.sqrt(len(omega))


def process_for(*, channel: ChannelConfig, key: SessionKey) -> FadingProcess | None:
    """The device's fading process for this prompt (None when h does not depend on time: no fading, per_round)."""
    if not has_time_axis(channel):
        return None
    return FadingProcess(kind=channel.process, step_s=step_seconds(channel),
                         doppler=doppler_hz(speed_kmh=channel.speed_kmh, carrier_ghz=channel.carrier_ghz),
                         chunk_rng=lambda c: key.rng(round_index=c, purpose=Purpose.CHANNEL))


@lru_cache(maxsize=64)
def _cached_process(kind: str, step_s: float, doppler: float, seed: int, device: int, prompt: int) -> FadingProcess:
    key = SessionKey(seed=seed, device=device, prompt=prompt)
    return FadingProcess(kind=kind, step_s=step_s, doppler=doppler,
                         chunk_rng=lambda c: key.rng(round_index=c, purpose=Purpose.CHANNEL))


def shared_process(*, channel: ChannelConfig, key: SessionKey) -> FadingProcess | None:
    """`process_for`, cached: repricing one prompt's rounds again (SNR sweep, trials) reuses its generated samples."""
    if not has_time_axis(channel):
        return None
    return _cached_process(channel.process, step_seconds(channel),
                           doppler_hz(speed_kmh=channel.speed_kmh, carrier_ghz=channel.carrier_ghz),
                           key.seed, key.device, key.prompt)


PAPER_TAU_SLM_S = 0.0246  # the U-HLM paper's tau_SLM and tau_LLM (device/stopping.py, device/policies.py)
PAPER_TAU_LLM_S = 0.1046


@dataclass(frozen=True)
class DecodeClock:
    """The modelled clock a device keeps while it decodes, to know when each upload happens on its fading process.

    The run's clock (`uhlm_ray.measures.clock.ModelledClock`) is known only after decoding when its times are
    calibrated or measured, so while decoding the device uses the configured `clock.tau_slm_ms`, `tau_llm_ms` and
    `tau_measure_ms`, else the U-HLM paper's tau_SLM = 24.6 ms and tau_LLM = 104.6 ms, and for u K SLM passes
    (MC dropout, prompt perturbation) or nothing (the paper runs temperature perturbation beside the forward pass).
    Never a wall-clock measurement: the fading a round reads, and so its tokens, stay the same from run to run.
    Decisions made while decoding (send or skip, draft another) use these times; the summaries re-walk every
    prompt on the run's clock (`uhlm_ray.link.reprice.reprice_prompt`), so their upload times are exact for it.
    """

    tau_slm_s: float
    tau_llm_s: float
    tau_measure_s: float  # one measurement of u
    flat_pass_tokens: int | None  # clock.llm_pass=flat: tau_LLM per this many tokens; None: one tau_LLM a pass

    downlink: DownlinkLink | None = None  # the answer's way back, as on the run's clock (None: off)

    @classmethod
    def from_config(cls, clock: ClockConfig, *, measure: str = "temperature", k: int = 20,
                    downlink: DownlinkLink | None = None) -> DecodeClock:
        """`measure` and `k`: the uncertainty measure the decoder runs and its passes (uncertainty.k)."""
        tau_slm = PAPER_TAU_SLM_S if clock.tau_slm_ms is None else clock.tau_slm_ms / 1e3
        tau_measure = k * tau_slm if measure in ("mc_dropout", "prompt_perturbation") else 0.0
        return cls(tau_slm_s=tau_slm,
                   tau_llm_s=PAPER_TAU_LLM_S if clock.tau_llm_ms is None else clock.tau_llm_ms / 1e3,
                   tau_measure_s=tau_measure if clock.tau_measure_ms is None else clock.tau_measure_ms / 1e3,
                   flat_pass_tokens=clock.flat_pass_tokens if clock.llm_pass == "flat" else None,
                   downlink=downlink)

    @classmethod
    def for_run(cls, cfg: EvaluateConfig, *, measure: str, vocab_size: int) -> DecodeClock:
        """The clock a device of this run decodes on: `from_config` with the run's downlink (`downlink.enabled`)."""
        return cls.from_config(cfg.clock, measure=measure, k=cfg.uncertainty.k,
                               downlink=downlink_link(downlink=cfg.downlink, channel=cfg.channel,
                                                      vocab_size=vocab_size))

    def measure_seconds(self, *, measured_s: float, measurements: int = 1) -> float:
        """The uncertainty measure's cost where the decision used it (measured_s > 0: the round timed one)."""
        return self.tau_measure_s * measurements if measured_s > 0.0 else 0.0

    def llm_pass_seconds(self, tokens: int) -> float:
        return self.tau_llm_s * (math.ceil(tokens / self.flat_pass_tokens) if self.flat_pass_tokens else 1)

    def decision_seconds(self, *, steps: int, measured_s: float) -> float:
        """Seconds from a round's start to its upload decision after `steps` SLM steps, each with its uncertainty
        measurement when one was timed (measured_s > 0)."""
        return steps * self.tau_slm_s + self.measure_seconds(measured_s=measured_s, measurements=steps)

    def upload_offset(self, record: RoundRecord | BlockRecord) -> float:
        """`decision_seconds` of a finished round (0 for the LLM alone, which uploads nothing)."""
        if record.method == "llm":
            return 0.0
        steps = len(record.drafts) if isinstance(record, BlockRecord) else 1
        return self.decision_seconds(steps=steps, measured_s=record.tau_uncertainty_s)

    def round_seconds(self, record: RoundRecord | BlockRecord) -> float:
        """The round on this clock: its SLM steps and measures, a missed deadline, the upload, the LLM pass and the
        answer on the downlink (`modelled_seconds` on the run's clock, priced with the decode-time taus)."""
        if record.method == "llm":
            return self.tau_llm_s
        lost = record.tau_up_s if record.deadline_fallback else 0.0
        if not record.sent:
            return self.upload_offset(record) + lost
        tokens = record.llm_pass_tokens if isinstance(record, BlockRecord) else 1
        llm = self.llm_pass_seconds(tokens) if isinstance(record, BlockRecord) else self.tau_llm_s
        return self.upload_offset(record) + lost + record.tau_up_s + llm + \
            downlink_seconds(record=record, link=self.downlink)

    def block_answer_seconds(self, drafts: int) -> float:
        """A block's answer on the downlink as the device plans it (0 with the downlink off)."""
        return self.downlink.block_answer_seconds(drafts) if self.downlink is not None else 0.0

    def draft_answer_seconds(self) -> float:
        """One sent draft's answer on the downlink (0 with the downlink off)."""
        return self.downlink.draft_answer_seconds() if self.downlink is not None else 0.0
