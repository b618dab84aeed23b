"""The cell's schedulers (uhlm_ray/cell.py), worked out by hand on records with known uploads: shares, TDMA turns,
proportional fair, Multi-SPIN's min-max shares, deadline batching of verifications, goodput and Jain's index."""

import dataclasses
import math
from functools import partial

import numpy as np
import pytest

from uhlm_ray.cell import (
    MULTI_SPIN_GRID,
    PlannedTimes,
    Sender,
    cell_figures,
    eq3_upload_seconds,
    equal_shares,
    jain_index,
    min_max_slot,
    multi_spin_shares,
    proportional_fair_average,
    proportional_fair_pick,
    proportional_fair_shares,
    round_robin_order,
    schedule_uplink,
    shared_rate,
    slot_seconds,
    summarize_cell,
    verified_tokens,
    verify_batches,
    virtual_cell,
)
from uhlm_ray.config import SCHEDULERS, CellConfig, ChannelConfig, load_config
from uhlm_ray.link.channel import uplink_seconds
from uhlm_ray.measures.clock import ModelledClock
from uhlm_ray.records import PromptResult, RoundRecord
from uhlm_ray.validation import ConfigError

# eq. 3 with no per-upload overhead, so every share can be worked out by hand
EQ3 = ChannelConfig(model="shannon", fading="none", upload_overhead_ms=0.0)
# one fading gain per round, held for the upload: multi_spin's plan (eq. 3 at the known gain) is then exact
FADING = ChannelConfig(model="shannon", fading="rayleigh", process="per_round", upload_overhead_ms=0.0)
CLOCK = ModelledClock(tau_slm=0.01, tau_llm=0.1)


def _record(*, sent: bool, bits: int = 1_000_000, prompt: int = 0, round_index: int = 1,
            accepted: bool = True) -> RoundRecord:
    return RoundRecord(
        method="u_hlm", prompt_index=prompt, round=round_index, draft=1, token=1, uncertainty=0.5, sent=sent,
        x_d=0.5, y_d=0.5, beta=0.0, accepted=accepted if sent else None, resampled=(not accepted) if sent else None,
        payload_bits=bits if sent else 0, catch_up_tokens=1, fading_gain=1.0, snr_db=0.0, tau_up_s=0.0,
        tau_slm_s=0.01, tau_uncertainty_s=0.0, tau_llm_s=0.1 if sent else 0.0, wall_s=0.1,
    )


def _random_cell(*, n: int, rounds: int, seed: int) -> dict[int, list[RoundRecord]]:
    rng = np.random.default_rng(seed)
    return {d: [_record(sent=bool(rng.random() < 0.6), bits=int(rng.integers(2e4, 4e5)), prompt=d,
                        round_index=t + 1) for t in range(rounds)] for d in range(n)}


def _schedule(records, *, scheduler, channel=EQ3, snrs=None, **cell):
    return schedule_uplink(records_by_device=records, cell=CellConfig(scheduler=scheduler, **cell), channel=channel,
                           mean_snrs=snrs or dict.fromkeys(records, 1.0), seed=0, clock=CLOCK)


@pytest.mark.parametrize("scheduler", ["equal", "proportional_fair", "multi_spin"])
def test_shares_fill_the_band(scheduler):
    records = _random_cell(n=5, rounds=12, seed=1)
    snrs = {d: 10 ** (s / 10) for d, s in enumerate([-10, -3, 0, 5, 12])}
    scheduled = _schedule(records, scheduler=scheduler, channel=FADING, snrs=snrs)
    for slot in range(12):
        shares = [scheduled.shares[d][slot] for d in records if records[d][slot].sent]
        if shares:
            assert sum(shares) == pytest.approx(1.0)
            assert all(w > 0 for w in shares)


