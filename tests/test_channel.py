"""Eq. 3 (uplink time), eq. 4 (throughput), the channel's SNR and the payload size, against values worked by hand."""

import math

import numpy as np
import pytest
from scipy import stats

from uhlm_ray.channel import draw_fading_gain, mean_snr, mean_snr_db, uplink_seconds
from uhlm_ray.config import ChannelConfig, PayloadConfig
from uhlm_ray.payload import full_payload_bits
from uhlm_ray.throughput import round_throughput, run_throughput


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
