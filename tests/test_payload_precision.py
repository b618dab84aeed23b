"""Half-precision payloads (payload.prob_dtype=float16|bfloat16): the upload is rounded, the device drafts from what
it sends, and the verifier tests against the same values, so the output stays distributed exactly as the LLM's.

- Settings: how prob_dtype and prob_bits resolve, and what is refused.
- `quantise` and `payload_distribution` by hand: underflow, renormalisation, order independence, bits as charged.
- Exactness at high power, on the functions the device and the verifier call: DRAWS drafts from a designed x whose
  bfloat16 rounding is large, verified against y; chi-square at ALPHA. The negative control (drafting from the
  unrounded x while uploading the bfloat16 one) must be rejected; its power is computed from its exact output law
  (noncentral chi-square) and checked before the draws.
- Plumbing: the one-draft and block decoders draw from and upload the rounded values, the HTTP schema carries them
  in their dtype.
- Exactness through the whole loop on the tiny pair (tests/test_block_exact.py's law of the first three tokens), for
  HLM, CU-HLM and the block method with float16 and bfloat16 payloads.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from actors.http_schema import Block, Verify, to_block_request, to_request
from tests.test_block_exact import ALPHA, LENGTH, PROMPT, SEEDS, block_samples, chi_square_p, llm_joint_law
from uhlm_ray.base_station.verifier import Verifier
from uhlm_ray.config import PayloadConfig, load_config
from uhlm_ray.decode import DeviceJob, decode_lockstep, make_policy
from uhlm_ray.device.block_decoder import BlockDecoder
from uhlm_ray.device.decoder import DeviceDecoder, keyed_uniform
from uhlm_ray.device.stopping import FixedLength
from uhlm_ray.link.payload import (
    full_payload_bits,
    payload_distribution,
    quantise,
    truncated_payload_bits,
)
from uhlm_ray.models.prefix_cache import PrefixCache
from uhlm_ray.sampling.rng import Purpose, SessionKey
from uhlm_ray.sampling.verify import sample_inverse_cdf, verify_draft
from uhlm_ray.validation import ConfigError

# A distribution whose bfloat16 rounding is among the largest for three tokens (found by a local search of the
# noncentrality below), and an LLM distribution that turns it into an output error: drafting from x while
# verifying against the rounded q shifts the output law by about 3e-3 per token.
DESIGN_X = [0.28032877, 0.20600043, 0.51367081]
DESIGN_Y = [0.15578552, 0.33145695, 0.51275753]
DRAWS = 6_000_000
CHUNK = 1_000_000
MIN_POWER = 0.999  # of the negative control at ALPHA, from its exact output law


def test_prob_dtype_and_prob_bits_resolve():
    assert (PayloadConfig().dtype, PayloadConfig().bits) == ("float32", 32)
    assert (PayloadConfig(prob_bits=16).dtype, PayloadConfig(prob_bits=16).bits) == ("float16", 16)  # older configs
    assert PayloadConfig(prob_bits=32).dtype == "float32"
    assert (PayloadConfig(prob_dtype="bfloat16").dtype, PayloadConfig(prob_dtype="bfloat16").bits) == ("bfloat16", 16)
    assert load_config(overrides=["payload.prob_dtype=float16", "payload.prob_bits=16"]).payload.bits == 16
    with pytest.raises(ConfigError, match=r"payload.prob_bits=16 does not match payload.prob_dtype='float32'"):
        load_config(overrides=["payload.prob_dtype=float32", "payload.prob_bits=16"])
    with pytest.raises(ConfigError, match=r"payload.prob_dtype='float8' is not one of"):
        load_config(overrides=["payload.prob_dtype=float8"])
    with pytest.raises(ConfigError, match=r"payload.prob_bits='8' is not one of \['16', '32'\]"):
        load_config(overrides=["payload.prob_bits=8"])


def test_bits_stay_as_charged():
    v = 151_936  # 18 index bits
    for dtype in ("float16", "bfloat16"):
        cfg = PayloadConfig(prob_dtype=dtype)
        assert full_payload_bits(vocab_size=v, cfg=cfg) == v * 16 + 18
        assert truncated_payload_bits(kept=64, vocab_size=v, cfg=cfg) == 64 * (18 + 16) + 18
    assert full_payload_bits(vocab_size=v, cfg=PayloadConfig()) == v * 32 + 18


def test_a_trimmed_head_sends_its_support_densely():
    v, support = 151_936, 32_790  # model.slm_head_vocab=32768 and the Qwen2.5 special tokens
    cfg = PayloadConfig()
    assert full_payload_bits(vocab_size=v, cfg=cfg, support=support) == support * 32 + 18
    assert truncated_payload_bits(kept=64, vocab_size=v, cfg=cfg, support=support) == 64 * (18 + 32) + 18
    # past support * 32 / (18 + 32) kept tokens the dense codec over the support wins
    assert truncated_payload_bits(kept=30_000, vocab_size=v, cfg=cfg, support=support) == support * 32 + 18
    with pytest.raises(ConfigError, match=r"support=151937 is outside the allowed range \[1, 151936\]"):
        full_payload_bits(vocab_size=v, cfg=cfg, support=v + 1)
    with pytest.raises(ConfigError, match=r"kept tokens=32791 is outside the allowed range \[1, 32790\]"):
        truncated_payload_bits(kept=support + 1, vocab_size=v, cfg=cfg, support=support)


def test_quantise_by_hand():
    x = torch.tensor([0.5, 0.3, 0.2 - 2e-8, 2e-8])  # float32
    same = quantise(probs=x, dtype="float32")
    assert same.sent is x and same.probs is x
    half = quantise(probs=x, dtype="float16")
    assert half.sent.dtype == torch.float16
    assert half.sent[3] == 0  # 2e-8 < 2^-25: underflows, is not sent, and is never drafted
    assert torch.equal(half.sent, x.double().to(torch.float16) * (half.sent != 0))
    assert half.probs.dtype == torch.float32 and float(half.probs.double().sum()) == pytest.approx(1.0, abs=1e-7)
    assert half.probs[3] == 0
    brain = quantise(probs=x, dtype="bfloat16")
    assert brain.sent.dtype == torch.bfloat16 and brain.sent[3] > 0  # bfloat16 keeps float32's range
    assert float(quantise(probs=torch.tensor([1 - 1e-14, 1e-14]), dtype="bfloat16").sent[1]) == 0  # < 2^-45
    # the renormalised values: 0.3 in bfloat16 is 0.30078125, 0.2 is 0.2001953125, 0.5 exact; divided by their sum
    wanted = torch.tensor([0.5, 0.30078125, 0.2001953125, float(brain.sent[3])], dtype=torch.float64)
    assert torch.equal(brain.probs, (wanted / wanted.sum()).float())


def test_payload_distribution_does_not_depend_on_the_order_of_summation():
    """Both ends renormalise in float64, where the sum of a half-precision payload is exact: the same float32
    distribution on the device and on the base station, whatever the order."""
    x = torch.softmax(torch.randn(151_936, generator=torch.Generator().manual_seed(0)) * 4, dim=-1)
    perm = torch.randperm(x.numel(), generator=torch.Generator().manual_seed(1))
    for dtype in ("float16", "bfloat16"):
        q = quantise(probs=x, dtype=dtype)
        assert torch.equal(payload_distribution(q.sent[perm]), q.probs[perm])
        assert torch.equal(payload_distribution(q.sent.unsqueeze(0).expand(3, -1))[2], q.probs)  # batched rows


def _outputs(*, draft_from: torch.Tensor, sent: torch.Tensor, y: torch.Tensor, seed: int) -> np.ndarray:
    """DRAWS rounds with every draft sent: d ~ draft_from (the device), verification of d against the distribution
    the sent values stand for (the verifier); returns the counts of the emitted tokens."""
    rng = np.random.default_rng(seed)
    counts = np.zeros(y.shape[-1], dtype=np.int64)
    verified = payload_distribution(sent)  # [V] float32, what the verifier tests against
    for _ in range(DRAWS // CHUNK):
        draft = sample_inverse_cdf(probs=draft_from.expand(CHUNK, -1), uniform=torch.from_numpy(rng.random(CHUNK)))
        verdict = verify_draft(x=verified.expand(CHUNK, -1), y=y.expand(CHUNK, -1), draft=draft,
                               u_accept=torch.from_numpy(rng.random(CHUNK)),
                               u_resample=torch.from_numpy(rng.random(CHUNK)), validate=False)
        counts += np.bincount(verdict.token.numpy(), minlength=y.shape[-1])
    return counts


def _design() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor(DESIGN_X, dtype=torch.float32)
    y = torch.tensor(DESIGN_Y, dtype=torch.float32)
    return x / x.sum(), y / y.sum()


def _p_value(counts: np.ndarray, y: torch.Tensor) -> float:
    return float(stats.chisquare(counts, y.double().numpy() * counts.sum()).pvalue)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_drafting_from_the_rounded_upload_is_exact(dtype):
    x, y = _design()
    q = quantise(probs=x, dtype=dtype)
    assert not torch.equal(q.probs, x)  # the rounding really changes the distribution
    p = _p_value(_outputs(draft_from=q.probs, sent=q.sent, y=y, seed=1), y)
    print(f"{dtype}: p = {p:.4f}")
    assert p > ALPHA


def wrong_law(*, x: np.ndarray, q: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The output law when d ~ x but the verifier tests against q: x_t min(1, y_t / q_t) + R norm(max(y - q, 0))_t,
    R = sum_s x_s (1 - min(1, y_s / q_s)) (speculative sampling with a mislabelled proposal)."""
    keep = np.minimum(1.0, y / q)
    residual = np.maximum(y - q, 0.0)
    return x * keep + (x * (1.0 - keep)).sum() * residual / residual.sum()