def test_round_robin_turns_take_the_whole_band_and_wait_for_those_ahead():
    records = {d: [_record(sent=True, prompt=d), _record(sent=True, prompt=d, round_index=2)] for d in range(3)}
    scheduled = _schedule(records, scheduler="round_robin")
    alone = uplink_seconds(bits=1e6, bandwidth_hz=1e6, snr=1.0)  # the whole band, SNR 1: 1 s
    assert round_robin_order([Sender(device=d, bits=1, mean_snr=1, gain=1) for d in range(3)], slot=1) == [1, 2, 0]
    # slot 0: turns 0, 1, 2; slot 1: turns 1, 2, 0
    assert [scheduled.records[d][0].tau_up_s for d in range(3)] == pytest.approx([alone, 2 * alone, 3 * alone])
    assert [scheduled.records[d][1].tau_up_s for d in range(3)] == pytest.approx([3 * alone, alone, 2 * alone])
    assert all(w == 1.0 for d in range(3) for w in scheduled.shares[d])
    # under eq. 3 an equal split beats TDMA for every device: (W/3) log2(1 + 3) > W / 3 ... taken in turns
    equal = _schedule(records, scheduler="equal")
    assert equal.records[0][0].tau_up_s == pytest.approx(1e6 / shared_rate(bandwidth_hz=1e6, share=1 / 3, snr=1.0))
    assert max(equal.records[d][0].tau_up_s for d in range(3)) < 3 * alone


def test_one_device_round_robin_is_equal_sharing():
    records = {0: _random_cell(n=1, rounds=10, seed=2)[0]}
    rr = _schedule(records, scheduler="round_robin", channel=FADING)
    eq = _schedule(records, scheduler="equal", channel=FADING)
    assert [r.tau_up_s for r in rr.records[0]] == pytest.approx([r.tau_up_s for r in eq.records[0]])
    assert rr.slot_seconds == pytest.approx(eq.slot_seconds)


def test_jain_index():
    assert jain_index([3.0, 3.0, 3.0, 3.0]) == pytest.approx(1.0)
    assert jain_index([5.0, 0.0, 0.0, 0.0]) == pytest.approx(1 / 4)
    assert jain_index([1.0, 2.0]) == pytest.approx(9 / 10)
    assert math.isnan(jain_index([])) and math.isnan(jain_index([0.0, 0.0]))


def test_proportional_fair_favours_the_device_in_a_good_fade():
    good, bad = Sender(device=0, bits=1e5, mean_snr=1.0, gain=3.0), Sender(device=1, bits=1e5, mean_snr=1.0, gain=0.3)
    history = {0: math.log2(2.0), 1: math.log2(2.0)}  # the same average: each at its mean SNR before
    shares = proportional_fair_shares([good, bad], average_rate=history)
    assert shares[0] == pytest.approx(2.0 / (2.0 + math.log2(1.3)))  # m = log2(1 + 3) / 1 against log2(1.3) / 1
    assert shares[0] > 0.5 > shares[1]
    # a device far from the base station is not starved: the metric is relative to its own average
    far = Sender(device=1, bits=1e5, mean_snr=0.01, gain=1.0)
    assert proportional_fair_shares([good, far], average_rate={0: 2.0, 1: math.log2(1.01)})[1] > 0.3
    # the average: R <- (1 - 1/t_c) R + r / t_c
    assert proportional_fair_average(average=2.0, served=1.0, window=4.0) == pytest.approx(1.75)
    assert proportional_fair_average(average=None, served=1.0, window=4.0) == 1.0


def test_opportunistic_proportional_fair_picks_the_best_fade_relative_to_each_device():
    good, bad = Sender(device=0, bits=1e5, mean_snr=1.0, gain=3.0), Sender(device=1, bits=1e5, mean_snr=1.0, gain=0.3)
    assert proportional_fair_pick([bad, good], average_rate={0: 1.0, 1: 1.0}, fading="rayleigh") == 0
    # a device served well lately (a high R) yields to one that was not, in the same fade
    twin = Sender(device=1, bits=1e5, mean_snr=1.0, gain=3.0)
    assert proportional_fair_pick([good, twin], average_rate={0: 4.0, 1: 1.0}, fading="rayleigh") == 1
    # equal metrics go in the tie order (the slot's round-robin order in the cell), by device by default
    assert proportional_fair_pick([twin, good], average_rate={0: 1.0, 1: 1.0}, fading="rayleigh") == 0
    assert proportional_fair_pick([twin, good], average_rate={0: 1.0, 1: 1.0}, fading="rayleigh",
                                  tie_order=[1, 0]) == 1
    # no history: the ergodic rate is the yardstick, so a far device above its own mean beats a near one in a fade
    far = Sender(device=2, bits=1e5, mean_snr=0.1, gain=2.0)
    near_in_fade = Sender(device=3, bits=1e5, mean_snr=100.0, gain=0.05)
    assert proportional_fair_pick([near_in_fade, far], average_rate={}, fading="rayleigh") == 2


