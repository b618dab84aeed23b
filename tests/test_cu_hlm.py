"""CU-HLM: truncated payloads with exact bit counts, exactness under truncation (chi-square), sync bits in the
loop, and the channel-aware threshold, each against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from uhlm_ray.config import EvaluateConfig, PayloadConfig, load_config
from uhlm_ray.decode import decode_prompt, make_policy
from uhlm_ray.device.policies import ChannelAwareThreshold
from uhlm_ray.link.payload import (
    compression_rate,
    full_payload_bits,
    sync_bits,
    truncate,
    truncated_payload_bits,
)
from uhlm_ray.models import full_recompute_logits
from uhlm_ray.models.prefix_cache import PrefixCache
from uhlm_ray.sampling.verify import sample_inverse_cdf, verify_draft
from uhlm_ray.validation import ConfigError

ALPHA = 1e-3  # significance of every chi-square test here
QWEN_V = 151_936  # ceil(log2 |V|) = 18


def test_bit_counts_by_hand():
    fp32, fp16 = PayloadConfig(prob_bits=32), PayloadConfig(prob_bits=16)
    assert full_payload_bits(vocab_size=QWEN_V, cfg=fp32) == QWEN_V * 32 + 18
    assert truncated_payload_bits(kept=64, vocab_size=QWEN_V, cfg=fp32) == 64 * (18 + 32) + 18
    assert truncated_payload_bits(kept=64, vocab_size=QWEN_V, cfg=fp16) == 64 * (18 + 16) + 18
    no_index = PayloadConfig(prob_bits=32, include_draft_index=False)
    assert truncated_payload_bits(kept=1, vocab_size=QWEN_V, cfg=no_index) == 50
    # past |V| * 32 / 50 kept tokens the dense codec is smaller and is used
    assert truncated_payload_bits(kept=QWEN_V, vocab_size=QWEN_V, cfg=fp32) == QWEN_V * 32 + 18
    assert sync_bits(skipped_tokens=3, vocab_size=QWEN_V) == 54
    assert compression_rate(payload_bits=64 * 50 + 18, vocab_size=QWEN_V, cfg=fp32) == pytest.approx(
        1 - 3218 / (QWEN_V * 32 + 18))


def test_truncation_by_hand():
    x = torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15])
    top2 = truncate(probs=x, truncation="top_k", top_k=2, top_p=1.0)
    assert top2.kept == 2 and top2.kept_mass == pytest.approx(0.7)
    assert torch.allclose(top2.probs, torch.tensor([0, 0.4 / 0.7, 0, 0.3 / 0.7, 0]))
    # top-p: the fewest most-probable tokens whose mass reaches p (0.4 + 0.3 = 0.7 < 0.8 <= 0.85)
    p80 = truncate(probs=x, truncation="top_p", top_k=1, top_p=0.8)
    assert p80.kept == 3 and p80.kept_mass == pytest.approx(0.85)
    assert truncate(probs=x, truncation="top_p", top_k=1, top_p=0.7).kept == 2  # exactly reached
    assert truncate(probs=x, truncation="top_p", top_k=1, top_p=1.0).kept == 5
    assert torch.equal(truncate(probs=x, truncation="none", top_k=1, top_p=1.0).probs, x)
    # TV(x~, x) = 1 - m: the extra rejection a truncated draft can cost (docs/cu_hlm_thresholds.md)
    assert 0.5 * float((top2.probs - x).abs().sum()) == pytest.approx(1 - top2.kept_mass)


@pytest.mark.parametrize(("truncation", "top_k", "top_p"), [("top_k", 3, 1.0), ("top_p", 1, 0.6)])
def test_truncated_drafts_verify_to_the_llm_distribution(truncation, top_k, top_p):
    """d ~ x~ and verification against x~: every token sent, the output is distributed as y (alpha = 1e-3),
    although x~ has no mass on most of the vocabulary (those tokens arrive only through resampling)."""
    rng = np.random.default_rng(11)
    vocab, draws = 30, 200_000
    x = torch.from_numpy(rng.dirichlet(np.full(vocab, 0.5))).float()
    y = torch.from_numpy(rng.dirichlet(np.full(vocab, 0.5))).float()
    x_t = truncate(probs=x, truncation=truncation, top_k=top_k, top_p=top_p).probs  # [V]
    assert int((x_t > 0).sum()) < vocab / 2
    xb, yb = x_t.expand(draws, vocab), y.expand(draws, vocab)  # [N, V]
    draft = sample_inverse_cdf(probs=xb, uniform=torch.from_numpy(rng.random(draws)))  # [N]
    verdict = verify_draft(x=xb, y=yb, draft=draft, u_accept=torch.from_numpy(rng.random(draws)),
                           u_resample=torch.from_numpy(rng.random(draws)))
    counts = np.bincount(verdict.token.numpy(), minlength=vocab)
    expected = y.double().numpy() / y.double().sum().item() * draws
    assert stats.chisquare(counts, expected).pvalue > ALPHA
    # and the naive alternative, verifying against the untruncated x, is detectably wrong
    wrong = verify_draft(x=x.expand(draws, vocab), y=yb, draft=draft, u_accept=torch.from_numpy(rng.random(draws)),
                         u_resample=torch.from_numpy(rng.random(draws)))
    assert stats.chisquare(np.bincount(wrong.token.numpy(), minlength=vocab), expected).pvalue < ALPHA


def _cu_cfg(**overrides) -> EvaluateConfig:
    return load_config(overrides=[f"{k}={v}" for k, v in {"decode.max_new_tokens": 12, **overrides}.items()])


def test_cu_hlm_sending_every_token_is_distributed_as_the_llm(tiny_pair):
    """The whole loop with top-k truncation (k = 3 of 18) and u_th = 0 (confidence > 0 in every round): the first
    token over 3,000 seeds follows y (chi-square, alpha = 1e-3)."""
    prompt = [2, 3, 4, 5, 6]
    y = torch.softmax(full_recompute_logits(model=tiny_pair.llm, token_ids=prompt), -1).double().numpy()
    draws, counts = 3000, np.zeros(len(y))
    cfg = _cu_cfg(**{"decode.max_new_tokens": 1, "cu_hlm.u_th": 0.0, "cu_hlm.measure": "confidence",
                     "cu_hlm.truncation": "top_k", "cu_hlm.top_k": 3})
    policy, prefixes = make_policy(method="cu_hlm", cfg=cfg), PrefixCache()
    for seed in range(draws):
        cfg.decode.seed = seed
        tokens, records, _, _ = decode_prompt(pair=tiny_pair, prompt_ids=prompt, prompt_index=0, method="cu_hlm",
                                              cfg=cfg, policy=policy, prefixes=prefixes)
        assert records[0].sent and records[0].kept_tokens == 3
        counts[tokens[0]] += 1
    y = y / y.sum()
    keep = y * draws >= 5
    observed = np.append(counts[keep], counts[~keep].sum())
    expected = np.append(y[keep], y[~keep].sum()) * draws
    assert stats.chisquare(observed[expected > 0], expected[expected > 0]).pvalue > ALPHA


def test_cu_hlm_records_count_truncated_and_sync_bits(tiny_pair):
    cfg = _cu_cfg(**{"cu_hlm.u_th": 0.3, "cu_hlm.measure": "confidence", "cu_hlm.truncation": "top_p",
                     "cu_hlm.top_p": 0.5, "decode.max_new_tokens": 24})
    _, records, _, _ = decode_prompt(pair=tiny_pair, prompt_ids=[2, 3, 4], prompt_index=0, method="cu_hlm", cfg=cfg,
                                     policy=make_policy(method="cu_hlm", cfg=cfg))
    vocab = tiny_pair.vocab_size
    sent = [i for i, r in enumerate(records) if r.sent]
    assert sent and len(sent) < len(records)  # both kinds of round
    previous = -1
    for i in sent:
        r = records[i]
        skipped = i - previous - 1  # rounds skipped since the last upload: their draft ids ride along
        assert r.sync_bits == sync_bits(skipped_tokens=skipped, vocab_size=vocab)
        assert r.payload_bits == truncated_payload_bits(kept=r.kept_tokens, vocab_size=vocab,
                                                        cfg=cfg.payload) + r.sync_bits
        assert r.compression == pytest.approx(1 - (r.payload_bits - r.sync_bits) / full_payload_bits(
            vocab_size=vocab, cfg=cfg.payload))
        assert r.uncertainty > 0.3 and r.x_d > 0
        previous = i
    assert all(r.payload_bits == 0 and r.uncertainty <= 0.3 for r in records if not r.sent)
    off = _cu_cfg(**{"cu_hlm.u_th": 0.3, "cu_hlm.measure": "confidence", "payload.sync_token_ids": "false",
                     "decode.max_new_tokens": 24})
    _, plain, _, _ = decode_prompt(pair=tiny_pair, prompt_ids=[2, 3, 4], prompt_index=0, method="cu_hlm", cfg=off,
                                   policy=make_policy(method="cu_hlm", cfg=off))
    assert all(r.sync_bits == 0 for r in plain)


def test_channel_aware_threshold_by_hand():
    policy = ChannelAwareThreshold(u_th=0.4, fit_a=0.8, fit_b=-0.1, tau_llm_s=0.1)
    # average fading: the configured threshold
    assert policy.threshold(upload_s=0.3, mean_upload_s=0.3) == pytest.approx(0.4)
    # upload twice as slow: cost ratio (0.6 + 0.1) / (0.3 + 0.1) = 1.75; (1.75 * 0.22 + 0.1) / 0.8 = 0.60625
    assert policy.threshold(upload_s=0.6, mean_upload_s=0.3) == pytest.approx(0.60625)
    # a good channel lowers it: ratio 0.25 / 0.4; (0.625 * 0.22 + 0.1) / 0.8 = 0.296875
    assert policy.threshold(upload_s=0.15, mean_upload_s=0.3) == pytest.approx(0.296875)
    assert policy.threshold(upload_s=math.inf, mean_upload_s=0.3) == 1.0  # outage: never send
    rng = np.random.default_rng(0)
    assert policy.should_send(uncertainty=0.5, rng=rng, upload_s=0.3, mean_upload_s=0.3)
    assert not policy.should_send(uncertainty=0.5, rng=rng, upload_s=0.6, mean_upload_s=0.3)
    below = ChannelAwareThreshold(u_th=0.1, fit_a=0.8, fit_b=-0.1, tau_llm_s=0.1)  # a u_th + b <= 0: no price
    assert below.threshold(upload_s=10.0, mean_upload_s=0.3) == 0.1


def test_channel_aware_runs_skip_more_in_fades(tiny_pair):
    cfg = _cu_cfg(**{"policy.channel_aware": "true", "policy.u_th": 0.3, "policy.fit_a": 1.0, "policy.fit_b": 0.0,
                     "decode.max_new_tokens": 32, "uncertainty.measure": "confidence"})
    _, records, _, _ = decode_prompt(pair=tiny_pair, prompt_ids=[2, 3, 4], prompt_index=0, method="u_hlm", cfg=cfg,
                                     policy=make_policy(method="u_hlm", cfg=cfg))
    deep = [r for r in records if r.fading_gain < 0.5]
    good = [r for r in records if r.fading_gain > 1.5]
    assert all(r.uncertainty <= 0.3 or r.sent for r in good)  # below-average cost: u > 0.3 is always sent
    assert all(not r.sent or r.uncertainty > 0.3 for r in deep)  # a deep fade never lowers the threshold


def test_cu_hlm_settings_are_checked():
    for override, field in [("cu_hlm.truncation=top_q", "cu_hlm.truncation"), ("cu_hlm.top_p=0", "cu_hlm.top_p"),
                            ("cu_hlm.top_k=0", "cu_hlm.top_k"), ("cu_hlm.measure=temperature", "cu_hlm.measure"),
                            ("cu_hlm.u_th=2", "cu_hlm.u_th"), ("policy.fit_a=0", "policy.fit_a")]:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            load_config(overrides=[override])


def test_operating_point_by_hand():
    from uhlm_ray.measures.cu_theory import (
        empirical_risk,
        risk_uniform,
        threshold_for_budget,
        threshold_for_budget_uniform,
        top_p_for_budget,
        truncation_risk,
    )

    assert truncation_risk(kept_mass=0.93) == pytest.approx(0.07) and top_p_for_budget(epsilon=0.05) == 0.95
    # uniform u, beta = u: R = u^2 / 2; a budget of 1/8 allows u_th = 1/2
    assert threshold_for_budget_uniform(a=1.0, b=0.0, epsilon=0.0, budget=0.125) == pytest.approx(0.5)
    # with eps = 0.1: u^2 / 2 + 0.1 u = 0.125 -> u = -0.1 + sqrt(0.01 + 0.25)
    assert threshold_for_budget_uniform(a=1.0, b=0.0, epsilon=0.1, budget=0.125) == pytest.approx(
        -0.1 + math.sqrt(0.26))
    # b < 0: nothing accrues below -b/a = 0.2 without truncation; past it (u - 0.2)^2 / 2 = 0.02 -> u = 0.4
    assert risk_uniform(u_th=0.4, a=1.0, b=-0.2, epsilon=0.0) == pytest.approx(0.02)
    assert threshold_for_budget_uniform(a=1.0, b=-0.2, epsilon=0.0, budget=0.02) == pytest.approx(0.4)
    assert threshold_for_budget_uniform(a=1.0, b=-0.2, epsilon=0.1, budget=0.01) == pytest.approx(0.1)  # eps u
    assert threshold_for_budget_uniform(a=1.0, b=0.0, epsilon=0.0, budget=1.0) == 1.0
    # the records' version by counting: u = 0.1..0.5, beta = u; R^(0.3) = (0.1 + 0.2 + 0.3) / 5 = 0.12
    u = np.array([0.3, 0.1, 0.5, 0.2, 0.4])
    assert empirical_risk(u=u, beta=u, u_th=0.3) == pytest.approx(0.12)
    assert threshold_for_budget(u=u, beta=u, budget=0.12) == pytest.approx(0.3)
    assert threshold_for_budget(u=u, beta=u, budget=0.119) == pytest.approx(0.2)
    assert threshold_for_budget(u=u, beta=u, budget=0.12, epsilon=0.02) == pytest.approx(0.2)  # 0.12 + 3 * 0.02/5
    assert threshold_for_budget(u=u, beta=u, budget=0.0) == 0.0
    # and on samples from the uniform case the records' rule approaches the closed form
    rng = np.random.default_rng(3)
    samples = rng.random(200_000)
    assert threshold_for_budget(u=samples, beta=samples, budget=0.125, epsilon=0.1) == pytest.approx(
        -0.1 + math.sqrt(0.26), abs=0.01)


def test_block_payload_bits_by_hand():
    from uhlm_ray.link.payload import block_payload_bits

    fp32 = PayloadConfig(prob_bits=32)
    # ids: 18 bits a draft; truncated: k (18 + 32) + 18 a draft; full: |V| 32 + 18 a draft
    assert block_payload_bits(payload="ids", kept=[0, 0, 0], verified=[True] * 3, vocab_size=QWEN_V, cfg=fp32) == 54
    assert block_payload_bits(payload="truncated", kept=[4, 1], verified=[True, True], vocab_size=QWEN_V,
                              cfg=fp32) == 4 * 50 + 18 + 1 * 50 + 18
    assert block_payload_bits(payload="full", kept=[QWEN_V], verified=[True], vocab_size=QWEN_V,
                              cfg=fp32) == QWEN_V * 32 + 18
    # a draft committed unverified rides as its id, and every draft gets a flag bit
    assert block_payload_bits(payload="full", kept=[QWEN_V, QWEN_V], verified=[False, True], vocab_size=QWEN_V,
                              cfg=fp32) == 18 + QWEN_V * 32 + 18 + 2


def test_top_p_from_a_partial_sort_equals_the_full_sort():
    """On a CPU the truncation grows a topk until it holds mass p: the kept set and mass are those of a full sort."""
    rng = np.random.default_rng(8)
    x = torch.from_numpy(rng.dirichlet(np.full(5000, 0.05))).float()
    for p in (0.5, 0.9, 0.999, 1.0):
        got = truncate(probs=x, truncation="top_p", top_k=1, top_p=p)
        ordered = torch.sort(x, descending=True).values
        kept = int(torch.searchsorted(torch.cumsum(ordered, 0), torch.tensor([p * float(x.sum())]))[0]) + 1
        assert got.kept == min(kept, 5000)
        assert got.kept_mass == pytest.approx(float(ordered[:got.kept].sum() / x.sum()), rel=1e-5)
        # the GPU's way (one full sort) keeps the same tokens at the same probabilities
        full = truncate(probs=x, truncation="top_p", top_k=1, top_p=p, full_sort=True)
        assert (full.kept, full.kept_mass) == (got.kept, got.kept_mass) and torch.equal(full.probs, got.probs)
