"""Run metrics from hand-made records: TR, TSR, rejection risk, spec-decode counts, both clocks, the SNR sweep."""

import math

import pytest

from uhlm_ray.config import ChannelConfig
from uhlm_ray.measures.clock import ModelledClock, measured_clock
from uhlm_ray.measures.metrics import SpecDecodeStats, summarize
from uhlm_ray.records import PromptResult, RoundRecord

# eq. 3 without fading or overhead at 0 dB (log2(1 + 1) = 1 bit/s/Hz over 1 MHz): 1 Mbit takes 1 s
CHANNEL = ChannelConfig(model="shannon", fading="none", upload_overhead_ms=0.0, mean_snr_db=0.0)


def _record(t, *, sent, beta, accepted=None, tau_up=0.0, gain=1.0, catch_up=1):
    return RoundRecord(
        method="u_hlm", prompt_index=0, round=t, draft=5, token=5, uncertainty=0.5, sent=sent, x_d=0.5,
        y_d=0.5 * (1 - beta), beta=beta, accepted=accepted, resampled=(accepted is False) if sent else None,
        payload_bits=round(tau_up * 1e6) if sent else 0, catch_up_tokens=catch_up if sent else 0, fading_gain=gain,
        snr_db=0.0,
        tau_up_s=tau_up, tau_slm_s=0.05, tau_uncertainty_s=0.01, tau_llm_s=0.1 if sent else 0.0, wall_s=0.2,
    )


def _result(records):
    return PromptResult(method="u_hlm", prompt_index=0, example_id="e", reference="r", response="x",
                        tokens=[r.token for r in records], stop_reason="max_new_tokens", prompt_tokens=3,
                        prefill_s=1.0, records=records, similarity=0.8)


RECORDS = [
    _record(1, sent=True, beta=0.5, accepted=False, tau_up=1.0, gain=1.0),
    _record(2, sent=False, beta=0.0),
    _record(3, sent=False, beta=0.2),
    _record(4, sent=True, beta=0.0, accepted=True, tau_up=3.0, catch_up=2),
]


def test_rates_and_counts_by_hand():
    stats = SpecDecodeStats.from_records(RECORDS)
    assert (stats.num_drafts, stats.num_accepted_tokens, stats.num_recovered_tokens, stats.num_skipped) == (2, 1, 1, 2)
    assert stats.acceptance_rate == 0.5
    s = summarize(results=[_result(RECORDS)], clock=ModelledClock(tau_slm=0.05, tau_llm=0.1), channel=CHANNEL,
                  seed=0, snr_sweep_db=[])
    assert s["transmission_rate"] == 0.5
    assert s["bits_per_token"] == pytest.approx(4e6 / 4) and s["exact"] == 0.0
    # 1 - beta per round: 0.5, 1.0, 0.8, 1.0 -> skipped share of acceptable mass = 1.8 / 3.3
    assert s["true_skip_rate"] == pytest.approx(1.8 / 3.3)
    assert s["skip_precision"] == pytest.approx(0.9)
    assert s["rejection_risk"] == pytest.approx(0.2 / 4)
    assert s["mean_catch_up_tokens"] == 1.5


def test_both_clocks_by_hand():
    s = summarize(results=[_result(RECORDS)], clock=ModelledClock(tau_slm=0.05, tau_llm=0.1), channel=CHANNEL,
                  seed=0, snr_sweep_db=[0.0, 10 * math.log10(3)])
    # modelled (eq. 4): 4 x tau_SLM + 2 x tau_LLM + uplinks 1.0 + 3.0 = 0.2 + 0.2 + 4.0, plus the measure's own
    # 4 x 0.01 s (U-HLM's policy uses u)
    assert s["throughput_modelled"] == pytest.approx(4 / 4.44)
    assert s["mean_uncertainty_ms"] == pytest.approx(10.0)
    # wall: the rounds' measured time only (the 1 s prefill is reported apart)
    assert s["throughput_wall"] == pytest.approx(4 / 0.8)
    assert s["mean_prefill_s"] == 1.0
    assert s["round_overhead_share"] == pytest.approx((0.8 - 0.4) / 0.8)
    # the uploads' median and p95 beside the mean (eq. 3's mean is infinite under Rayleigh fading)
    assert (s["mean_uplink_ms"], s["median_uplink_ms"]) == (pytest.approx(2000.0), pytest.approx(2000.0))
    assert s["p95_uplink_ms"] == pytest.approx(1000.0 + 0.95 * 2000.0)
    # the run's channel is 0 dB: the sweep's 0 dB point prices the uploads as the run did
    assert s["throughput_modelled_snr_0dB"] == pytest.approx(s["throughput_modelled"])
    # at an average SNR of 3 (4.77 dB) eq. 3 doubles the rate: 1 Mbit and 3 Mbit take 0.5 s and 1.5 s
    assert s[f"throughput_modelled_snr_{10 * math.log10(3):g}dB"] == pytest.approx(4 / (0.44 + 2.0))


def test_measured_clock_skips_round_one_and_catch_ups():
    clock = measured_clock(RECORDS)
    assert clock.tau_slm == 0.05
    assert clock.tau_llm == 0.1  # round 4 caught up on 2 tokens and is left out; round 1 processed 1
    # with no one-token LLM pass (a rarely-sending method alone), the fewest-token catch-ups stand in (an upper bound)
    import dataclasses

    catch_ups = [dataclasses.replace(RECORDS[3], round=5, catch_up_tokens=3, tau_llm_s=0.4),
                 dataclasses.replace(RECORDS[3], tau_llm_s=0.2), dataclasses.replace(RECORDS[3], tau_llm_s=0.3)]
    assert measured_clock(catch_ups).tau_llm == pytest.approx(0.25)  # median of the two 2-token passes
    assert math.isnan(measured_clock(RECORDS[1:3]).tau_llm)  # nothing sent: nothing to measure
