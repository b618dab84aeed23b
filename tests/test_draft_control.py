"""Multi-SPIN's heterogeneous draft control (uhlm_ray/draft_control.py): the block-token law, the slot's min-max
shares, the plan against a brute force over every length vector, and each device decoding at its planned length."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from scipy import stats

from uhlm_ray.base_station.verifier import Verifier
from uhlm_ray.cell import Sender, multi_spin_shares, slot_seconds
from uhlm_ray.config import load_config
from uhlm_ray.decode import DeviceJob, decode_lockstep
from uhlm_ray.device.stopping import FixedLength, make_stop_rule
from uhlm_ray.draft_control import (
    cell_draft_plan,
    expected_block_tokens,
    plan_draft_lengths,
    round_fixed_seconds,
    share_grid,
)
from uhlm_ray.link.channel import expected_upload_seconds
from uhlm_ray.link.fading import DecodeClock
from uhlm_ray.sampling.rng import SessionKey
from uhlm_ray.validation import ConfigError

ALPHA = 1e-3  # significance of the statistical test

CELL = ["cell.method=block_hlm", "block.stop=fixed", "block.payload=ids", "decode.sampling=coupled",
        "cell.draft_lengths=multi_spin"]


def test_block_tokens_follow_the_iid_acceptance_law():
    """E[T] = (1 - a^(L+1)) / (1 - a) against 200,000 simulated blocks: a z-test at significance 1e-3."""
    rng = np.random.default_rng(7)
    for acceptance, drafts in ((0.7, 3), (0.4, 6), (0.95, 8)):
        accepted = rng.random((200_000, drafts)) < acceptance  # [N, L]
        run = np.cumprod(accepted, axis=1).sum(axis=1)  # accepted drafts before the first rejection
        tokens = run + 1  # plus the recovered or bonus token
        z = (tokens.mean() - expected_block_tokens(drafts=drafts, acceptance=acceptance)) / \
            (tokens.std(ddof=1) / math.sqrt(tokens.size))
        assert 2 * stats.norm.sf(abs(z)) > ALPHA, (acceptance, drafts, tokens.mean())
    # every draft accepted: the limit L + 1, which the formula's alpha -> 1 approaches
    lengths = np.arange(1, 5)
    assert np.array_equal(expected_block_tokens(drafts=lengths, acceptance=1.0), lengths + 1)
    assert np.allclose(expected_block_tokens(drafts=lengths, acceptance=1 - 1e-9), lengths + 1)


def _eq3_channel():
    cfg = load_config(overrides=["channel.model=shannon", "channel.process=per_round", "channel.fading=none",
                                 "channel.upload_overhead_ms=10"])
    return cfg.channel


def test_slot_solver_equalises_finishing_times_and_beats_every_other_split():
    """The cell's min-max solver (`slot_seconds`, which `multi_spin_shares` and the plan share) on tabulated times:
    at its shares the slowest device finishes at the slot (within the grid's interpolation, 2%), and none of 5,000
    random splits of the band (Dirichlet) finishes the slowest round sooner."""
    channel = _eq3_channel()
    snrs = [0.05, 0.3, 2.0, 10.0]
    fixed = [0.2, 0.15, 0.3, 0.1]
    bits = [40_000.0, 80_000.0, 20_000.0, 60_000.0]
    grid = share_grid(len(snrs))

    def upload(i: int, w: float) -> float:
        return expected_upload_seconds(bits=bits[i], channel=channel, mean_snr=snrs[i] / w,
                                       bandwidth_hz=channel.bandwidth_hz * w)

    def finish(i: int, w: float) -> float:
        return fixed[i] + upload(i, w)

    times = np.array([[finish(i, float(w)) for w in grid] for i in range(len(snrs))])
    slot, shares = slot_seconds(times, grid)
    assert shares.sum() == pytest.approx(1.0)
    finishing = [finish(i, float(w)) for i, w in enumerate(shares)]
    assert max(finishing) == pytest.approx(slot, rel=0.02)  # a device with slack sits at the grid's least share
    splits = np.random.default_rng(3).dirichlet(np.ones(len(snrs)), size=5_000)
    best_random = min(max(finish(i, float(w)) for i, w in enumerate(split)) for split in splits)
    assert slot <= best_random * 1.02
    # the weakest device (lowest SNR, most bits per rate) gets the largest share: Multi-SPIN's compensation
    assert int(np.argmax(shares)) == int(max(range(len(snrs)), key=lambda i: upload(i, 0.25)))
    senders = [Sender(device=i, bits=bits[i], mean_snr=snrs[i], gain=1.0, fixed_s=fixed[i]) for i in range(len(snrs))]
    theirs = multi_spin_shares(senders, upload_s=lambda s, w: upload(s.device, w))
    assert max(finish(i, theirs[i]) for i in range(len(snrs))) == pytest.approx(slot, rel=0.02)


def _brute_force(*, snrs, acceptance, bits, max_drafts, channel, clock):
    """Every length vector's goodput, its slot solved by the cell's scheduler on exact upload times."""
    fixed = round_fixed_seconds(drafts=np.arange(1, max_drafts + 1), clock=clock, measure_s=0.0)
    out = {}
    for choice in itertools.product(range(1, max_drafts + 1), repeat=len(snrs)):
        senders = [Sender(device=i, bits=bits * n, mean_snr=snrs[i], gain=1.0, fixed_s=float(fixed[n - 1]))
                   for i, n in enumerate(choice)]

        def upload(s, w):
            return expected_upload_seconds(bits=s.bits, channel=channel, mean_snr=s.mean_snr / w,
                                           bandwidth_hz=channel.bandwidth_hz * w)

        w = multi_spin_shares(senders, upload_s=upload)
        slot = max(s.fixed_s + upload(s, w[s.device]) for s in senders)
        out[choice] = sum(expected_block_tokens(drafts=n, acceptance=acceptance[i])
                          for i, n in enumerate(choice)) / slot
    return out


@pytest.mark.parametrize("bits", [2_000.0, 20_000.0])
def test_plan_reaches_the_brute_force_optimum(bits):
    """On eq. 3 (exact affine uploads) the coordinate ascent's lengths are within 1% of the best of all 4^3 length
    vectors, and never worse than the best common length."""
    channel = _eq3_channel()
    clock = DecodeClock(tau_slm_s=0.0246, tau_llm_s=0.1046, tau_measure_s=0.0, flat_pass_tokens=16)
    snrs, acceptance = {0: 0.08, 1: 0.5, 2: 4.0}, {0: 0.8, 1: 0.6, 2: 0.9}
    plan = plan_draft_lengths(mean_snrs=snrs, acceptance=acceptance, bits_per_draft=bits, max_drafts=4,
                              configured_drafts=3, channel=channel, clock=clock)
    brute = _brute_force(snrs=list(snrs.values()), acceptance=acceptance, bits=bits, max_drafts=4, channel=channel,
                         clock=clock)
    best = max(brute.values())
    chosen = brute[tuple(plan.drafts[d] for d in sorted(snrs))]
    assert chosen >= 0.99 * best
    assert plan.goodput == pytest.approx(chosen, rel=0.02)
    assert plan.goodput >= plan.homogeneous_goodput * (1 - 1e-9)
    assert plan.homogeneous_goodput == pytest.approx(max(brute[(n,) * 3] for n in range(1, 5)), rel=0.02)


def test_far_devices_get_shorter_blocks_when_the_upload_dominates():
    """Big drafts (a full-ish payload): the farther a device, the dearer each draft's upload, so its planned block
    is never longer than a nearer device's."""
    cfg = load_config(overrides=[*CELL, "cell.n_devices=6", "cell.distances_m=[200,600,1000,1500,2000,2500]",
                                 "cell.plan_bits_per_draft=20000", "block.max_drafts=6"])
    plan = cell_draft_plan(cfg=cfg, vocab_size=151_936)
    lengths = [plan.drafts[d] for d in range(6)]
    assert lengths == sorted(lengths, reverse=True), lengths
    assert lengths[0] > lengths[-1]
    assert plan.goodput > plan.configured_goodput


def test_plan_settings_are_checked_before_work_starts():
    with pytest.raises(ConfigError, match="cell.draft_lengths='multi_spin'.*block.stop=fixed"):
        load_config(overrides=["cell.method=block_hlm", "cell.draft_lengths=multi_spin"])
    with pytest.raises(ConfigError, match="cell.method=block_hlm"):
        load_config(overrides=["cell.method=u_hlm", "block.stop=fixed", "cell.draft_lengths=multi_spin"])
    with pytest.raises(ConfigError, match="cell.plan_bits_per_draft"):
        load_config(overrides=["cell.method=block_hlm", "block.stop=fixed", "cell.draft_lengths=multi_spin"])
    with pytest.raises(ConfigError, match="cell.plan_acceptance has 2 entries"):
        load_config(overrides=[*CELL, "cell.n_devices=3", "cell.plan_acceptance=[0.5,0.6]"])
    with pytest.raises(ConfigError, match=r"cell.plan_acceptance\[0\]"):
        load_config(overrides=[*CELL, "cell.plan_acceptance=[1.0]"])
    with pytest.raises(ConfigError, match="cell.draft_lengths"):
        load_config(overrides=["cell.draft_lengths=greedy"])
    assert cell_draft_plan(cfg=load_config(overrides=[]), vocab_size=100) is None


def test_each_device_decodes_at_its_planned_length(tiny_pair):
    """Two devices in one lockstep with lengths 1 and 4: every block holds exactly its device's length, or what is
    left of max_new_tokens less the verdict's own token when less (at least one draft; the stop rule takes the job's
    own length over block.fixed_drafts)."""
    cfg = load_config(overrides=["model.pair=custom", "decode.max_new_tokens=12", "block.stop=fixed",
                                 "block.fixed_drafts=2", "block.max_drafts=4", "channel.fading=none"])
    assert make_stop_rule(cfg=cfg, vocab_size=tiny_pair.vocab_size, fixed_drafts=4) == FixedLength(drafts=4)
    jobs = [DeviceJob(session_id=f"d{d}", key=SessionKey(seed=3, device=d, prompt=0), prompt_ids=[2, 3, 4, 5],
                      method="block_hlm", policy=None, mean_snr=1.0, fixed_drafts=n) for d, n in ((0, 1), (1, 4))]
    outcomes = decode_lockstep(slm=tiny_pair.slm, verifier=Verifier(model=tiny_pair.llm, max_sessions=4), jobs=jobs,
                               cfg=cfg, eos_token_ids=frozenset())
    for outcome, n in zip(outcomes, (1, 4), strict=True):
        assert len(outcome.tokens) == 12
        for record in outcome.records:
            left = 12 - (record.position - 1)
            assert len(record.drafts) == min(n, max(left - 1, 1)), (n, record.position, record.drafts)


def test_the_sweeps_virtual_cell_does_not_claim_planned_lengths():
    """A sweep's trial decoded its prompts at one length: its cell figures are NaN under a plan, not mislabelled."""
    from uhlm_ray.cell import virtual_cell_figures
    from uhlm_ray.records import PromptResult

    cfg = load_config(overrides=[*CELL, "cell.n_devices=1"])
    result = PromptResult(method="block_hlm", prompt_index=0, example_id="x", reference="", response="", tokens=[1],
                          stop_reason="max_new_tokens", prompt_tokens=1, prefill_s=0.0, records=[])
    figures = virtual_cell_figures(results=[result], cfg=cfg, clock=None)
    assert all(math.isnan(v) for v in figures.values())


def test_plan_is_one_function_of_the_config():
    """The driver and every actor compute the plan from the config alone: the same config, the same plan."""
    cfg = load_config(overrides=[*CELL, "cell.n_devices=5", "cell.plan_acceptance=[0.9,0.5,0.7,0.6,0.8]"])
    first, second = cell_draft_plan(cfg=cfg, vocab_size=151_936), cell_draft_plan(cfg=cfg, vocab_size=151_936)
    assert first == second
    assert dataclasses.asdict(first)["drafts"].keys() == set(range(5))