def test_opportunistic_proportional_fair_defers_through_slow_fades():
    """TDMA both: round-robin serves in a fixed rotation, opportunistic PF whoever's fade is best when the band frees
    up. On a slow fading process in time (3 km/h) deferring a device in a fade shortens the cell's time; every
    upload still gets the whole band and waits for the turns before it."""
    channel = ChannelConfig(model="shannon", fading="rayleigh", process="gauss_markov", speed_kmh=3.0,
                            upload_overhead_ms=0.0)
    records = _random_cell(n=6, rounds=30, seed=7)
    snrs = {d: 10 ** (s / 10) for d, s in enumerate([-6, -3, 0, 3, 6, 9])}
    rr, pf = (_schedule(records, scheduler=s, channel=channel, snrs=snrs)
              for s in ("round_robin", "proportional_fair_tdma"))
    assert sum(pf.slot_seconds) < 0.97 * sum(rr.slot_seconds)
    for slot in range(30):
        sent = [d for d in records if records[d][slot].sent]
        assert all(pf.shares[d][slot] == 1.0 for d in sent)


def test_opportunistic_proportional_fair_without_fading_takes_turns():
    """No fading and equal SNRs: every metric is 1 in every slot, so the order rotates as round-robin's does and
    each device goes first equally often (a fixed order would always leave the same device last)."""
    channel = ChannelConfig(model="shannon", fading="none", upload_overhead_ms=0.0)
    records = {d: [_record(sent=True, bits=100_000, prompt=d, round_index=t + 1) for t in range(12)] for d in range(3)}
    pf = _schedule(records, scheduler="proportional_fair_tdma", channel=channel)
    firsts = [min(range(3), key=lambda d, t=t: pf.records[d][t].tau_up_s) for t in range(12)]
    assert sorted(firsts.count(d) for d in range(3)) == [4, 4, 4]
    rr = _schedule(records, scheduler="round_robin", channel=channel)
    assert [pf.records[d][t].tau_up_s for d in range(3) for t in range(12)] == \
        pytest.approx([rr.records[d][t].tau_up_s for d in range(3) for t in range(12)])


def test_multi_spin_equalises_finishing_times_and_gives_the_weak_more():
    senders = [Sender(device=0, bits=1e6, mean_snr=10.0, gain=1.0), Sender(device=1, bits=1e6, mean_snr=0.1, gain=1.0)]
    shares = multi_spin_shares(senders, upload_s=partial(eq3_upload_seconds, bandwidth_hz=1e6))
    assert sum(shares.values()) == pytest.approx(1.0) and shares[1] > 0.5
    times = [1e6 / shared_rate(bandwidth_hz=1e6, share=shares[s.device], snr=s.mean_snr) for s in senders]
    assert times[0] == pytest.approx(times[1], rel=0.02)  # the plan is interpolated between tabulated shares
    assert max(times) < 1e6 / shared_rate(bandwidth_hz=1e6, share=0.5, snr=0.1)  # the equal split's slower one
    assert equal_shares(senders) == {0: 0.5, 1: 0.5}


def test_multi_spin_prices_a_few_shares_and_plans_as_the_full_table():
    """multi_spin's plan reads its senders' times where the min-max solver looks (`PlannedTimes`): on 40 random
    cells of 2-64 senders under eq. 3 (times non-increasing in the share) it gives the slot and shares of the whole
    table solved by `slot_seconds`, bit for bit, while pricing under 40% of the table once a cell has 8 senders."""
    rng = np.random.default_rng(11)
    grid = np.array(MULTI_SPIN_GRID)[::-1]
    upload = partial(eq3_upload_seconds, bandwidth_hz=1e6, overhead_s=0.005)
    for n in rng.choice([2, 3, 5, 8, 16, 64], size=40):
        senders = [Sender(device=i, bits=float(rng.uniform(1e3, 1e6)), mean_snr=float(10 ** rng.uniform(-1.5, 2)),
                          gain=float(rng.exponential()), fixed_s=float(rng.uniform(0.0, 0.3))) for i in range(n)]
        floor = float(rng.choice([0.0, 0.5]))
        full = np.array([[s.fixed_s + upload(s, float(w)) for w in grid] for s in senders])
        slot, shares = slot_seconds(full, grid, floor_s=floor)
        table = PlannedTimes(senders=senders, grid=grid, upload_s=upload)
        lazy_slot, lazy_shares = min_max_slot(least=table.least, n=n, whole_band_s=float(full[:, -1].max()),
                                              floor_s=floor)
        assert lazy_slot == slot and np.array_equal(lazy_shares, shares)
        priced = table.priced
        assert np.array_equal(table.times[priced], full[priced])
        if n >= 8:
            assert priced.mean() < 0.4, (n, priced.mean())


