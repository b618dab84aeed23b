"""Eq. 3 (uplink time), eq. 4 (throughput), the channel's SNR and the payload size, against values worked by hand."""

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import exp1

from uhlm_ray.config import ChannelConfig, PayloadConfig
from uhlm_ray.link.channel import (
    arq_expected_seconds,
    arq_success_probability,
    draw_fading_gain,
    expected_upload_seconds,
    inversion_rate,
    latency_optimal_rate,
    optimal_inversion_cutoff,
    uplink_seconds,
    upload,
)
from uhlm_ray.link.payload import full_payload_bits
from uhlm_ray.link.throughput import round_throughput, run_throughput
from uhlm_ray.snr import mean_snr, mean_snr_db


def test_eq3_uplink_time_by_hand():
    # B = 1 Mbit over W = 1 MHz: SNR = 1 -> log2(2) = 1 -> 1 s; SNR = 3 -> log2(4) = 2 -> 0.5 s
    assert uplink_seconds(bits=1e6, bandwidth_hz=1e6, snr=1.0) == pytest.approx(1.0)
    assert uplink_seconds(bits=1e6, bandwidth_hz=1e6, snr=3.0) == pytest.approx(0.5)
    # the paper's payload: |V| = 32,000 fp32 = 1,024,000 bits; at SNR = 15 (log2 16 = 4) -> 0.256 s
    assert uplink_seconds(bits=1_024_000, bandwidth_hz=1e6, snr=15.0) == pytest.approx(0.256)
    assert uplink_seconds(bits=1.0, bandwidth_hz=1e6, snr=0.0) == math.inf


def test_paper_default_average_snr():
    # p = 23 dBm = 0.19953 W, N = -104 dBm = 3.9811e-14 W, rho^-alpha = 2500^-4 = 2.56e-14
    expected = 0.19952623 * 2.56e-14 / 3.98107171e-14
    assert mean_snr(ChannelConfig()) == pytest.approx(expected, rel=1e-6)
    assert mean_snr_db(ChannelConfig()) == pytest.approx(-8.918, abs=1e-3)
    assert mean_snr_db(ChannelConfig(mean_snr_db=12.5)) == pytest.approx(12.5)


def test_rayleigh_power_gain_is_unit_exponential():
    rng = np.random.default_rng(0)
    gains = [draw_fading_gain(rng=rng, fading="rayleigh") for _ in range(5000)]
    assert stats.kstest(gains, stats.expon().cdf).pvalue > 1e-3
    assert draw_fading_gain(rng=rng, fading="none") == 1.0


def test_eq4_throughput_by_hand():
    # the paper's tau_SLM = 24.6 ms, tau_LLM = 104.6 ms and a 0.5 s upload
    assert round_throughput(sent=True, tau_slm=0.0246, tau_up=0.5, tau_llm=0.1046) == pytest.approx(1 / 0.6292)
    assert round_throughput(sent=False, tau_slm=0.0246, tau_up=0.5, tau_llm=0.1046) == pytest.approx(1 / 0.0246)
    assert run_throughput(tokens=10, seconds=4.0) == 2.5


def test_payload_bits_by_hand():
    assert full_payload_bits(vocab_size=32_000, cfg=PayloadConfig(prob_bits=32)) == 1_024_000 + 15
    assert full_payload_bits(vocab_size=151_936, cfg=PayloadConfig(prob_bits=16)) == 151_936 * 16 + 18
    assert full_payload_bits(vocab_size=32_000, cfg=PayloadConfig(include_draft_index=False)) == 1_024_000


# --- link models beyond eq. 3 (uhlm_ray/link/channel.py) -------------------------------------------------------------

PAPER_SNR = mean_snr(ChannelConfig())  # -8.92 dB