def test_negative_control_drafting_from_the_unrounded_x_is_detected():
    """Upload the bfloat16 values, draft from the float32 x: the output is no longer y. Its exact law gives the
    chi-square's noncentrality lambda = DRAWS sum (p - y)^2 / y and so the power at ALPHA, checked first."""
    x, y = _design()
    q = quantise(probs=x, dtype="bfloat16")
    law = wrong_law(x=x.double().numpy(), q=q.probs.double().numpy(), y=y.double().numpy())
    yd = y.double().numpy()
    noncentrality = DRAWS * float(((law - yd) ** 2 / yd).sum())
    df = len(yd) - 1
    power = float(stats.ncx2.sf(stats.chi2.isf(ALPHA, df), df, noncentrality))
    print(f"negative control: lambda = {noncentrality:.1f}, power at alpha {ALPHA} = {power:.5f}")
    assert power >= MIN_POWER
    p = _p_value(_outputs(draft_from=x, sent=q.sent, y=y, seed=2), y)
    print(f"negative control: p = {p:.3g}")
    assert p < ALPHA


def test_the_one_draft_decoder_drafts_from_and_uploads_the_rounded_distribution():
    logits = torch.linspace(-3.0, 3.0, 18) ** 2 / 2  # [V] float32
    for method, extra in (("hlm", []), ("cu_hlm", ["cu_hlm.truncation=top_k", "cu_hlm.top_k=5"])):
        cfg = load_config(overrides=["payload.prob_dtype=bfloat16", "channel.fading=none", *extra])
        key = SessionKey(seed=3, device=0, prompt=0)
        decoder = DeviceDecoder(key=key, method=method, cfg=cfg, policy=make_policy(method=method, cfg=cfg),
                                mean_snr=1.0, vocab_size=18, eos_token_ids=frozenset(), evaluate=False)
        draft = decoder.draft(logits=logits, tau_slm_s=0.01)
        sent = decoder.request(session_id="s", draft=draft).draft_probs
        assert sent.dtype == torch.bfloat16
        assert torch.equal(draft.probs, payload_distribution(sent))  # drawn from what goes up
        expected = sample_inverse_cdf(probs=draft.probs.unsqueeze(0),
                                      uniform=keyed_uniform(key=key, round_index=1, purpose=Purpose.DRAFT))
        assert draft.draft == int(expected[0])
        assert draft.kept_tokens == int(torch.count_nonzero(sent)) == (18 if method == "hlm" else 5)
        assert draft.distribution_bits == (18 * 16 if method == "hlm" else 5 * (5 + 16)) + 5