def test_multi_spin_goodput_at_least_equal_on_the_same_records():
    records = _random_cell(n=6, rounds=20, seed=3)
    snrs = {d: 10 ** (s / 10) for d, s in enumerate([-12, -6, -1, 3, 8, 15])}
    figures = {s: cell_figures(scheduled=_schedule(records, scheduler=s, channel=FADING, snrs=snrs), clock=CLOCK)
               for s in SCHEDULERS}
    assert figures["multi_spin"]["goodput"] >= figures["equal"]["goodput"]
    assert figures["multi_spin"]["goodput"] > figures["round_robin"]["goodput"]
    for f in figures.values():
        assert f["goodput_tokens"] == sum(r.sent for rs in records.values() for r in rs)
        assert 1 / 6 <= f["jain_index"] <= 1.0


def test_goodput_and_device_throughput_by_hand():
    records = {0: [_record(sent=True), _record(sent=False, round_index=2)],
               1: [_record(sent=True, accepted=False, prompt=1)]}
    scheduled = _schedule(records, scheduler="equal")
    up = 1e6 / shared_rate(bandwidth_hz=1e6, share=0.5, snr=1.0)
    slot0, slot1 = 0.01 + up + 0.1, 0.01
    f = cell_figures(scheduled=scheduled, clock=CLOCK)
    assert f["cell_modelled_s"] == pytest.approx(slot0 + slot1)
    assert f["goodput_tokens"] == 2  # an accepted draft and a resampled token; the skipped one is not verified
    assert f["goodput"] == pytest.approx(2 / (slot0 + slot1))
    assert f["cell_throughput"] == pytest.approx(3 / (slot0 + slot1))
    assert f["device_throughputs"] == pytest.approx([2 / (slot0 + slot1), 1 / slot0])
    assert verified_tokens(records[0][1]) == 0


def test_verify_batches_by_hand():
    # a 1.5 s deadline: the first two share a pass, the third waits its own deadline
    assert verify_batches(arrivals=[0.0, 1.0, 5.0], passes=[2.0, 2.0, 2.0], deadline_s=1.5, max_batch=16) == \
        pytest.approx([1.5, 0.5, 1.5])
    # a full batch goes at once; the one left over goes at its deadline (3 s after it arrived), the LLM free by then
    assert verify_batches(arrivals=[0.0, 0.0, 0.0], passes=[1.0, 1.0, 1.0], deadline_s=3.0, max_batch=2) == \
        pytest.approx([0.0, 0.0, 3.0])
    # no deadline: simultaneous requests share a pass, a later one queues behind a busy LLM; a pass costs its longest
    assert verify_batches(arrivals=[0.0, 0.0, 0.5], passes=[1.0, 2.0, 1.0], deadline_s=0.0, max_batch=16) == \
        pytest.approx([1.0, 0.0, 1.5])


def test_deadline_batching_in_the_cell_summary():
    records = _random_cell(n=4, rounds=8, seed=4)
    solo = cell_figures(scheduled=_schedule(records, scheduler="equal"), clock=CLOCK)
    batched = cell_figures(scheduled=_schedule(records, scheduler="equal", verify_deadline_ms=20.0), clock=CLOCK)
    assert solo["mean_verify_wait_ms"] == 0.0
    assert batched["mean_verify_wait_ms"] > 0.0 and batched["goodput"] < solo["goodput"]


def _results(n_prompts: int = 3, rounds: int = 6) -> list[PromptResult]:
    cell = _random_cell(n=n_prompts, rounds=rounds, seed=5)
    return [PromptResult(method="u_hlm", prompt_index=p, example_id=str(p), reference="", response="",
                         tokens=[1] * rounds, stop_reason="eos", prompt_tokens=3, prefill_s=0.0, records=records,
                         similarity=0.5) for p, records in cell.items()]