def _uploads(channel: ChannelConfig, *, bits: float, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [upload(bits=bits, channel=channel, mean_snr=PAPER_SNR, rng=rng) for _ in range(n)]


def test_shannon_mode_is_eq3_of_the_first_draw_plus_the_overhead():
    channel = ChannelConfig(model="shannon", upload_overhead_ms=10.0)
    rng, again = np.random.default_rng(4), np.random.default_rng(4)
    up = upload(bits=1e5, channel=channel, mean_snr=PAPER_SNR, rng=rng)
    h = draw_fading_gain(rng=again, fading="rayleigh")
    assert up.gain == h and up.attempts == 1 and up.delivered
    assert up.seconds == pytest.approx(0.010 + uplink_seconds(bits=1e5, bandwidth_hz=1e6, snr=PAPER_SNR * h))


def test_arq_by_hand_without_fading():
    capacity = math.log2(1.0 + PAPER_SNR)
    still = ChannelConfig(model="arq", fading="none", upload_overhead_ms=0.0)
    (up,) = _uploads(still, bits=1e4, n=1)
    assert up.attempts == 1 and up.seconds == pytest.approx(1e4 / (1e6 * capacity))  # the capacity, no failure
    (never,) = _uploads(ChannelConfig(model="arq", fading="none", arq_rate=capacity * 1.01), bits=1e4, n=1)
    assert never.seconds == math.inf


def test_arq_latency_optimal_rate_solves_the_first_order_condition():
    rate = latency_optimal_rate(bits=1e6, bandwidth_hz=1e6, mean_snr=PAPER_SNR, feedback_s=0.0)
    assert rate * 2**rate * math.log(2) == pytest.approx(PAPER_SNR, rel=1e-4)  # R 2^R ln 2 = s
    assert arq_success_probability(rate=rate, mean_snr=PAPER_SNR) == pytest.approx(
        math.exp(-(2**rate - 1) / PAPER_SNR))
    # a feedback delay makes failures costlier: a small payload's optimum backs off to a safer, lower rate
    assert latency_optimal_rate(bits=100, bandwidth_hz=1e6, mean_snr=PAPER_SNR, feedback_s=0.004) < rate


def test_arq_attempts_are_geometric_and_the_mean_is_finite():
    """Attempts ~ Geometric(p) (chi-square, alpha = 1e-3) and the sample mean time matches the closed form."""
    channel = ChannelConfig(model="arq", arq_rate=0.2, arq_feedback_ms=4.0, upload_overhead_ms=10.0)
    ups = _uploads(channel, bits=2000, n=20_000, seed=1)
    p = arq_success_probability(rate=0.2, mean_snr=PAPER_SNR)
    attempts = np.array([u.attempts for u in ups])
    counts = np.bincount(attempts)[1:6].astype(float)
    tail = len(attempts) - counts.sum()
    expected = np.array([p * (1 - p) ** (k - 1) for k in range(1, 6)]) * len(attempts)
    assert stats.chisquare(np.append(counts, tail), np.append(expected, len(attempts) - expected.sum())).pvalue > 1e-3
    mean = 0.010 + arq_expected_seconds(bits=2000, rate=0.2, bandwidth_hz=1e6, mean_snr=PAPER_SNR, feedback_s=0.004)
    times = np.array([u.seconds for u in ups])
    assert abs(times.mean() - mean) < 4 * times.std() / math.sqrt(len(times))
    assert expected_upload_seconds(bits=2000, channel=channel, mean_snr=PAPER_SNR) == pytest.approx(mean)


def test_truncated_inversion_by_hand():
    h0 = 0.3
    assert inversion_rate(cutoff=h0, mean_snr=2.0) == pytest.approx(math.log2(1 + 2.0 / exp1(0.3)))
    best = optimal_inversion_cutoff(mean_snr=PAPER_SNR)
    average = lambda c: inversion_rate(cutoff=c, mean_snr=PAPER_SNR) * math.exp(-c)  # noqa: E731
    assert average(best) >= max(average(best * 0.9), average(best * 1.1))
    channel = ChannelConfig(model="inversion", inversion_cutoff=h0, coherence_ms=10.0, upload_overhead_ms=0.0)
    ups = _uploads(channel, bits=1000, n=20_000, seed=2)
    air = 1000 / (1e6 * inversion_rate(cutoff=h0, mean_snr=PAPER_SNR))
    waits = np.array([u.attempts - 1 for u in ups])
    assert all(u.seconds == pytest.approx(air + (u.attempts - 1) * 0.010) for u in ups[:50])
    # waits ~ Geometric(P(h >= h0) = exp(-h0)) - 1: mean (1 - q) / q
    q = math.exp(-h0)
    assert abs(waits.mean() - (1 - q) / q) < 4 * waits.std() / math.sqrt(len(waits))


def test_deadline_waits_or_falls_back():
    slow = ChannelConfig(model="shannon", fading="none", upload_overhead_ms=0.0, deadline_ms=5.0)
    (waited,) = _uploads(slow, bits=1e5, n=1)
    assert waited.delivered and waited.seconds > 0.005
    (fell,) = _uploads(ChannelConfig(model="shannon", fading="none", upload_overhead_ms=0.0, deadline_ms=5.0,
                                     deadline_mode="fallback"), bits=1e5, n=1)
    assert not fell.delivered and fell.seconds == 0.005


def test_eq3_mean_keeps_growing_with_the_draws_while_the_median_stays():
    """E[1 / log2(1 + s h)] diverges at h -> 0 under Rayleigh fading, so the typical sample mean of n uploads grows
    with n (like log n: the deepest fade among more draws is deeper), while the median does not move."""
    channel = ChannelConfig(model="shannon", upload_overhead_ms=0.0)
    batch_means, medians = {}, {}
    for n in (100, 1000):
        times = np.array([u.seconds for u in _uploads(channel, bits=1e4, n=200 * n, seed=n)]).reshape(200, n)
        batch_means[n], medians[n] = np.median(times.mean(axis=1)), np.median(times)
    assert batch_means[1000] > 1.15 * batch_means[100]
    assert medians[1000] == pytest.approx(medians[100], rel=0.03)
