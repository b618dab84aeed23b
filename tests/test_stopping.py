"""Stopping rules of the block method (uhlm_ray/device/stopping.py), worked by hand."""

import math

import pytest

from uhlm_ray.config import load_config
from uhlm_ray.device.stopping import (
    AcceptanceModel,
    ChannelAwareStop,
    ConfidenceStop,
    DraftStep,
    FixedLength,
    UncertaintyStop,
    make_stop_rule,
)
from uhlm_ray.link.downlink import DownlinkLink
from uhlm_ray.link.fading import DecodeClock

VOCAB = 151_936  # the embedded pair's |V|


def _steps(*us: float, x_d: float = 0.9) -> list[DraftStep]:
    return [DraftStep(uncertainty=u, x_d=x_d) for u in us]


def test_fixed_and_uncertainty_stops():
    block = _steps(0.1, 0.2)
    assert FixedLength(drafts=3).go_on(step=block[-1], block=block)
    assert not FixedLength(drafts=2).go_on(step=block[-1], block=block)
    rule = UncertaintyStop(u_th=0.3)
    assert rule.go_on(step=DraftStep(uncertainty=0.3, x_d=0.5), block=block)  # u <= u_th: confident, go on
    assert not rule.go_on(step=DraftStep(uncertainty=0.31, x_d=0.5), block=block)


def test_confidence_stop_refits_on_the_roc_like_hugging_face():
    """HF's rule: samples are the drafts up to the first rejection; threshold = argmin over the ROC thresholds of
    fpr + 3 fnr. Worked by hand: accepted drafts had x_d 0.9, 0.8, 0.7, 0.6, rejected ones 0.5, 0.2."""
    rule = ConfidenceStop(threshold=0.4)
    assert not rule.go_on(step=DraftStep(uncertainty=math.nan, x_d=0.39), block=[])
    rule.observe(block=[DraftStep(math.nan, p) for p in (0.9, 0.8, 0.5, 0.1)],
                 num_accepted=2)  # 0.1 came after the rejection: never judged, dropped
    rule.observe(block=[DraftStep(math.nan, p) for p in (0.7, 0.6, 0.2)], num_accepted=2)
    assert rule.probs == [0.9, 0.8, 0.5, 0.7, 0.6, 0.2] and rule.matches == [1, 1, 0, 1, 1, 0]
    # thresholds 0.6 separates the classes: fpr = fnr = 0, the minimum
    assert rule.threshold == pytest.approx(0.6)
    frozen = ConfidenceStop(threshold=0.4, refit=False)
    frozen.observe(block=_steps(0.1, 0.1), num_accepted=0)
    assert frozen.threshold == 0.4 and frozen.probs == []


def test_acceptance_model_starts_at_the_linear_fit_and_learns():
    model = AcceptanceModel(fit_a=0.8, fit_b=0.0, bins=10, prior_weight=4.0)
    assert model.estimate(0.05) == pytest.approx(1 - 0.8 * 0.05)  # bin centre 0.05
    for _ in range(12):
        model.update(0.05, False)
    assert model.estimate(0.05) == pytest.approx((0.96 * 4) / 16)


def _channel_aware(*, upload_s, tau_slm=0.0246, tau_measure=0.0, flat_pass_tokens=16,
                   downlink: DownlinkLink | None = None) -> ChannelAwareStop:
    clock = DecodeClock(tau_slm_s=tau_slm, tau_llm_s=0.1046, tau_measure_s=tau_measure,
                        flat_pass_tokens=flat_pass_tokens, downlink=downlink)
    rule = ChannelAwareStop(clock=clock, acceptance=AcceptanceModel(fit_a=0.82, fit_b=-0.06))
    rule.begin_round(catch_up=1, upload_s=upload_s)
    return rule


def _block_length(rule: ChannelAwareStop, u: float, limit: int = 32) -> int:
    block = []
    while len(block) < limit:
        block.append(DraftStep(uncertainty=u, x_d=0.9))
        if not rule.go_on(step=block[-1], block=block):
            break
    return len(block)