def test_virtual_cell_assigns_prompts_as_the_cell_job_does():
    cell = virtual_cell(results=_results(3), n_devices=4, prompts_per_device=2)
    assert [(r.device_index, r.prompt_index) for r in cell] == [(i, k * 4 + i) for k in range(2) for i in range(4)]
    assert [r.example_id for r in cell] == ["0", "1", "2", "0", "1", "2", "0", "1"]  # decoded prompt p mod 3


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_summarize_cell_reports_goodput_and_fairness(scheduler):
    results = virtual_cell(results=_results(), n_devices=5)
    summary = summarize_cell(results=results, distances_m=[100.0, 300.0, 600.0, 1000.0, 1500.0], channel=FADING,
                             clock=CLOCK, seed=0, cell=CellConfig(n_devices=5, scheduler=scheduler))
    c = summary["cell"]
    assert c["scheduler"] == scheduler and c["num_devices"] == 5
    assert c["goodput"] > 0 and 0.2 <= c["jain_index"] <= 1.0
    assert c["mean_device_throughput_modelled"] == pytest.approx(
        np.mean([summary["devices"][d]["throughput_modelled"] for d in range(5)]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("cell.scheduler=fifo", r"cell.scheduler='fifo' is not one of \['equal', 'multi_spin', "),
        ("cell.pf_window=0.5", r"cell.pf_window=0.5 is outside the allowed range \[1.0, inf\]"),
        ("cell.verify_deadline_ms=-1", r"cell.verify_deadline_ms=-1.0 is outside the allowed range \[0.0, inf\]"),
        ("cell.verify_max_batch=0", r"cell.verify_max_batch=0 is outside the allowed range \[1, inf\]"),
        ("cell.bandwidth_sharing=tdma", r"cell.bandwidth_sharing='tdma' is not one of"),
    ],
)
def test_bad_scheduler_settings_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_the_old_name_still_works_and_cannot_disagree():
    assert load_config(overrides=["cell.bandwidth_sharing=equal"]).cell.scheduler == "equal"
    from uhlm_ray.cell import scheduler_name

    assert scheduler_name(load_config(overrides=["cell.bandwidth_sharing=round_robin"]).cell) == "round_robin"
    with pytest.raises(ConfigError, match="cell.bandwidth_sharing='equal' .* conflicts with cell.scheduler"):
        load_config(overrides=["cell.bandwidth_sharing=equal", "cell.scheduler=multi_spin"])


def test_a_device_alone_walks_its_fading_process_as_a_single_device_does():
    """With a fading process in time, one device in the cell is priced exactly as `reprice_prompt` prices it alone:
    each round reads h from its own decision time on the device's keyed process."""
    from uhlm_ray.link.reprice import reprice_prompt
    from uhlm_ray.sampling.rng import SessionKey

    channel = ChannelConfig(model="shannon", process="gauss_markov", speed_kmh=30.0, upload_overhead_ms=0.0)
    records = _random_cell(n=1, rounds=15, seed=6)
    alone = reprice_prompt(records=records[0], channel=channel, mean_snr=1.0,
                           key=SessionKey(seed=0, device=0, prompt=0), clock=CLOCK)
    for scheduler in ("equal", "round_robin", "multi_spin", "proportional_fair"):
        cell = _schedule(records, scheduler=scheduler, channel=channel)
        assert [r.tau_up_s for r in cell.records[0]] == pytest.approx([r.tau_up_s for r in alone])


@pytest.mark.parametrize("process", ["per_round", "gauss_markov", "block"])
@pytest.mark.parametrize("model", ["shannon", "arq", "inversion"])
def test_known_gain_is_the_gain_the_upload_starts_with(process, model):
    """The scheduler's pilot reading (read without pricing an upload) equals the gain of the upload priced alone at
    the same decision time, for every link model and fading process."""
    from uhlm_ray.cell import _key, _known_gain
    from uhlm_ray.link.reprice import reprice

    channel = dataclasses.replace(FADING, process=process, model=model)
    checked = 0
    for device, records in _random_cell(n=4, rounds=6, seed=11).items():
        for record in (r for r in records if r.sent):
            key = _key(seed=0, device=device, record=record)
            for start in (0.0, 0.41, 3.2):
                alone = reprice(record=record, channel=channel, mean_snr=0.5, key=key, start_s=start)
                priced = 10 ** (alone.snr_db / 10) / 0.5 if math.isfinite(alone.snr_db) else 1.0
                assert _known_gain(record=record, channel=channel, mean_snr=0.5, key=key, start_s=start) == \
                    pytest.approx(priced, rel=1e-9)
                checked += 1
    assert checked > 10
