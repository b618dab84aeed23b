"""The uplink: path loss, Rayleigh fading in time, and how long an upload of B bits takes under three link models.

The received SNR is  SNR(t) = p * rho^(-alpha) * h(t) / N  with h(t) ~ Exp(1), the power gain of a Rayleigh fading
channel. The paper's defaults, W = 1 MHz, p = 23 dBm, N = -104 dBm, alpha = 4, rho = 2.5 km, give an average SNR
s of about -8.9 dB (see `uhlm_ray.snr.mean_snr_db`). h(t) is one process in time per device and prompt on the
modelled clock (`uhlm_ray/link/fading.py`, `channel.process`), or the paper's one draw per round (`per_round`).

Every link model reads h at the time each bit is sent. An upload decided at modelled time t0 (`start_s`) first pays
`upload_overhead_ms` (scheduling request, grant and round trip; without it n uploads of one draft would cost what
one upload of n drafts does), then transmits from t0 + overhead:

- `shannon`, the U-HLM paper's eq. 3 with the device tracking h(t): it sends at the instantaneous capacity
  W log2(1 + s h(t)), so B bits take the tau solving  int_{t0+o}^{t0+o+tau} W log2(1 + s h(t)) dt = B. Under
  `per_round` h is held for the whole upload and tau = B / (W log2(1 + s h)), whose mean is infinite under Rayleigh
  fading (E[1 / log2(1 + s h)] diverges at h -> 0); a process in time bounds the loss of a deep fade by its length.
- `arq`: fixed-rate transmission without channel knowledge at R bit/s/Hz (given, or the rate that minimises the
  expected upload time: over independent attempts under `per_round`, on the process's reference bank for a process
  in time, `arq_rate_in_time`). An attempt lasts B / (W R) and succeeds when the mutual
  information it accumulated reaches its bits, int log2(1 + s h(t)) dt >= R * B / (W R), i.e. when the time-average
  capacity over the attempt is at least R (the outage rule of a code spanning several fading blocks: Tse and
  Viswanath, Fundamentals of Wireless Communication, 2005, 5.4.3). Otherwise the base station answers NACK and the
  retransmission starts `arq_feedback_ms` after the attempt ended, reading h then: a retry within the coherence time
  usually sees the same fade. Under `per_round` an attempt is one block and every retry draws a new one.
- `inversion`: truncated channel inversion. The device transmits at the constant rate W log2(1 + s / E1(h0))
  (average power constraint: Goldsmith, Wireless Communications, 2005, 4.2.4) only while h(t) >= h0 (the cut-off,
  given or the rate-maximising one) and pauses whenever h falls below it, also in the middle of an upload; under
  `per_round` it waits out a fade below h0 one `coherence_ms` block at a time, then sends the whole upload.

A deadline (`deadline_ms`) either waits (exact) or gives up and lets the device keep its draft unverified
(`deadline_mode=fallback`, lossy).

Expected upload times (`expected_upload_seconds`, what the device prices a decision with) are closed forms under
`per_round` and without fading; for a process in time they are sample averages over a fixed bank of reference paths
of the same process (`_Bank`), conditioned on the gain the device knows now (exactly for `gauss_markov` and `block`,
whose power is Markov; by Gaussian conditioning on the current sample for `clarke`). tests/test_channel.py and
tests/test_fading.py check both against a Monte Carlo of `upload` on independent realisations.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import exp1, j0

from uhlm_ray.config import ChannelConfig
from uhlm_ray.link.capacity import ergodic_capacity
from uhlm_ray.link.fading import (
    FadingProcess,
    doppler_hz,
    gauss_markov_rho,
    has_time_axis,
    step_seconds,
)


def draw_fading_gain(*, rng: np.random.Generator, fading: str) -> float:
    """h: one draw of the channel power gain, Exp(1) under Rayleigh fading, 1 without fading (per_round's h(t))."""
    return float(rng.exponential(1.0)) if fading == "rayleigh" else 1.0


def uplink_seconds(*, bits: float, bandwidth_hz: float, snr: float) -> float:
    """Eq. 3: tau(t) = B / (W log2(1 + SNR(t))); infinite when the SNR is zero."""
    rate = bandwidth_hz * math.log2(1.0 + snr)
    return bits / rate if rate > 0 else math.inf


@dataclass(frozen=True)
class Upload:
    """One upload on the modelled clock."""

    seconds: float  # from the decision (scheduling request) to the last bit (or to the deadline, when it gave up)
    # transmissions (ARQ); inversion: fading blocks waited through plus one (per_round), the bursts it was sent in
    # between pauses in deep fades (a process in time); 1 for shannon
    attempts: int
    gain: float  # h when the device decided to upload (at start_s): the channel knowledge its decision used
    delivered: bool  # False: the deadline passed first and the device kept its drafts (deadline_mode=fallback)
    air_s: float = 0.0  # seconds the radio transmits (every attempt's air time; no waits, feedback or overhead)
    start_s: float = 0.0  # modelled time of the decision, seconds since the prompt's first round began

    @property
    def end_s(self) -> float:
        """Modelled time of the last bit (or of the deadline)."""
        return self.start_s + self.seconds


def arq_success_probability(*, rate: float, mean_snr: float) -> float:
    """P(log2(1 + s h) >= R) = exp(-(2^R - 1) / s) for h ~ Exp(1)."""
    return math.exp(-(2.0**rate - 1.0) / mean_snr) if mean_snr > 0 else 0.0


def arq_expected_seconds(*, bits: float, rate: float, bandwidth_hz: float, mean_snr: float, feedback_s: float) -> float:
    """E[time] of fixed-rate ARQ with independent attempts, without overhead: each of the geometric attempts costs
    B / (W R), each failure one NACK round trip more: (B / (W R) + f) / p - f."""
    p = arq_success_probability(rate=rate, mean_snr=mean_snr)
    return (bits / (bandwidth_hz * rate) + feedback_s) / p - feedback_s if p > 0 else math.inf


@lru_cache(maxsize=4096)
def latency_optimal_rate(*, bits: float, bandwidth_hz: float, mean_snr: float, feedback_s: float) -> float:
    """The ARQ rate R (bit/s/Hz) that minimises the expected upload time of B bits with independent attempts (a
    higher rate sends faster but fails more often). Without feedback delay the optimum solves R 2^R ln 2 = s."""
    result = minimize_scalar(
        lambda log_rate: arq_expected_seconds(bits=bits, rate=math.exp(log_rate), bandwidth_hz=bandwidth_hz,
                                              mean_snr=mean_snr, feedback_s=feedback_s),
        bounds=(math.log(1e-4), math.log(30.0)), method="bounded", options={"xatol": 1e-6})
    return math.exp(result.x)


def inversion_rate(*, cutoff: float, mean_snr: float) -> float:
    """Spectral efficiency of truncated channel inversion with cut-off h0: log2(1 + s / E1(h0))."""
    return math.log2(1.0 + mean_snr / float(exp1(cutoff)))


@lru_cache(maxsize=1024)
def optimal_inversion_cutoff(*, mean_snr: float) -> float:
    """The cut-off h0 that maximises the average rate log2(1 + s / E1(h0)) P(h >= h0), outage included."""
    result = minimize_scalar(lambda h0: -inversion_rate(cutoff=h0, mean_snr=mean_snr) * math.exp(-h0),
                             bounds=(1e-6, 10.0), method="bounded", options={"xatol": 1e-8})
    return float(result.x)


def _arq_rate(*, bits: float, channel: ChannelConfig, mean_snr: float, bandwidth_hz: float) -> float:
    if channel.arq_rate is not None:
        return channel.arq_rate
    if channel.fading == "none":  # no fading, no failures: the capacity itself
        return math.log2(1.0 + mean_snr)
    if has_time_axis(channel) and bits > 0:
        return arq_rate_in_time(bits=bits, channel=channel, mean_snr=mean_snr, bandwidth_hz=bandwidth_hz)
    return latency_optimal_rate(bits=float(bits), bandwidth_hz=bandwidth_hz, mean_snr=mean_snr,
                                feedback_s=channel.arq_feedback_ms / 1e3)


ARQ_RATE_STEPS = range(-16, 5)  # rates searched: 2^(k / 4) x the independent-attempts rate, 1/16 .. 2, 19% apart
ARQ_SIZES_PER_OCTAVE = 4  # a process-aware rate is chosen for B / W on a grid 19% apart ...
ARQ_SNR_STEPS_PER_DB = 4  # ... and for the mean SNR to 0.25 dB


def arq_rate_in_time(*, bits: float, channel: ChannelConfig, mean_snr: float, bandwidth_hz: float) -> float:
    """The fixed ARQ rate (bit/s/Hz) that minimises the mean upload time on the channel's fading process in time.

    A retry comes `channel.arq_feedback_ms` after a failure, usually inside the coherence time, so it mostly sees the
    fade that sank the attempt before it; a rate chosen as if attempts were independent (`latency_optimal_rate`, the
    per_round answer) then fails again and again in a slow fade. The device sends blind, so the rate is the one whose
    mean over the process's reference bank (`_Bank`, decided at a uniform phase, no gain known) is least: a ternary
    search over `ARQ_RATE_STEPS` multiples of the independent-attempts rate (the mean is unimodal in the rate: too
    high fails, too low is slow). The air time depends on B / W, so the question is asked for B / W and the SNR on
    grids (`ARQ_SIZES_PER_OCTAVE`, `ARQ_SNR_STEPS_PER_DB`) and cached: a run asks few. Where every rate is infinitely
    slow (a static channel: a fade below the rate never lifts) it keeps the independent-attempts rate."""
    size = round(ARQ_SIZES_PER_OCTAVE * math.log2(bits / bandwidth_hz))
    level = round(ARQ_SNR_STEPS_PER_DB * 10.0 * math.log10(mean_snr))
    doppler = doppler_hz(speed_kmh=channel.speed_kmh, carrier_ghz=channel.carrier_ghz)
    return _arq_rate_in_time(channel.process, step_seconds(channel), doppler, channel.arq_feedback_ms / 1e3, size,
                             level)


@lru_cache(maxsize=4096)
def _arq_rate_in_time(kind: str, step_s: float, doppler: float, feedback_s: float, size: int, level: int) -> float:
    bits = 2.0 ** (size / ARQ_SIZES_PER_OCTAVE)  # on a band of 1 Hz: the same air times as B bits on W Hz
    mean_snr = 10.0 ** (level / (10.0 * ARQ_SNR_STEPS_PER_DB))
    independent = latency_optimal_rate(bits=bits, bandwidth_hz=1.0, mean_snr=mean_snr, feedback_s=feedback_s)
    paths = _bank(kind, step_s, doppler).paths(gain=None, start_s=None)
    means: dict[int, float] = {}
    memo: dict[str, np.ndarray] = {}  # every rate reads the same capacity on the same paths

    def mean_at(k: int) -> float:
        if k not in means:
            rate = independent * 2.0 ** (k / 4)
            tail = arq_expected_seconds(bits=bits, rate=rate, bandwidth_hz=1.0, mean_snr=mean_snr,
                                        feedback_s=feedback_s)
            seconds, _ = _arq(paths, bits=bits, begin_s=0.0, rate=rate, air_s=bits / rate, feedback_s=feedback_s,
                              capacity=lambda h: np.log2(1.0 + mean_snr * h), tail_s=tail, memo=memo)
            means[k] = float(seconds.mean())
        return means[k]

    low, high = ARQ_RATE_STEPS[0], ARQ_RATE_STEPS[-1]
    while high - low > 2:
        third = (high - low) // 3
        if mean_at(low + third) <= mean_at(high - third):
            high = high - third
        else:
            low = low + third
    k = min(range(low, high + 1), key=mean_at)
    return independent * 2.0 ** (k / 4) if math.isfinite(mean_at(k)) else independent


def _inversion_cutoff(*, channel: ChannelConfig, mean_snr: float) -> float:
    return channel.inversion_cutoff if channel.inversion_cutoff is not None else \
        optimal_inversion_cutoff(mean_snr=mean_snr)


ARQ_FIRST_ATTEMPTS = 1.0  # attempts read at first (most paths succeed at once); the rest are read 4x further
MAX_ATTEMPTS = 100_000  # a link that cannot deliver (no fading and a rate above capacity) is infinitely slow
MAX_PATH_STEPS = 2**20  # one upload reads at most this many samples (17 min at 1 ms), then the long-run rate
BANK_ENTROPY = 0xFAD1  # the key of the reference paths behind expected_upload_seconds, apart from every run's
BANK_PATHS = {"gauss_markov": 1024, "block": 1024, "clarke": 256}  # reference paths per process
BANK_MAX_ELEMENTS = 2**22  # paths x samples held at once; a longer upload finishes at the long-run rate


# --- per_round and no fading: the paper's block per round --------------------------------------------------------

def _upload_per_round(*, bits: float, channel: ChannelConfig, mean_snr: float, rng: np.random.Generator,
                      width: float, overhead: float) -> tuple[float, int, float, float]:
    """(seconds, attempts, gain, air) with one h per round held for the upload; retries and waits redraw."""
    gain = draw_fading_gain(rng=rng, fading=channel.fading)
    if channel.model == "shannon":
        air = uplink_seconds(bits=bits, bandwidth_hz=width, snr=mean_snr * gain)
        return overhead + air, 1, gain, air
    if channel.model == "arq":
        rate = _arq_rate(bits=bits, channel=channel, mean_snr=mean_snr, bandwidth_hz=width)
        air, feedback = bits / (width * rate), channel.arq_feedback_ms / 1e3
        seconds, attempts, h = overhead + air, 1, gain
        while math.log2(1.0 + mean_snr * h) < rate:  # NACK: wait for the feedback, retransmit in a new block
            if attempts >= MAX_ATTEMPTS or channel.fading == "none":  # a rate above capacity never gets through
                seconds = math.inf
                break
            seconds += feedback + air
            attempts += 1
            h = draw_fading_gain(rng=rng, fading=channel.fading)
        return seconds, attempts, gain, attempts * air
    if channel.fading == "none":
        rate, waits = math.log2(1.0 + mean_snr), 0
    else:
        cutoff = _inversion_cutoff(channel=channel, mean_snr=mean_snr)
        rate = inversion_rate(cutoff=cutoff, mean_snr=mean_snr)
        waits, h = 0, gain
        while h < cutoff and waits < MAX_ATTEMPTS:  # below the cut-off: no transmission this block
            waits += 1
            h = draw_fading_gain(rng=rng, fading=channel.fading)
    air = bits / (width * rate) if rate > 0 else math.inf
    return overhead + waits * channel.coherence_ms / 1e3 + air, waits + 1, gain, air


def inversion_expected_wait(*, cutoff: float, coherence_s: float, gain: float | None) -> float:
    """Expected wait before a per_round inversion upload: blocks are i.i.d. with P(h >= h0) = q = e^(-h0), so a
    device that knows it is in a fade (gain < h0) waits the rest of this block and a geometric number more,
    coherence / q; one that does not know h waits coherence (1 - q) / q; one above the cut-off sends at once."""
    q = math.exp(-cutoff)
    if gain is None:
        return coherence_s * (1.0 - q) / q
    return 0.0 if gain >= cutoff else coherence_s / q


# --- a process in time: vectorised over paths (one path for an upload, a bank for an expectation) -----------------

@dataclass
class _Paths:
    """N paths of h from the step holding the decision (time 0) on: step 0 lasts first_s [N], later steps step_s."""

    gains: Callable[[int, np.ndarray], np.ndarray]  # (K, rows) -> h [rows, K] of steps 0 .. K - 1
    first_s: np.ndarray  # [N]
    step_s: float
    static: bool  # no Doppler: h never changes
    max_elements: int  # paths x samples read at once: the fewer paths still uploading, the further they are read

    @property
    def cap_steps(self) -> int:
        return int(min(MAX_PATH_STEPS, max(self.max_elements // len(self.first_s), 64)))

    def subset(self, rows: np.ndarray) -> _Paths:
        """The paths `rows` only (an upload still unfinished at the horizon is read further, the others are not)."""
        return _Paths(gains=lambda k, r: self.gains(k, rows[r]), first_s=self.first_s[rows], step_s=self.step_s,
                      static=self.static, max_elements=self.max_elements)

    def all_gains(self, k_steps: int) -> np.ndarray:
        return self.gains(k_steps, np.arange(len(self.first_s)))

    def step_of(self, t: np.ndarray) -> np.ndarray:
        """Step index of times t [N, J] (time 0 is the decision)."""
        later = np.floor((t - self.first_s[:, None]) / self.step_s + 1e-9).astype(np.int64) + 1
        return np.where(t < self.first_s[:, None], 0, later)

    def step_start(self, k: np.ndarray) -> np.ndarray:
        return np.where(k == 0, 0.0, self.first_s[:, None] + (k - 1) * self.step_s)


def _integral(paths: _Paths, values: np.ndarray) -> np.ndarray:
    """Cumulative integral of a per-step value [N, K] at the step starts and the horizon: [N, K + 1]."""
    weighted = values * paths.step_s
    weighted[:, 0] = values[:, 0] * paths.first_s
    cum = np.zeros((values.shape[0], values.shape[1] + 1))
    np.cumsum(weighted, axis=1, out=cum[:, 1:])
    return cum


def _integral_at(paths: _Paths, cum: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The cumulative integral at times t [N, J] inside the horizon."""
    k = np.minimum(paths.step_of(t), values.shape[1] - 1)
    return np.take_along_axis(cum, k, axis=1) + np.take_along_axis(values, k, axis=1) * (t - paths.step_start(k))


def _horizon_steps(paths: _Paths, seconds: float) -> int:
    return int(min(max(math.ceil(seconds / paths.step_s) + 2, 64), paths.cap_steps))


def _fill(paths: _Paths, *, bits: float, begin_s: float, rate: Callable[[np.ndarray], np.ndarray],
          long_run_rate: float, guess_s: float) -> np.ndarray:
    """Seconds from the decision until `bits` are sent from begin_s on at rate(h(t)) bit/s, per path [N]: eq. 3 in
    time (rate W log2(1 + s h)) and inversion (W R while h >= h0, else 0). Beyond the horizon: the long-run rate."""
    out = np.full(len(paths.first_s), np.nan)
    rows = np.arange(len(paths.first_s))
    k_steps = _horizon_steps(paths, begin_s + 2.0 * guess_s)
    while rows.size:
        sub = paths.subset(rows)
        k_steps = min(k_steps, sub.cap_steps)
        r = rate(sub.all_gains(k_steps))  # [n, K]
        cum = _integral(sub, r)
        target = _integral_at(sub, cum, r, np.full((r.shape[0], 1), begin_s))[:, 0] + bits
        reached = cum[:, -1] >= target
        idx = np.argmax(cum >= target[:, None], axis=1)
        k = np.maximum(idx - 1, 0)[:, None]
        r_k = np.take_along_axis(r, k, axis=1)[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            end = sub.step_start(k)[:, 0] + (target - np.take_along_axis(cum, k, axis=1)[:, 0]) / r_k
            if k_steps >= sub.cap_steps:  # the rest at the long-run rate (static: at its one rate)
                horizon = sub.first_s + (k_steps - 1) * sub.step_s
                tail_rate = r[:, -1] if paths.static else np.full(len(r), long_run_rate)
                end = np.where(reached, end,
                               np.where(tail_rate > 0, horizon + (target - cum[:, -1]) / tail_rate, np.inf))
                reached = np.ones_like(reached)
        out[rows[reached]] = end[reached]
        rows = rows[~reached]
        k_steps *= 4
    return out


def _arq(paths: _Paths, *, bits: float, begin_s: float, rate: float, air_s: float, feedback_s: float,
         capacity: Callable[[np.ndarray], np.ndarray], tail_s: float,
         memo: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(seconds from the decision, attempts) per path [N] of fixed-rate ARQ in time: attempt j starts at
    begin + j (A + f) on every path and succeeds when int log2(1 + s h) dt over it >= R A. A path still failing at
    the horizon: its attempts so far, then `tail_s`, the expected time of independent attempts (never, when static).
    `memo` keeps the capacity and its integral over every path between calls on the same paths and capacity (the
    rates of one search): a shorter horizon reads their prefix, since a prefix of a cumulative sum is the cumulative
    sum of the prefix."""
    need = rate * air_s * (1.0 - 1e-9)
    n = len(paths.first_s)
    seconds, attempts = np.full(n, np.nan), np.zeros(n, dtype=np.int64)
    rows = np.arange(n)
    k_steps = _horizon_steps(paths, begin_s + ARQ_FIRST_ATTEMPTS * (air_s + feedback_s))
    while rows.size:
        sub = paths.subset(rows)
        k_steps = min(k_steps, sub.cap_steps)
        horizon = float(sub.first_s.min()) + (k_steps - 1) * sub.step_s
        n_attempts = int(min(math.floor((horizon - begin_s - air_s) / (air_s + feedback_s)) + 1, MAX_ATTEMPTS))
        if paths.static:  # h never changes: every attempt gathers what the first one did
            n_attempts = min(n_attempts, 1)
        last = k_steps >= sub.cap_steps or n_attempts >= MAX_ATTEMPTS or (paths.static and n_attempts >= 1)
        found = np.zeros(len(rows), dtype=bool)
        if n_attempts >= 1:
            if memo is not None and len(rows) == n:
                if memo.get("c", np.empty((n, 0))).shape[1] < k_steps:
                    memo["c"] = capacity(sub.all_gains(k_steps))
                    memo["cum"] = _integral(sub, memo["c"])
                c, cum = memo["c"][:, :k_steps], memo["cum"][:, :k_steps + 1]
            else:
                c = capacity(sub.all_gains(k_steps))
                cum = _integral(sub, c)
            starts = np.broadcast_to(begin_s + np.arange(n_attempts) * (air_s + feedback_s), (len(rows), n_attempts))
            ok = _integral_at(sub, cum, c, starts + air_s) - _integral_at(sub, cum, c, starts) >= need
            found = ok.any(axis=1)
            first = np.argmax(ok, axis=1)
            seconds[rows[found]] = begin_s + (first[found] + 1) * air_s + first[found] * feedback_s
            attempts[rows[found]] = first[found] + 1
        if last:
            give_up = math.inf if paths.static or n_attempts >= MAX_ATTEMPTS else \
                begin_s + max(n_attempts, 0) * (air_s + feedback_s) + tail_s
            seconds[rows[~found]] = give_up
            attempts[rows[~found]] = max(n_attempts, 0) + 1
            break
        rows = rows[~found]
        k_steps *= 4
    return seconds, attempts


def _bursts(paths: _Paths, *, on: np.ndarray, begin_s: float, end_s: float) -> int:
    """Runs of on-steps an inversion upload of one path [1, K] used between begin and end."""
    if not math.isfinite(end_s):
        return 0
    k0, k1 = (int(k) for k in paths.step_of(np.array([[begin_s, max(end_s - 1e-12, begin_s)]]))[0])
    window = on[0, k0:k1 + 1]
    return int(window[0]) + int(np.count_nonzero(window[1:] & ~window[:-1]))


def _link_in_time(*, paths: _Paths, bits: float, channel: ChannelConfig, mean_snr: float, width: float,
                  overhead: float, count_bursts: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seconds, attempts, air seconds) per path [N] of one upload on `paths`, decided at time 0."""
    n = len(paths.first_s)
    if bits <= 0:
        return np.full(n, overhead), np.ones(n, dtype=np.int64), np.zeros(n)
    if channel.model == "shannon":
        mean_rate = width * ergodic_capacity(mean_snr=mean_snr, fading=channel.fading)
        seconds = _fill(paths, bits=bits, begin_s=overhead, rate=lambda h: width * np.log2(1.0 + mean_snr * h),
                        long_run_rate=mean_rate, guess_s=bits / mean_rate)
        return seconds, np.ones(n, dtype=np.int64), seconds - overhead
    if channel.model == "arq":
        rate = _arq_rate(bits=bits, channel=channel, mean_snr=mean_snr, bandwidth_hz=width)
        air, feedback = bits / (width * rate), channel.arq_feedback_ms / 1e3
        tail = arq_expected_seconds(bits=bits, rate=rate, bandwidth_hz=width, mean_snr=mean_snr, feedback_s=feedback)
        seconds, attempts = _arq(paths, bits=bits, begin_s=overhead, rate=rate, air_s=air, feedback_s=feedback,
                                 capacity=lambda h: np.log2(1.0 + mean_snr * h), tail_s=tail)
        return seconds, attempts, attempts * air
    cutoff = _inversion_cutoff(channel=channel, mean_snr=mean_snr)
    rate = width * inversion_rate(cutoff=cutoff, mean_snr=mean_snr)
    q = math.exp(-cutoff)
    seconds = _fill(paths, bits=bits, begin_s=overhead, rate=lambda h: rate * (h >= cutoff),
                    long_run_rate=rate * q, guess_s=bits / (rate * q))
    attempts = np.ones(n, dtype=np.int64)
    if count_bursts:
        on = paths.all_gains(_horizon_steps(paths, float(seconds[0])) if math.isfinite(seconds[0]) else 1) >= cutoff
        attempts[0] = _bursts(paths, on=on, begin_s=overhead, end_s=float(seconds[0]))
    return seconds, attempts, np.where(np.isfinite(seconds), bits / rate, np.inf)


def _one_path(process: FadingProcess, *, start_s: float) -> _Paths:
    k0 = process.step_index(start_s)
    first = (k0 + 1) * process.step_s - start_s
    if first <= 1e-9 * process.step_s:  # on a step boundary: the next step
        k0, first = k0 + 1, process.step_s
    return _Paths(gains=lambda k, rows: process.gains(k0, k)[None, :], first_s=np.array([first]), step_s=process.step_s,
                  static=process.static, max_elements=MAX_PATH_STEPS)


def _process_from_rng(*, channel: ChannelConfig, rng: np.random.Generator) -> FadingProcess:
    """A fresh realisation of the channel's process from a generator (a stationary start: an upload priced alone)."""
    entropy = int(rng.integers(2**63))
    return FadingProcess(kind=channel.process, step_s=step_seconds(channel),
                         doppler=doppler_hz(speed_kmh=channel.speed_kmh, carrier_ghz=channel.carrier_ghz),
                         chunk_rng=lambda c: np.random.default_rng(np.random.SeedSequence([entropy, c])))


def upload(
    *, bits: float, channel: ChannelConfig, mean_snr: float, rng: np.random.Generator | None = None,
    bandwidth_hz: float | None = None, process: FadingProcess | None = None, start_s: float = 0.0,
) -> Upload:
    """The time one upload of `bits` takes on `channel` at average SNR `mean_snr`, decided at modelled time
    `start_s` (seconds since the prompt's first round began) on the device's fading `process`.

    Without a time axis (`channel.process=per_round` or no fading) `rng` is the round's keyed generator: its first
    draw is the fading gain eq. 3 uses, so `shannon` gives the paper's tau(t) for the same draw. With one, `process`
    is the device's (`uhlm_ray.link.fading.process_for`); given only `rng`, a fresh realisation drawn from it is
    used. `bandwidth_hz` overrides W (a share of the band in a cell).
    """
    width = channel.bandwidth_hz if bandwidth_hz is None else bandwidth_hz
    overhead = channel.upload_overhead_ms / 1e3
    if not has_time_axis(channel):
        if rng is None:
            raise ValueError(f"channel.process={channel.process!r} draws its fading per round: pass the round's rng")
        seconds, attempts, gain, on_air = _upload_per_round(bits=bits, channel=channel, mean_snr=mean_snr, rng=rng,
                                                            width=width, overhead=overhead)
    else:
        if process is None:
            if rng is None:
                raise ValueError("a fading process in time needs the device's `process` (or an rng to draw one)")
            process = _process_from_rng(channel=channel, rng=rng)
        if not math.isfinite(start_s):  # decided after an upload that never ended (a static fade): never ends
            return Upload(seconds=math.inf, attempts=0, gain=math.nan, delivered=True, start_s=start_s)
        gain = process.gain_at(start_s)
        times, tries, air = _link_in_time(paths=_one_path(process, start_s=start_s), bits=bits, channel=channel,
                                          mean_snr=mean_snr, width=width, overhead=overhead, count_bursts=True)
        seconds, attempts, on_air = float(times[0]), int(tries[0]), float(air[0])
    if channel.deadline_ms is not None and seconds > channel.deadline_ms / 1e3 and channel.deadline_mode == "fallback":
        deadline = channel.deadline_ms / 1e3
        return Upload(seconds=deadline, attempts=attempts, gain=gain, delivered=False, air_s=min(on_air, deadline),
                      start_s=start_s)
    return Upload(seconds=seconds, attempts=attempts, gain=gain, delivered=True, air_s=on_air, start_s=start_s)


class _Bank:
    """Reference paths of one process, each a keyed realisation (key BANK_ENTROPY, apart from every run's) read
    lazily, so a path still uploading at the horizon is read further alone.

    Each path's decision falls uniformly inside its first step (a stationary start). Conditioned on the gain h the
    device knows: `block` holds h for the rest of the block; `gauss_markov` restarts the AR(1) from g_0 = sqrt(h)
    with the same innovations, g'_k = g_k + rho^k (sqrt(h) - g_0) (exact: the future of an AR(1) given its present
    is rho^k g_0 plus an AR(1) from zero, and the phase of g_0 does not matter to |g|^2); `clarke` uses Gaussian
    conditioning on the current sample alone, g'(kT) = J0(2 pi f_D k T) sqrt(h) + sqrt(1 - J0^2) g(kT) (exact
    marginals, approximate joint law).
    """

    def __init__(self, *, kind: str, step_s: float, doppler: float) -> None:
        self.kind, self.step_s, self.doppler, self.n = kind, step_s, doppler, BANK_PATHS[kind]
        self.offsets = np.random.default_rng(np.random.SeedSequence([BANK_ENTROPY, 0])).random(self.n)
        self.rho = gauss_markov_rho(doppler=doppler, step_s=step_s)
        self.paths_ = [FadingProcess(kind=kind, step_s=step_s, doppler=doppler,
                                     chunk_rng=lambda c, i=i: np.random.default_rng(
                                         np.random.SeedSequence([BANK_ENTROPY, 1, i, c])))
                       for i in range(self.n)]
        self._raw = self._held = np.empty((self.n, 0))

    def paths(self, *, gain: float | None, start_s: float | None) -> _Paths:
        if start_s is None:
            first = self.step_s * (1.0 - self.offsets)
        else:
            first = np.full(self.n, (math.floor(start_s / self.step_s + 1e-9) + 1) * self.step_s - start_s)
            first = np.where(first <= 1e-9 * self.step_s, self.step_s, first)
        return _Paths(gains=lambda k, rows: self.gains(k, rows, gain=gain), first_s=first, step_s=self.step_s,
                      static=self.kind != "block" and self.doppler == 0.0, max_elements=BANK_MAX_ELEMENTS)

    def gains(self, k_steps: int, rows: np.ndarray, *, gain: float | None) -> np.ndarray:
        """h [rows, K] of the paths `rows`, conditioned on h at step 0 = `gain` when given."""
        raw, h = self._samples(k_steps, rows)  # g [rows, K] complex (h for `block`), |g|^2 [rows, K]
        if gain is None:
            return h
        if self.kind == "block":
            h = h.copy()
            h[:, 0] = gain
            return h
        k = np.arange(k_steps)
        if self.kind == "gauss_markov":
            # rho^k (sqrt(h) - g_0) falls below float64's resolution of g after `fade` steps: |g|^2 from there on
            fade = k_steps if abs(self.rho) >= 1.0 else \
                1 if self.rho == 0.0 else min(k_steps, 1 + math.ceil(-69.1 / math.log(abs(self.rho))))  # 1e-30
            h = h.copy()
            h[:, :fade] = np.abs(raw[:, :fade] + (self.rho ** k[:fade])[None, :] * (math.sqrt(gain) - raw[:, :1])) ** 2
            return h
        corr = j0(2.0 * math.pi * self.doppler * k * self.step_s)[None, :]
        return np.abs(corr * math.sqrt(gain) + np.sqrt(np.maximum(1.0 - corr**2, 0.0)) * raw) ** 2

    def _path(self, i: int, count: int) -> np.ndarray:
        """Path i's first `count` samples: g (h for `block`, which draws the power gain alone)."""
        return self.paths_[i].gains(0, count) if self.kind == "block" else self.paths_[i].complex_gains(0, count)

    def _samples(self, k_steps: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(g, |g|^2) [rows, K] unconditioned (h twice for `block`). The first BANK_MAX_ELEMENTS samples of the bank are
        held as one matrix, grown as far as asked, so that the many questions a plan asks of the same paths do not
        gather them path by path again; a few paths read further are gathered alone. Read-only views where all rows
        are asked."""
        limit = BANK_MAX_ELEMENTS // self.n
        if k_steps > limit:
            raw = np.stack([self._path(i, k_steps) for i in rows])
            return raw, (raw if self.kind == "block" else np.abs(raw) ** 2)
        if k_steps > self._held.shape[1]:
            count = min(max(k_steps, 2 * self._held.shape[1]), limit)
            self._raw = np.stack([self._path(i, count) for i in range(self.n)])
            self._held = self._raw if self.kind == "block" else np.abs(self._raw) ** 2
            self._raw.flags.writeable = self._held.flags.writeable = False
        if len(rows) == self.n:  # every path, in order (`rows` is always ascending)
            return self._raw[:, :k_steps], self._held[:, :k_steps]
        return self._raw[rows, :k_steps], self._held[rows, :k_steps]


@lru_cache(maxsize=32)
def _bank(kind: str, step_s: float, doppler: float) -> _Bank:
    return _Bank(kind=kind, step_s=step_s, doppler=doppler)


def expected_upload_seconds(
    *, bits: float, channel: ChannelConfig, mean_snr: float, gain: float | None = None,
    bandwidth_hz: float | None = None, start_s: float | None = None,
) -> float:
    """What a device expects an upload of `bits` to take, knowing the gain h now (`gain`; None: not known).

    Without a time axis: eq. 3 at h (`gain=None`: the average block, h = 1, since eq. 3's true mean is infinite);
    ARQ's closed form over independent attempts whatever h is (it sends blind); inversion's air time plus the
    expected wait (`inversion_expected_wait`). With a process in time: the mean of `upload` over the reference bank
    of the same process conditioned on h (`_Bank`; h on a 10% log grid, `gridded_gain`), decided at a uniform phase
    of the sampling step (`start_s` only tells a decision after an upload that never ended: infinite). Its sampling
    error is stated in tests/test_channel.py (the Monte Carlo agreement table).
    """
    width = channel.bandwidth_hz if bandwidth_hz is None else bandwidth_hz
    overhead = channel.upload_overhead_ms / 1e3
    if has_time_axis(channel):
        if (start_s is not None and not math.isfinite(start_s)) or (gain is not None and math.isnan(gain)):
            return math.inf  # decided after an upload that never ended
        # The question is asked per draft and per round with a continuous gain: answered on a grid of known gains
        # (GAIN_GRID_PER_DECADE, within 5% of h) at a uniform phase of the sampling step (the step is the
        # simulation's, not something a device knows), so a run asks a few thousand distinct questions at most.
        return _expected_in_time(_Hashable(channel), float(bits), float(mean_snr), float(width),
                                 None if gain is None else gridded_gain(gain))
    h = 1.0 if gain is None else gain
    if channel.model == "shannon":
        return overhead + uplink_seconds(bits=bits, bandwidth_hz=width, snr=mean_snr * h)
    if channel.model == "arq":  # sent blind: the expectation over the attempts, whatever h is now
        rate = _arq_rate(bits=bits, channel=channel, mean_snr=mean_snr, bandwidth_hz=width)
        if channel.fading == "none":
            return overhead + (bits / (width * rate) if math.log2(1.0 + mean_snr) >= rate else math.inf)
        return overhead + arq_expected_seconds(bits=bits, rate=rate, bandwidth_hz=width, mean_snr=mean_snr,
                                               feedback_s=channel.arq_feedback_ms / 1e3)
    if channel.fading == "none":
        return overhead + uplink_seconds(bits=bits, bandwidth_hz=width, snr=mean_snr)
    cutoff = _inversion_cutoff(channel=channel, mean_snr=mean_snr)
    air = bits / (width * inversion_rate(cutoff=cutoff, mean_snr=mean_snr))
    return overhead + inversion_expected_wait(cutoff=cutoff, coherence_s=channel.coherence_ms / 1e3, gain=gain) + air


GAIN_GRID_PER_DECADE = 24  # known gains are rounded to 10^(i / 24): neighbours 10% apart


def gridded_gain(gain: float) -> float:
    """h rounded to the nearest point of a log grid with GAIN_GRID_PER_DECADE points a decade (0 stays 0)."""
    if gain <= 0.0 or not math.isfinite(gain):
        return float(gain)
    return 10.0 ** (round(math.log10(gain) * GAIN_GRID_PER_DECADE) / GAIN_GRID_PER_DECADE)


class _Hashable:
    """A ChannelConfig as an lru_cache key (by value)."""

    def __init__(self, channel: ChannelConfig) -> None:
        self.channel, self.key = channel, dataclasses.astuple(channel)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Hashable) and self.key == other.key


@lru_cache(maxsize=8192)
def _expected_in_time(channel: _Hashable, bits: float, mean_snr: float, width: float, gain: float | None) -> float:
    """The bank's mean upload time at a uniform phase (see `expected_upload_seconds`), cached: a device asks the
    same question often."""
    return float(upload_time_samples(bits=bits, channel=channel.channel, mean_snr=mean_snr, gain=gain,
                                     bandwidth_hz=width).mean())


def upload_time_samples(
    *, bits: float, channel: ChannelConfig, mean_snr: float, gain: float | None = None,
    bandwidth_hz: float | None = None, start_s: float | None = None,
) -> np.ndarray:
    """The upload time on each reference path of the bank [N] (a process in time): `expected_upload_seconds` is
    their mean, and their standard deviation over sqrt(N) its sampling error."""
    if not has_time_axis(channel):
        raise ValueError(f"channel.process={channel.process!r} has no time axis: its expectations are closed forms")
    width = channel.bandwidth_hz if bandwidth_hz is None else bandwidth_hz
    bank = _bank(channel.process, step_seconds(channel),
                 doppler_hz(speed_kmh=channel.speed_kmh, carrier_ghz=channel.carrier_ghz))
    seconds, _, _ = _link_in_time(paths=bank.paths(gain=gain, start_s=start_s), bits=bits, channel=channel,
                                  mean_snr=mean_snr, width=width, overhead=channel.upload_overhead_ms / 1e3)
    return seconds
