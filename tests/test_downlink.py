"""The downlink: what comes back after a round, its rate, and its place on the modelled clock (on by default, off
on request); config errors name the field."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uhlm_ray.config import ChannelConfig, ClockConfig, DownlinkConfig, load_config
from uhlm_ray.experiments.evaluate import run_clock
from uhlm_ray.link.capacity import ergodic_capacity
from uhlm_ray.link.downlink import (
    DownlinkLink,
    downlink_bits,
    downlink_link,
    downlink_mean_snr_db,
    downlink_seconds,
)
from uhlm_ray.link.fading import DecodeClock
from uhlm_ray.measures.clock import ModelledClock, modelled_seconds
from uhlm_ray.records import BlockRecord, PromptResult, RoundRecord
from uhlm_ray.snr import db_to_linear, mean_snr_db
from uhlm_ray.validation import ConfigError

ID_BITS = 18  # ceil(log2 |V|) for the embedded pair's 151,936 ids (2^17 < 151,936)


def _round(*, method="u_hlm", sent=True, accepted=True, tau_up=0.05):
    return RoundRecord(
        method=method, prompt_index=0, round=1, draft=5, token=5, uncertainty=0.5, sent=sent, x_d=0.5, y_d=0.5,
        beta=0.0, accepted=accepted if sent else None, resampled=(not accepted) if sent else None,
        payload_bits=100 if sent else 0, catch_up_tokens=1 if sent else 0, fading_gain=1.0, snr_db=0.0,
        tau_up_s=tau_up if sent else 0.0, tau_slm_s=0.02, tau_uncertainty_s=0.0, tau_llm_s=0.1 if sent else 0.0,
        wall_s=0.2, tau_air_s=tau_up / 2 if sent else 0.0)


def _block(*, n=3, accepted=1, sent=True):
    return BlockRecord(
        method="block_hlm", prompt_index=0, round=1, position=1, drafts=[5] * n, uncertainty=[0.1] * n,
        x_d=[0.5] * n, verified=[True] * n, sent=sent, tokens=[5] * (accepted + 1), num_accepted=accepted,
        recovered=accepted < n, bonus=accepted == n, y_d=[0.5] * n, accept_prob=[0.5] * n, payload_bits=300,
        sync_bits=0, kept_tokens=3, fading_gain=1.0, snr_db=0.0, upload_attempts=1, deadline_fallback=False,
        tau_up_s=0.05, tau_slm_s=0.06, tau_uncertainty_s=0.0, tau_llm_s=0.1, llm_pass_tokens=n, wall_s=0.3,
        tau_air_s=0.02)


def test_bits_that_come_back_by_hand():
    assert downlink_bits(record=_round(accepted=True), id_bits=ID_BITS) == 1  # the verdict: the device has the token
    assert downlink_bits(record=_round(accepted=False), id_bits=ID_BITS) == 1 + ID_BITS  # and the resampled id
    assert downlink_bits(record=_round(sent=False), id_bits=ID_BITS) == 0  # nothing verified, nothing comes back
    assert downlink_bits(record=_round(method="llm", sent=False), id_bits=ID_BITS) == ID_BITS  # streamed token
    # a block of 3: a in {0..3} takes 2 bits, then the recovered (or bonus) token's id
    assert downlink_bits(record=_block(n=3, accepted=1), id_bits=ID_BITS) == 2 + ID_BITS
    assert downlink_bits(record=_block(n=3, accepted=3), id_bits=ID_BITS) == 2 + ID_BITS
    assert downlink_bits(record=_block(n=1, accepted=0), id_bits=ID_BITS) == 1 + ID_BITS


def test_ergodic_capacity_matches_monte_carlo():
    """E[log2(1 + s h)], h ~ Exp(1): the closed form against 400k seeded draws, within 1% (the Monte Carlo's
    standard error is under 0.2% at these SNRs)."""
    h = np.random.default_rng(3).exponential(size=400_000)
    for snr_db in (-10.0, 0.0, 4.0, 20.0):
        s = db_to_linear(snr_db)
        assert ergodic_capacity(mean_snr=s, fading="rayleigh") == pytest.approx(np.log2(1 + s * h).mean(), rel=0.01)
        assert ergodic_capacity(mean_snr=s, fading="none") == pytest.approx(math.log2(1 + s))
    # the asymptotic branch (1/s >= 500) joins the exact one, and log2(1 + s h) ~ s h / ln 2 at low SNR
    below, above = (ergodic_capacity(mean_snr=1 / x, fading="rayleigh") for x in (500.0 - 1e-9, 500.0 + 1e-9))
    assert above == pytest.approx(below, rel=1e-9)
    assert ergodic_capacity(mean_snr=1 / 600, fading="rayleigh") == pytest.approx((1 / 600) / math.log(2), rel=0.01)


def test_defaults_give_the_uplink_path_at_the_base_station_power():
    channel = ChannelConfig()
    # 36 dBm instead of the device's 23 dBm over the same path: 13 dB above the uplink's -8.9 dB
    assert downlink_mean_snr_db(downlink=DownlinkConfig(), channel=channel) == pytest.approx(
        mean_snr_db(channel) + 13.0)
    link = downlink_link(downlink=DownlinkConfig(), channel=channel, vocab_size=151_936)
    assert link.id_bits == ID_BITS and link.overhead_s == pytest.approx(1e-3)
    assert 1e5 < link.rate_bps < 3e6  # about 1.5 bit/s/Hz over 1 MHz
    assert downlink_link(downlink=DownlinkConfig(enabled=False), channel=channel, vocab_size=10) is None


def test_a_sent_round_waits_for_its_answer_on_the_modelled_clock():
    link = DownlinkLink(rate_bps=1e4, overhead_s=0.002, id_bits=10)
    plain = ModelledClock(tau_slm=0.02, tau_llm=0.1)
    with_down = ModelledClock(tau_slm=0.02, tau_llm=0.1, downlink=link)
    rejected = _round(accepted=False)
    # 11 bits at 10 kbit/s plus the overhead
    assert modelled_seconds(record=rejected, clock=with_down) - modelled_seconds(record=rejected, clock=plain) == \
        pytest.approx(0.002 + 11 / 1e4)
    block = _block(n=3, accepted=1)
    assert modelled_seconds(record=block, clock=with_down) - modelled_seconds(record=block, clock=plain) == \
        pytest.approx(0.002 + 12 / 1e4)
    skipped = _round(sent=False)
    assert modelled_seconds(record=skipped, clock=with_down) == modelled_seconds(record=skipped, clock=plain)
    # the LLM alone streams its tokens while it generates the next: no time on the clock
    alone = _round(method="llm", sent=False)
    assert downlink_seconds(record=alone, link=link) == 0.0
    assert modelled_seconds(record=alone, clock=with_down) == plain.tau_llm


def test_the_decode_time_clock_walks_rounds_as_the_run_clock_prices_them():
    """The device's decode-time clock (what sets when each later round reads its fade, and what the channel-aware
    rules price) charges a sent round its answer on the downlink, as the run's clock does: with the same taus the
    two agree on every kind of round, and without a downlink both leave it out."""
    link = DownlinkLink(rate_bps=1e4, overhead_s=0.002, id_bits=10)
    clock = ClockConfig(tau_slm_ms=20.0, tau_llm_ms=100.0, llm_pass="flat", flat_pass_tokens=16)
    records = [_round(accepted=False), _round(accepted=True), _round(sent=False), _round(method="llm", sent=False),
               _block(n=3, accepted=1), _block(n=3, accepted=3), _block(n=2, sent=False)]
    for downlink in (link, None):
        decode = DecodeClock.from_config(clock, downlink=downlink)
        run = ModelledClock(tau_slm=0.02, tau_llm=0.1, llm_pass="flat", flat_pass_tokens=16, downlink=downlink)
        for record in records:
            assert decode.round_seconds(record) == pytest.approx(modelled_seconds(record=record, clock=run))
    # a block's answer as a device plans it: the verdict of 3 drafts (2 bits) and the LLM's own token
    assert link.block_answer_seconds(3) == pytest.approx(0.002 + 12 / 1e4)
    assert link.draft_answer_seconds() == pytest.approx(0.002 + 11 / 1e4)
    on = DecodeClock.for_run(load_config(), measure="temperature", vocab_size=151_936)
    off = DecodeClock.for_run(load_config(overrides=["downlink.enabled=false"]), measure="temperature",
                              vocab_size=151_936)
    assert on.downlink is not None and on.downlink.id_bits == ID_BITS and off.downlink is None


def _result(records):
    return PromptResult(method=records[0].method, prompt_index=0, example_id="e", reference="r", response="x",
                        tokens=[5] * len(records), stop_reason="eos", prompt_tokens=3, prefill_s=0.0,
                        records=records)


def test_run_clock_has_the_downlink_when_enabled_and_not_when_disabled():
    results = {"u_hlm": [_result([_round(accepted=False), _round(sent=False), _round(accepted=True)])]}
    on = load_config(overrides=["methods=[u_hlm]", "clock.tau_slm_ms=20", "clock.tau_llm_ms=100"])
    off = load_config(overrides=["methods=[u_hlm]", "clock.tau_slm_ms=20", "clock.tau_llm_ms=100",
                                 "downlink.enabled=false"])
    clock_on = run_clock(results=results, cfg=on, vocab_size=151_936)
    clock_off = run_clock(results=results, cfg=off, vocab_size=151_936)
    assert clock_on.downlink is not None and clock_off.downlink is None
    records = results["u_hlm"][0].records
    extra = sum(modelled_seconds(record=r, clock=clock_on) - modelled_seconds(record=r, clock=clock_off)
                for r in records)
    rate = clock_on.downlink.rate_bps
    assert extra == pytest.approx(2 * 1e-3 + (1 + ID_BITS + 1) / rate)  # two sent rounds: 18 bits and 1 bit


@pytest.mark.parametrize(("override", "name"), [
    ("downlink.overhead_ms=-1", "downlink.overhead_ms"),
    ("downlink.bandwidth_hz=10", "downlink.bandwidth_hz"),
    ("downlink.mean_snr_db=99", "downlink.mean_snr_db"),
    ("downlink.noise_dbm=100", "downlink.noise_dbm"),
])
def test_config_errors_name_the_field(override, name):
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        load_config(overrides=[override])


def test_an_unreachable_downlink_is_refused_unless_switched_off():
    with pytest.raises(ConfigError, match="downlink"):
        load_config(overrides=["downlink.tx_power_dbm=-60"])
    assert not load_config(overrides=["downlink.tx_power_dbm=-60", "downlink.enabled=false"]).downlink.enabled