@pytest.mark.parametrize("payload", ["full", "truncated"])
def test_the_block_decoder_drafts_from_and_uploads_the_rounded_distribution(payload):
    cfg = load_config(overrides=["payload.prob_dtype=float16", f"block.payload={payload}", "block.truncation=top_k",
                                 "block.top_k=4", "channel.fading=none"])
    key = SessionKey(seed=5, device=0, prompt=0)
    decoder = BlockDecoder(key=key, cfg=cfg, rule=FixedLength(drafts=2), mean_snr=1.0, vocab_size=18,
                           eos_token_ids=frozenset(), evaluate=False, prompt_last_token=0)
    decoder.begin_round()
    for i in range(2):
        decoder.add_draft(logits=torch.linspace(-20.0, 3.0, 18) * (i + 1), tau_slm_s=0.01)
    request = decoder.request(session_id="s")
    sent = request.draft_probs.to_dense() if request.draft_probs.is_sparse else request.draft_probs
    assert sent.dtype == torch.float16
    for i, d in enumerate(decoder.block):
        q = payload_distribution(sent[i])
        assert d.step.x_d == float(q[d.token])
        uniform = keyed_uniform(key=key, round_index=1, purpose=Purpose.DRAFT, offset=i)
        assert d.token == int(sample_inverse_cdf(probs=q.unsqueeze(0), uniform=uniform)[0])
        assert d.kept == (4 if payload == "truncated" else 18)  # the full payload is charged |V| probabilities
    if payload == "full":  # the steep second row's tail underflows in float16: those tokens are sent as 0
        assert int(torch.count_nonzero(sent[1])) < 18


