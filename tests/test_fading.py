"""The fading process in time (uhlm_ray/link/fading.py): Doppler, correlation, marginal, keyed determinism.

Statistical checks use fixed seeds and state their tolerance or significance level.
"""

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import j0

from uhlm_ray.config import ChannelConfig, ClockConfig, EvaluateConfig, validate_config
from uhlm_ray.link.fading import (
    DecodeClock,
    doppler_hz,
    gauss_markov_rho,
    process_for,
    shared_process,
    step_seconds,
)
from uhlm_ray.sampling.rng import SessionKey
from uhlm_ray.validation import ConfigError


def _processes(channel: ChannelConfig, n: int, seed: int = 0):
    return [process_for(channel=channel, key=SessionKey(seed=seed, device=0, prompt=p)) for p in range(n)]


def test_doppler_frequency_and_ar1_coefficient_by_hand():
    # 3 km/h at 2 GHz: v f_c / c = (3 / 3.6) * 2e9 / 299792458 = 5.5594 Hz
    assert doppler_hz(speed_kmh=3.0, carrier_ghz=2.0) == pytest.approx(5.5594, abs=1e-4)
    assert doppler_hz(speed_kmh=120.0, carrier_ghz=2.0) == pytest.approx(222.38, abs=1e-2)
    assert gauss_markov_rho(doppler=5.5594, step_s=1e-3) == pytest.approx(j0(2 * math.pi * 5.5594e-3))
    # by default the AR(1) steps at Clarke's coherence time 9 / (16 pi f_D): 32.2 ms at 3 km/h and 2 GHz
    assert step_seconds(ChannelConfig()) == pytest.approx(9 / (16 * math.pi * 5.5594), rel=1e-4)
    assert step_seconds(ChannelConfig(fading_step_ms=1.0)) == 1e-3
    assert step_seconds(ChannelConfig(process="block")) == 0.010


def test_processes_without_a_time_axis():
    key = SessionKey(seed=0, device=0, prompt=0)
    assert process_for(channel=ChannelConfig(process="per_round"), key=key) is None
    assert process_for(channel=ChannelConfig(fading="none"), key=key) is None
    assert process_for(channel=ChannelConfig(), key=key).kind == "gauss_markov"  # the default


LAGS = (1, 2, 4, 8, 16)  # samples of 1 ms


def _autocorrelation(processes, lags, length: int = 2048) -> np.ndarray:
    """E[g(t + tau) g*(t)] estimated over processes and times (time and ensemble average), real part."""
    out = []
    for lag in lags:
        acc = []
        for p in processes:
            g = p.complex_gains(0, length + lag)
            acc.append(np.mean(g[lag:] * np.conj(g[:-lag])))
        out.append(float(np.real(np.mean(acc))))
    return np.array(out)


def test_clarke_autocorrelation_is_j0_at_several_lags():
    """Clarke/Jakes: E[g(t + tau) g*(t)] = J0(2 pi f_D tau) at lags 1-16 ms (60 km/h, f_D = 111 Hz, so J0 runs from
    0.88 through its first zero to -0.2 and back); 300 realisations x 2048 samples, tolerance 0.03 absolute."""
    channel = ChannelConfig(process="clarke", speed_kmh=60.0, fading_step_ms=1.0)
    fd = doppler_hz(speed_kmh=60.0, carrier_ghz=2.0)
    measured = _autocorrelation(_processes(channel, 300), LAGS)
    expected = j0(2 * math.pi * fd * np.array(LAGS) * 1e-3)
    assert np.abs(measured - expected).max() < 0.03, (measured, expected)


def test_gauss_markov_autocorrelation_is_j0_at_one_step_and_rho_to_the_lag_beyond():
    """The first-order Gauss-Markov approximation: Clarke's correlation at the sampling step T exactly, rho^k at lag
    k T (an AR(1) sampled faster than f_D decorrelates more slowly than Clarke's model). 60 km/h, 300 realisations
    x 2048 samples, tolerance 0.03 absolute."""
    channel = ChannelConfig(process="gauss_markov", speed_kmh=60.0, fading_step_ms=1.0)
    fd = doppler_hz(speed_kmh=60.0, carrier_ghz=2.0)
    rho = gauss_markov_rho(doppler=fd, step_s=1e-3)
    measured = _autocorrelation(_processes(channel, 300), LAGS)
    assert measured[0] == pytest.approx(float(j0(2 * math.pi * fd * 1e-3)), abs=0.03)
    assert np.abs(measured - rho ** np.array(LAGS)).max() < 0.03, (measured, rho ** np.array(LAGS))


@pytest.mark.parametrize("process", ["gauss_markov", "clarke", "block"])
def test_marginal_power_gain_is_unit_exponential(process):
    """h(t) ~ Exp(1) at any instant: one sample per realisation (2000, at a fixed time 0.5 s in), KS test at
    alpha = 0.01."""
    channel = ChannelConfig(process=process, speed_kmh=30.0)
    gains = [p.gain_at(0.5) for p in _processes(channel, 2000, seed=3)]
    assert stats.kstest(gains, stats.expon().cdf).pvalue > 0.01


