"""Device and base-station energy: the parts add up, a tail cut short by the next upload counts only up to it, a
method that never sends spends no radio energy, the uncertainty measure's K passes are charged, config errors name
the field, and a real (tiny) run reports every figure with its interval."""

from __future__ import annotations

import math

import pytest

from uhlm_ray.config import ChannelConfig, EnergyConfig, load_config
from uhlm_ray.experiments.datasets import Example
from uhlm_ray.experiments.evaluate import evaluate_methods, summarize_methods
from uhlm_ray.link.downlink import DownlinkLink
from uhlm_ray.link.energy import DEVICE_PARTS, Energy, energy_model
from uhlm_ray.measures.clock import ModelledClock
from uhlm_ray.measures.energy import energy_summary, prompt_energy
from uhlm_ray.records import PromptResult, RoundRecord
from uhlm_ray.snr import dbm_to_watts
from uhlm_ray.validation import ConfigError

CLOCK = ModelledClock(tau_slm=0.05, tau_llm=0.1)
MODEL = energy_model(energy=EnergyConfig(), channel=ChannelConfig(), extra_passes={})


def _round(t, *, method="u_hlm", sent, tau_up=0.2, air=0.1, tau_u=0.0, catch_up=1):
    return RoundRecord(
        method=method, prompt_index=0, round=t, draft=5, token=5, uncertainty=0.5, sent=sent, x_d=0.5, y_d=0.5,
        beta=0.0, accepted=True if sent else None, resampled=False if sent else None, payload_bits=100 if sent else 0,
        catch_up_tokens=catch_up if sent else 0, fading_gain=1.0, snr_db=0.0, tau_up_s=tau_up if sent else 0.0,
        tau_slm_s=0.05, tau_uncertainty_s=tau_u, tau_llm_s=0.1 if sent else 0.0, wall_s=0.2,
        tau_air_s=air if sent else 0.0)


RECORDS = [_round(1, sent=True), _round(2, sent=False), _round(3, sent=True, catch_up=2)]


def test_the_parts_add_up_to_the_total():
    e = prompt_energy(records=RECORDS, clock=CLOCK, model=MODEL)
    assert e.device == pytest.approx(sum(getattr(e, p) for p in DEVICE_PARTS))
    assert e.device == pytest.approx(e.compute + e.measure + e.radio)
    s = energy_summary(results=[_result(RECORDS)], clock=ModelledClock(tau_slm=0.05, tau_llm=0.1, energy=MODEL),
                       tokens=3)
    assert s["energy_device_j_per_token"] == pytest.approx(sum(s[f"energy_{p}_j_per_token"] for p in DEVICE_PARTS))
    assert s["energy_device_j_per_round"] == pytest.approx(e.device / 3)
    # the base station: 1 + 2 LLM-pass tokens for 2 verified tokens
    assert s["energy_bs_j_per_verified_token"] == pytest.approx(3 * EnergyConfig().bs_j_per_token / 2)


def test_each_part_by_hand_and_a_tail_cut_short_by_the_next_upload():
    """Round 1 uploads over [0.05, 0.25] s (0.1 s on air); round 2 (0.35-0.40 s) skips; round 3 uploads from
    0.45 s: the tail between is 0.2 s, shorter than the tail time, so it counts 0.2 s; the last tail runs in full."""
    e = prompt_energy(records=RECORDS, clock=CLOCK, model=MODEL)
    cfg = EnergyConfig()
    pa = dbm_to_watts(ChannelConfig().tx_power_dbm) / cfg.pa_efficiency
    assert e.compute == pytest.approx(3 * cfg.slm_j_per_forward)
    assert e.tx == pytest.approx(2 * 0.1 * (pa + cfg.radio_active_w))
    assert e.wait == pytest.approx(2 * 0.1 * cfg.radio_active_w)
    assert e.tail == pytest.approx(cfg.tail_w * (0.2 + cfg.tail_s))
    assert e.promotion == pytest.approx(cfg.promotion_w * cfg.promotion_s)  # once: the radio never went idle
    assert e.rx == 0.0 and e.measure == 0.0  # no downlink on this clock; the measure took no time