def test_channel_aware_blocks_grow_when_an_upload_costs_more():
    cheap = _block_length(_channel_aware(upload_s=lambda k: 0.001), u=0.1)
    costly = _block_length(_channel_aware(upload_s=lambda k: 0.5), u=0.1)
    assert cheap < costly
    # the marginal rule by hand: E_1 = 1 + a, C_1 = tau_SLM + up + tau_LLM; the 2nd draft adds a^2 for tau_SLM
    # (flat pass, same upload); u = 0.1 falls in the bin [0.1, 0.2), whose prior is the line at its centre 0.15
    a = 1 - (0.82 * 0.15 - 0.06)
    rule = _channel_aware(upload_s=lambda k: 0.02)
    one = [DraftStep(uncertainty=0.1, x_d=0.9)]
    c1 = 0.0246 + 0.02 + 0.1046
    assert rule.go_on(step=one[0], block=one) == (a * a * c1 > (1 + a) * 0.0246)


def test_channel_aware_prices_the_answer_on_the_downlink():
    """C_k holds the block's answer (the verdict, ceil(log2(k + 1)) bits, and the LLM's own token): a slow downlink
    is a fixed cost of the round like the upload, so blocks grow with it."""
    slow = DownlinkLink(rate_bps=1e3, overhead_s=0.2, id_bits=18)
    rule = _channel_aware(upload_s=lambda k: 0.01, downlink=slow)
    plain = _channel_aware(upload_s=lambda k: 0.01)
    for k, verdict in ((1, 1), (3, 2), (4, 3)):
        assert rule.round_seconds(k) - plain.round_seconds(k) == pytest.approx(0.2 + (verdict + 18) / 1e3)
    assert _block_length(plain, u=0.1) < _block_length(rule, u=0.1)


def test_channel_aware_blocks_shrink_when_the_pass_grows_with_its_length():
    flat = _block_length(_channel_aware(upload_s=lambda k: 0.01), u=0.3)
    # a compute-bound CPU: clock.llm_pass=flat with clock.flat_pass_tokens=1, tau_LLM for each token of the pass
    per_token = _channel_aware(upload_s=lambda k: 0.01, flat_pass_tokens=1)
    assert per_token.round_seconds(5) == pytest.approx(5 * 0.0246 + 0.01 + 6 * 0.1046)
    assert _block_length(per_token, u=0.3) < flat


@pytest.mark.parametrize("stop", ["uncertainty", "confidence", "fixed", "channel_aware"])
def test_every_configured_rule_is_built(stop):
    rule = make_stop_rule(cfg=load_config(overrides=[f"block.stop={stop}"]), vocab_size=VOCAB)
    rule.begin_round(catch_up=1, upload_s=lambda k: 0.0)
    assert isinstance(rule.go_on(step=DraftStep(uncertainty=0.1, x_d=0.9), block=_steps(0.1)), bool)
    assert rule.needs_uncertainty == (stop in ("uncertainty", "channel_aware"))


def test_channel_aware_prices_each_drafts_uncertainty_measurement():
    """The modelled clock charges every draft its measurement (MC dropout, paraphrases: K extra SLM passes), so the
    stop does too: by hand, the 2nd draft is worth it iff a^2 C_1 > (1 + a) (tau_SLM + tau_u), with C_1 = tau_SLM +
    tau_u + up + tau_LLM. With tau_u = 4 tau_SLM (K = 4 passes) it is not; without it, it is."""
    a = 1 - (0.82 * 0.15 - 0.06)  # the prior of u's bin [0.1, 0.2) at its centre
    one = [DraftStep(uncertainty=0.1, x_d=0.9)]
    decisions = []
    for tau_u in (0.0, 4 * 0.0246):
        rule = _channel_aware(upload_s=lambda k: 0.02, tau_measure=tau_u)
        c1 = 0.0246 + tau_u + 0.02 + 0.1046
        decisions.append(rule.go_on(step=one[0], block=one))
        assert decisions[-1] == (a * a * c1 > (1 + a) * (0.0246 + tau_u))
        assert rule.round_seconds(1) == pytest.approx(c1)
    assert decisions == [True, False]
    assert _block_length(_channel_aware(upload_s=lambda k: 0.02), u=0.1) >= 2