def test_http_carries_half_precision_as_it_is():
    vocab = 6
    x = quantise(probs=torch.softmax(torch.arange(vocab, dtype=torch.float32), dim=-1), dtype="bfloat16").sent
    # any decimal that rounds to the value will do: here the shortest one numpy prints for each float16 / float32
    decimals = [float(np.format_float_positional(np.float32(v), unique=True)) for v in x.float().tolist()]
    body = Verify.model_validate({"round": 1, "draft_token_id": 5, "distribution": {
        "format": "full", "probs": decimals, "dtype": "bfloat16"}})
    request = to_request(session_id="s", body=body, vocab_size=vocab)
    assert request.draft_probs.dtype == torch.bfloat16 and torch.equal(request.draft_probs, x)
    block = Block.model_validate({"round": 1, "draft_token_ids": [5], "payload": {
        "format": "truncated", "token_ids": [[5, 4]], "probs": [[float(np.float16(0.7)), float(np.float16(0.3))]],
        "dtype": "float16"}})
    rows = to_block_request(session_id="s", body=block, vocab_size=vocab).draft_probs
    assert rows.dtype == torch.float16 and rows[0, 5] == torch.tensor(0.7, dtype=torch.float16)
    with pytest.raises(Exception, match="dtype"):
        Verify.model_validate({"round": 1, "draft_token_id": 5, "distribution": {
            "format": "full", "probs": decimals, "dtype": "float8"}})


# ---- the whole loop on the tiny pair: the law of the first three tokens (tests/test_block_exact.py) ----

@pytest.fixture(scope="module")
def law(tiny_pair):
    return llm_joint_law(tiny_pair.llm.model, PROMPT, tiny_pair.vocab_size)


ONE_DRAFT = {
    "hlm_bfloat16": ("hlm", ["payload.prob_dtype=bfloat16"]),
    "cu_hlm_top_k_float16": ("cu_hlm", ["payload.prob_dtype=float16", "cu_hlm.u_th=0.0", "cu_hlm.measure=confidence",
                                        "cu_hlm.truncation=top_k", "cu_hlm.top_k=3"]),
}


@pytest.mark.parametrize("case", list(ONE_DRAFT))
def test_one_draft_methods_with_half_precision_are_distributed_as_the_llm(tiny_pair, law, case):
    """Every round sent (HLM; CU-HLM with u_th = 0), SEEDS decodes of three tokens in lockstep."""
    method, overrides = ONE_DRAFT[case]
    cfg = load_config(overrides=["model.pair=custom", f"decode.max_new_tokens={LENGTH}", "channel.fading=none",
                                 *overrides])
    policy, prefixes = make_policy(method=method, cfg=cfg), PrefixCache()
    jobs = [DeviceJob(session_id=f"s{seed}", key=SessionKey(seed=seed, device=0, prompt=0), prompt_ids=PROMPT,
                      method=method, policy=policy, mean_snr=1.0) for seed in range(SEEDS)]
    verifier = Verifier(model=tiny_pair.llm, max_sessions=SEEDS, prefixes=prefixes)
    outcomes = decode_lockstep(slm=tiny_pair.slm, verifier=verifier, jobs=jobs, cfg=cfg, eos_token_ids=frozenset(),
                               prefixes=prefixes)
    assert all(len(o.tokens) == LENGTH and all(r.sent for r in o.records) for o in outcomes)
    p = chi_square_p([tuple(o.tokens) for o in outcomes], law)
    print(f"{case}: p = {p:.4f}")
    assert p > ALPHA


BLOCKS = {
    "full_bfloat16": ["payload.prob_dtype=bfloat16", "block.payload=full"],
    "truncated_top_k_float16": ["payload.prob_dtype=float16", "block.payload=truncated", "block.truncation=top_k",
                                "block.top_k=3"],
}


@pytest.mark.parametrize("case", list(BLOCKS))
def test_blocks_with_half_precision_are_distributed_as_the_llm(tiny_pair, law, case):
    p = chi_square_p(block_samples(tiny_pair, BLOCKS[case]), law)
    print(f"{case}: p = {p:.4f}")
    assert p > ALPHA