def test_a_tail_that_runs_out_is_paid_in_full_and_the_radio_promoted_again():
    short = energy_model(energy=EnergyConfig(tail_s=0.1), channel=ChannelConfig(), extra_passes={})
    e = prompt_energy(records=RECORDS, clock=CLOCK, model=short)
    assert e.tail == pytest.approx(2 * 0.1 * EnergyConfig().tail_w)  # the 0.2 s gap outlasts the 0.1 s tail
    assert e.promotion == pytest.approx(2 * EnergyConfig().promotion_w * EnergyConfig().promotion_s)


def test_a_method_that_never_sends_spends_no_radio_energy():
    records = [_round(t, method="slm", sent=False) for t in range(1, 6)]
    clock = ModelledClock(tau_slm=0.05, tau_llm=0.1, energy=MODEL,
                          downlink=DownlinkLink(rate_bps=1e6, overhead_s=1e-3, id_bits=18))
    e = prompt_energy(records=records, clock=clock, model=MODEL)
    assert e.radio == 0.0 and e.bs == 0.0
    assert e.device == pytest.approx(5 * EnergyConfig().slm_j_per_forward)
    s = energy_summary(results=[_result(records)], clock=clock, tokens=5)
    assert math.isnan(s["energy_bs_j_per_verified_token"])  # nothing verified


def test_the_downlink_costs_receive_energy_and_the_llm_alone_receives_every_token():
    link = DownlinkLink(rate_bps=1e6, overhead_s=1e-3, id_bits=18)
    clock = ModelledClock(tau_slm=0.05, tau_llm=0.1, downlink=link)
    e = prompt_energy(records=RECORDS, clock=clock, model=MODEL)
    per_second = EnergyConfig().radio_active_w + EnergyConfig().rx_w_per_mbps * 1.0
    assert e.rx == pytest.approx(2 * (1e-3 + 1 / 1e6) * per_second)  # two accepted drafts: a 1-bit verdict each
    alone = [_round(t, method="llm", sent=False) for t in range(1, 4)]
    e = prompt_energy(records=alone, clock=clock, model=MODEL)
    assert e.compute == 0.0 and e.tx == 0.0
    assert e.rx == pytest.approx(3 * (1e-3 + 18 / 1e6) * per_second)
    assert e.bs == pytest.approx(3 * EnergyConfig().bs_j_per_token) and e.verified_tokens == 3


def test_the_measures_own_passes_are_charged():
    measured = [_round(1, sent=False, tau_u=0.3)]  # U-HLM's policy measured u (0.3 s of K passes on the clock)
    mc = energy_model(energy=EnergyConfig(), channel=ChannelConfig(), extra_passes={"u_hlm": 20})
    assert prompt_energy(records=measured, clock=CLOCK, model=mc).measure == pytest.approx(
        20 * EnergyConfig().slm_j_per_forward)
    # a vectorised measure (temperature perturbation): the SLM's power for the measure's own seconds
    e = prompt_energy(records=measured, clock=CLOCK, model=MODEL)
    assert e.measure == pytest.approx(EnergyConfig().slm_j_per_forward / CLOCK.tau_slm * 0.3)
    # a configured power prices a forward at power x tau_SLM
    powered = energy_model(energy=EnergyConfig(slm_power_w=4.0), channel=ChannelConfig(), extra_passes={})
    assert prompt_energy(records=measured, clock=CLOCK, model=powered).compute == pytest.approx(4.0 * 0.05)


@pytest.mark.parametrize(("override", "name"), [
    ("energy.pa_efficiency=0", "energy.pa_efficiency"),
    ("energy.pa_efficiency=1.5", "energy.pa_efficiency"),
    ("energy.tail_s=-1", "energy.tail_s"),
    ("energy.slm_j_per_forward=-0.1", "energy.slm_j_per_forward"),
    ("energy.slm_power_w=-2", "energy.slm_power_w"),
    ("energy.bs_j_per_token=-3", "energy.bs_j_per_token"),
    ("energy.rx_w_per_mbps=-1", "energy.rx_w_per_mbps"),
])
def test_config_errors_name_the_field(override, name):
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        load_config(overrides=[override])


def _result(records):
    return PromptResult(method=records[0].method, prompt_index=0, example_id="e", reference="r", response="x",
                        tokens=[r.token for r in records], stop_reason="eos", prompt_tokens=3, prefill_s=0.0,
                        records=records)