@pytest.mark.parametrize("process", ["gauss_markov", "clarke", "block"])
def test_keyed_realisation(process):
    """Same key, same realisation, however it is read (lazily, in another order, through the cache); another
    prompt or device, another one."""
    channel = ChannelConfig(process=process)
    key = SessionKey(seed=7, device=1, prompt=2)
    a, b = process_for(channel=channel, key=key), process_for(channel=channel, key=key)
    late = b.gains(5000, 100)  # b is read late first: its earlier chunks are made on the way
    np.testing.assert_array_equal(a.gains(0, 6000)[5000:5100], late)
    np.testing.assert_array_equal(shared_process(channel=channel, key=key).gains(0, 300), a.gains(0, 300))
    other = process_for(channel=channel, key=SessionKey(seed=7, device=1, prompt=3))
    assert not np.array_equal(other.gains(0, 300), a.gains(0, 300))
    device = process_for(channel=channel, key=SessionKey(seed=7, device=2, prompt=2))
    assert not np.array_equal(device.gains(0, 300), a.gains(0, 300))


@pytest.mark.parametrize("process", ["gauss_markov", "clarke", "block"])
def test_reading_on_step_by_step_keeps_memory_proportional_to_what_was_read(process):
    """A long decode reads its process a little further at each upload: the buffer grows with what was made (at
    most doubling), not by doubling at every read (which asked for 32 GiB after 31 uploads of an HLM run)."""
    p = process_for(channel=ChannelConfig(process=process), key=SessionKey(seed=0, device=0, prompt=0))
    whole = process_for(channel=ChannelConfig(process=process), key=SessionKey(seed=0, device=0, prompt=0))
    for k in range(60):
        read = p.gains(k * 1000, 1500)
        np.testing.assert_array_equal(read, whole.gains(0, k * 1000 + 1500)[k * 1000:])
    made = p._made  # private on purpose: the buffer's size is the behaviour under test
    assert made >= 60_500 and len(p._data) <= 2 * made


def test_gain_is_piecewise_constant_on_the_sampling_grid():
    p = process_for(channel=ChannelConfig(fading_step_ms=1.0), key=SessionKey(seed=0, device=0, prompt=0))
    h = p.gains(0, 4)
    assert p.gain_at(0.0) == h[0] and p.gain_at(0.00099) == h[0] and p.gain_at(0.001) == h[1]
    assert p.gain_at(0.0035) == h[3]


def test_pedestrian_gauss_markov_fades_slowly():
    """At 3 km/h a 1 ms AR(1) keeps h nearly constant over an ARQ retry (4 ms later): corr(h_k, h_k+5) > 0.99; the
    default step (the coherence time, 32 ms) holds h over a retry and decorrelates on Clarke's scale: the power
    correlation at one step is rho^2 = J0(2 pi f_D T)^2 (about 0.49), near zero after ten steps."""
    p = process_for(channel=ChannelConfig(fading_step_ms=1.0), key=SessionKey(seed=0, device=0, prompt=0))
    h = p.gains(0, 200_000)
    assert np.corrcoef(h[:-5], h[5:])[0, 1] > 0.99
    default = process_for(channel=ChannelConfig(), key=SessionKey(seed=0, device=0, prompt=0))
    h = default.gains(0, 200_000)
    assert np.corrcoef(h[:-1], h[1:])[0, 1] == pytest.approx(default.rho ** 2, abs=0.02)
    assert abs(np.corrcoef(h[:-10], h[10:])[0, 1]) < 0.05


def test_channel_settings_are_validated():
    for field, value in [("speed_kmh", -1.0), ("carrier_ghz", 0.0), ("fading_step_ms", 0.0),
                         ("process", "rician"), ("coherence_ms", 0.0)]:
        cfg = EvaluateConfig()
        setattr(cfg.channel, field, value)
        with pytest.raises(ConfigError, match=f"channel.{field}"):
            validate_config(cfg)


def test_decode_clock_uses_configured_taus_else_the_papers():
    assert DecodeClock.from_config(ClockConfig()).tau_slm_s == pytest.approx(0.0246)
    assert DecodeClock.from_config(ClockConfig()).tau_llm_s == pytest.approx(0.1046)
    clock = DecodeClock.from_config(ClockConfig(tau_slm_ms=10.0, tau_llm_ms=50.0, tau_measure_ms=3.0,
                                                llm_pass="flat", flat_pass_tokens=4))
    assert (clock.tau_slm_s, clock.tau_llm_s) == (0.010, 0.050)
    assert clock.measure_seconds(measured_s=0.2, measurements=2) == pytest.approx(0.006)
    assert clock.measure_seconds(measured_s=0.0) == 0.0
    # never a wall-clock time: K SLM passes for the K-pass measures, nothing for temperature perturbation
    assert DecodeClock.from_config(ClockConfig(), measure="mc_dropout", k=20).measure_seconds(
        measured_s=0.5) == pytest.approx(20 * 0.0246)
    assert DecodeClock.from_config(ClockConfig()).measure_seconds(measured_s=0.5) == 0.0
    assert clock.llm_pass_seconds(9) == pytest.approx(0.150)