def test_the_channel_aware_stop_prices_on_the_decode_clock_never_on_wall_time():
    """Configured times reach the rule; unconfigured, the paper's (K SLM passes for a K-pass measure). A draft's
    measured wall time changes nothing, so a block's length is the same in every run."""
    rule = make_stop_rule(cfg=load_config(overrides=["block.stop=channel_aware", "clock.tau_measure_ms=98.4",
                                                     "clock.tau_slm_ms=30", "clock.tau_llm_ms=200"]), vocab_size=VOCAB)
    assert (rule.clock.tau_measure_s, rule.clock.tau_slm_s, rule.clock.tau_llm_s) == pytest.approx((0.0984, 0.03, 0.2))
    paper = make_stop_rule(cfg=load_config(overrides=["block.stop=channel_aware"]), vocab_size=VOCAB)
    assert (paper.clock.tau_slm_s, paper.clock.tau_llm_s, paper.clock.tau_measure_s) == (0.0246, 0.1046, 0.0)
    dropout = make_stop_rule(cfg=load_config(overrides=["block.stop=channel_aware", "uncertainty.measure=mc_dropout",
                                                        "uncertainty.k=4"]), vocab_size=VOCAB)
    assert dropout.clock.tau_measure_s == pytest.approx(4 * 0.0246)
    for u in (0.05, 0.1, 0.3, 0.5):
        fast = DraftStep(uncertainty=u, x_d=0.9)
        slow = DraftStep(uncertainty=u, x_d=0.9, tau_slm_s=5.0, tau_uncertainty_s=5.0)  # a stalled machine
        assert paper.go_on(step=fast, block=[fast]) == paper.go_on(step=slow, block=[slow])


def test_lossy_blocks_teach_the_stops_only_their_verified_drafts():
    """block.skip_u_th: drafts committed unverified are kept without a test, which says nothing of acceptance.
    A block of two unverified confident drafts (u = 0.05) then a verified one (u = 0.55) that is rejected: only the
    last is a verdict. The old rule learnt the two as accepted."""
    block = [DraftStep(0.05, 0.9, verified=False), DraftStep(0.05, 0.9, verified=False), DraftStep(0.55, 0.4)]
    rule = _channel_aware(upload_s=lambda k: 0.02)
    rule.observe(block=block, num_accepted=2)
    assert rule.acceptance.seen.tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert rule.acceptance.accepted.sum() == 0
    # an unverified draft is kept for sure: it counts a_i = 1 in the expected tokens E_k
    tokens, alive = rule.expected_tokens(block[:2])
    assert (tokens, alive) == (3.0, 1.0)
    confidence = ConfidenceStop(threshold=0.4)
    confidence.observe(block=block, num_accepted=2)
    assert confidence.probs == [0.4] and confidence.matches == [0]


def test_the_block_decoder_tells_the_stop_which_drafts_are_verified_and_what_u_cost():
    import torch

    from uhlm_ray.device.block_decoder import BlockDecoder
    from uhlm_ray.sampling.rng import SessionKey

    seen: list[DraftStep] = []

    class Spy(FixedLength):
        needs_uncertainty = True

        def go_on(self, *, step, block):
            seen.append(step)
            return super().go_on(step=step, block=block)

    cfg = load_config(overrides=["block.skip_u_th=0.5", "uncertainty.measure=entropy", "block.max_drafts=4"])
    decoder = BlockDecoder(key=SessionKey(seed=0, device=0, prompt=0), cfg=cfg, rule=Spy(drafts=4), mean_snr=1.0,
                           vocab_size=8, eos_token_ids=frozenset(), evaluate=False, prompt_last_token=0)
    decoder.begin_round()
    peaked, flat = torch.tensor([9.0] + [0.0] * 7), torch.zeros(8)  # entropy u about 0.01 and 1
    decoder.add_draft(logits=peaked, tau_slm_s=0.01)
    decoder.add_draft(logits=flat, tau_slm_s=0.01)
    assert [s.verified for s in seen] == [False, True]
    assert all(s.tau_uncertainty_s > 0 for s in seen)