def test_a_tiny_run_reports_energy_with_intervals(tiny_pair):
    cfg = load_config(overrides=["decode.max_new_tokens=8", "runtime.batch_size=4", "policy.send_prob=0.5",
                                 "clock.tau_slm_ms=20", "clock.tau_llm_ms=100",
                                 "methods=[llm,slm,hlm,u_hlm,block_hlm]"])
    examples = [Example(id=str(i), prompt=p, reference="the cat") for i, p in
                enumerate(["the cat", "a dog", "red fox", "big mat"])]
    results = evaluate_methods(pair=tiny_pair, examples=examples, cfg=cfg, encoder=None, store=None)
    summaries = summarize_methods(results=results, cfg=cfg)
    for method, s in summaries.items():
        total = s["energy_device_j_per_token"]
        assert total == pytest.approx(sum(s[f"energy_{p}_j_per_token"] for p in DEVICE_PARTS)), method
        assert math.isfinite(s["energy_device_j_per_token_ci_low"]), method
    slm = summaries["slm"]
    assert all(slm[f"energy_{p}_j_per_token"] == 0.0 for p in ("tx", "wait", "rx", "tail", "promotion"))
    assert summaries["hlm"]["energy_tx_j_per_token"] > 0 and summaries["hlm"]["energy_rx_j_per_token"] > 0
    assert summaries["llm"]["energy_compute_j_per_token"] == 0.0
    assert math.isfinite(summaries["block_hlm"]["energy_bs_j_per_verified_token"])
    assert isinstance(sum([Energy(), Energy(tx=1.0)], Energy()), Energy)


def test_the_energy_frontier_minimises_energy_and_the_figure_is_drawn(tmp_path):
    from uhlm_ray.experiments.figures import accuracy_energy, energy_table
    from uhlm_ray.experiments.sweep import pareto_front

    points = [{"e": 1.0, "y": 0.5}, {"e": 2.0, "y": 0.7}, {"e": 3.0, "y": 0.6}, {"e": 0.5, "y": 0.2}]
    front = pareto_front(points, x="e", y="y", x_mode="min")
    assert [(p["e"], p["y"]) for p in front] == [(0.5, 0.2), (1.0, 0.5), (2.0, 0.7)]  # (3.0, 0.6) is dominated
    with pytest.raises(ConfigError, match="x_mode"):
        pareto_front(points, x="e", y="y", x_mode="lowest")
    parts = {f"energy_{p}_j_per_token": 0.1 for p in DEVICE_PARTS}
    summaries = {m: {"accuracy": a, "energy_device_j_per_token": 0.7 * k, **parts}
                 for k, (m, a) in enumerate([("slm", 0.3), ("hlm", 0.5), ("u_hlm", 0.48)], start=1)}
    accuracy_energy(summaries=summaries, path=tmp_path / "energy.png")
    assert (tmp_path / "energy.png").stat().st_size > 10_000
    assert "| U-HLM |" in energy_table(summaries)


def test_a_sweep_report_draws_the_energy_frontier_beside_the_throughput_ones(tmp_path):
    from uhlm_ray.experiments.sweep import Objective, SearchSpace
    from uhlm_ray.experiments.sweep_report import frontier_report

    trials = [{"params": {"policy.u_th": u}, "u_hlm.accuracy": 0.4 + u / 4, "u_hlm.throughput_modelled": 5 - u,
               "u_hlm.throughput_experiment": 3 - u, "u_hlm.energy_device_j_per_token": 0.5 + u,
               "u_hlm.transmission_rate": 1 - u, "u_hlm.exact": 0.0, "u_hlm.rejection_risk": u / 10,
               "u_hlm.theory_risk": u / 10, "u_hlm.theory_bound": u / 5} for u in (0.2, 0.5, 0.8)]
    space = SearchSpace(name="t", objectives=[Objective(metric="u_hlm.energy_device_j_per_token", mode="min")],
                        params={"policy.u_th": {"grid": [0.2, 0.5, 0.8]}}, methods=["u_hlm"])
    table = frontier_report(trials=trials, space=space, folder=tmp_path)
    assert {"frontier_modelled.png", "frontier_experiment.png", "frontier_energy.png"} <= {
        p.name for p in tmp_path.iterdir()}
    assert "J/token" in table  # each point trades accuracy for energy: all three are on the energy frontier
    assert table.count("| U-HLM |") >= 3
