"""Coupled sampling (decode.sampling=coupled) end to end on the tiny random-weight pair in float64, so that no
rounding tie can flip an argmax: exact methods emit the LLM alone's own tokens, whatever drafted them."""

from __future__ import annotations

import types

import numpy as np
import pytest
from scipy import stats

from uhlm_ray.config import BLOCK_STOPS, load_config
from uhlm_ray.decode import decode_batch, device_job, make_policy
from uhlm_ray.models import full_recompute_logits
from uhlm_ray.validation import ConfigError

KEYS = 500  # distinct session keys (prompt indices), each a different draw of the shared noise
TOKENS = 12
PROMPTS = [[2, 3, 4], [5, 6], [7, 8, 9, 10], [11]]


@pytest.fixture(scope="module")
def pair64(tiny_pair64):
    # no end-of-sequence stop: every key decodes all its tokens, so every position is compared
    return types.SimpleNamespace(slm=tiny_pair64.slm, llm=tiny_pair64.llm, eos_token_ids=frozenset())


def _decode(pair, method: str, *overrides: str) -> list[list[int]]:
    cfg = load_config(overrides=[f"decode.max_new_tokens={TOKENS}", "decode.sampling=coupled", "block.payload=ids",
                                 "decode.evaluation_methods=[]", *overrides])
    policy = make_policy(method=method, cfg=cfg)
    jobs = [device_job(prompt_ids=PROMPTS[i % len(PROMPTS)], prompt_index=i, method=method, cfg=cfg, policy=policy)
            for i in range(KEYS)]
    return [outcome.tokens for outcome in decode_batch(pair=pair, jobs=jobs, cfg=cfg)]


@pytest.fixture(scope="module")
def llm_tokens(pair64):
    return _decode(pair64, "llm")


def test_hlm_emits_the_llm_alones_tokens(pair64, llm_tokens):
    assert all(len(t) == TOKENS for t in llm_tokens)
    hlm = _decode(pair64, "hlm")
    assert sum(h == t for h, t in zip(hlm, llm_tokens, strict=True)) == KEYS


@pytest.mark.parametrize("stop", BLOCK_STOPS)
@pytest.mark.parametrize("max_drafts", [1, 2, 3, 4])
def test_the_block_method_emits_the_llm_alones_tokens_under_every_stop(pair64, llm_tokens, stop, max_drafts):
    block = _decode(pair64, "block_hlm", f"block.stop={stop}", f"block.max_drafts={max_drafts}",
                    f"block.fixed_drafts={max_drafts}", "block.stop_u_th=0.6")
    assert sum(b == t for b, t in zip(block, llm_tokens, strict=True)) == KEYS


def test_the_slm_alone_is_not_the_llm(pair64, llm_tokens):
    """The negative control of the equalities above: a different model racing on the same noise differs."""
    slm = _decode(pair64, "slm")
    assert sum(s == t for s, t in zip(slm, llm_tokens, strict=True)) < KEYS // 2


def test_coupled_blocks_need_the_ids_payload():
    with pytest.raises(ConfigError, match="block.payload='ids'"):
        load_config(overrides=["decode.sampling=coupled", "block.payload=truncated"])
    with pytest.raises(ConfigError, match="decode.sampling"):
        load_config(overrides=["decode.sampling=shared"])


def test_exact_describes_the_configuration_not_the_run(tiny_pair):
    """A fallback deadline that no upload misses skips nothing, yet the setting is lossy: not exact."""
    from uhlm_ray.experiments.datasets import Example
    from uhlm_ray.experiments.evaluate import run_method, summarize_methods

    examples = [Example(id="e0", prompt="the cat", reference="ref"), Example(id="e1", prompt="a dog", reference="r")]
    cfg = load_config(overrides=["decode.max_new_tokens=6", "methods=[llm,hlm,block_hlm]", "clock.tau_slm_ms=1",
                                 "clock.tau_llm_ms=2", "clock.tau_measure_ms=1", "channel.deadline_ms=1000000",
                                 "channel.deadline_mode=fallback"])
    results = {m: run_method(pair=tiny_pair, examples=examples, method=m, cfg=cfg, encoder=None, store=None)
               for m in cfg.methods}
    s = summarize_methods(results=results, cfg=cfg)
    assert s["hlm"]["all_verified"] == 1.0 and s["hlm"]["exact"] == 0.0
    assert s["block_hlm"]["all_verified"] == 1.0 and s["block_hlm"]["exact"] == 0.0
    assert s["llm"]["exact"] == 1.0
    plain = load_config(overrides=["decode.max_new_tokens=6", "methods=[hlm]", "clock.tau_slm_ms=1",
                                   "clock.tau_llm_ms=2", "clock.tau_measure_ms=1"])
    assert summarize_methods(results={"hlm": results["hlm"]}, cfg=plain)["hlm"]["exact"] == 1.0


def _joint_law(llm, prompt: list[int], vocab: int) -> np.ndarray:
    """P(t1, t2, t3) [V, V, V] of the LLM sampling three tokens after `prompt`, from its exact conditionals."""
    import torch

    def probs(ids):
        return torch.softmax(full_recompute_logits(model=llm, token_ids=ids).double(), -1).numpy()

    p1 = probs(prompt)
    p2 = np.stack([probs(prompt + [a]) for a in range(vocab)])  # [V, V]
    p3 = np.stack([[probs(prompt + [a, b]) for b in range(vocab)] for a in range(vocab)])  # [V, V, V]
    return p1[:, None, None] * p2[:, :, None] * p3


def _coupled_triples(pair, n: int) -> np.ndarray:
    cfg = load_config(overrides=["decode.max_new_tokens=3", "decode.sampling=coupled", "block.payload=ids"])
    jobs = [device_job(prompt_ids=PROMPTS[0], prompt_index=i, method="llm", cfg=cfg, policy=None) for i in range(n)]
    return np.array([outcome.tokens for outcome in decode_batch(pair=pair, jobs=jobs, cfg=cfg)])  # [n, 3]


def _pooled_chisquare(triples: np.ndarray, law: np.ndarray) -> float:
    """Chi-square p-value of the observed triples against the law, cells with fewer than 5 expected pooled."""
    vocab = law.shape[0]
    counts = np.bincount(np.ravel_multi_index(triples.T, law.shape), minlength=law.size)
    expected = law.ravel() * len(triples)
    big = expected >= 5
    observed = np.append(counts[big], counts[~big].sum())
    wanted = np.append(expected[big], expected[~big].sum())
    assert big.sum() >= 20, f"only {big.sum()} cells of {vocab}^3 are testable"
    return float(stats.chisquare(observed, f_exp=wanted * observed.sum() / wanted.sum()).pvalue)


def test_the_coupled_llm_alone_samples_the_llms_joint_law(pair64, monkeypatch):
    """3,000 keys: the first 3 tokens' joint law is the LLM's (alpha 1e-3); noise reused across positions (the
    negative control) is rejected by the same test."""
    import uhlm_ray.sampling.coupling as coupling_module

    law = _joint_law(pair64.llm, PROMPTS[0], pair64.llm.vocab_size)
    assert _pooled_chisquare(_coupled_triples(pair64, 3000), law) > 1e-3
    real = coupling_module.race_exponentials
    monkeypatch.setattr(coupling_module, "race_exponentials",
                        lambda *, key, position, vocab_size: real(key=key, position=1, vocab_size=vocab_size))
    assert _pooled_chisquare(_coupled_triples(pair64, 3000), law) < 1e-6


def _outcomes(pair, method: str, *overrides: str, keys: int):
    cfg = load_config(overrides=[f"decode.max_new_tokens={TOKENS}", "decode.sampling=coupled", "block.payload=ids",
                                 *overrides])
    policy = make_policy(method=method, cfg=cfg)
    jobs = [device_job(prompt_ids=PROMPTS[i % len(PROMPTS)], prompt_index=i, method=method, cfg=cfg, policy=policy)
            for i in range(keys)]
    return decode_batch(pair=pair, jobs=jobs, cfg=cfg)


def _committed(outcome) -> list[tuple[int, int, bool]]:
    """(token, the LLM's winner there or -1, verified) per response position of a coupled run's records."""
    out = []
    for r in outcome.records:
        if hasattr(r, "drafts"):
            committed = r.num_accepted if r.sent else len(r.drafts)
            out += [(r.drafts[i], r.llm_tokens[i], r.sent and r.verified[i]) for i in range(committed)]
            if r.sent:
                out.append((r.tokens[r.num_accepted], r.tokens[r.num_accepted], True))  # the LLM's own token
        else:
            out.append((r.token, r.llm_token, r.sent))
    return out[:TOKENS]


@pytest.mark.parametrize(("method", "overrides"), [
    ("u_hlm", ["policy.u_th=0.3", "decode.evaluation_methods=[u_hlm]"]),
    ("block_hlm", ["block.skip_u_th=0.3", "block.stop=fixed", "block.fixed_drafts=3", "block.max_drafts=3",
                   "decode.evaluation_methods=[block_hlm]"]),
])
def test_a_lossy_method_leaves_the_llm_where_an_unverified_draft_is_not_its_winner(pair64, llm_tokens, method,
                                                                                    overrides):
    """Evaluation mode records the LLM's race winner at every unverified position. Verified tokens are the LLM's
    winners by construction, so the first position whose committed token is not the recorded winner is exactly
    where the response leaves the LLM alone's, and the LLM alone emitted that winner there."""
    from uhlm_ray.measures.agreement import first_divergence, unverified_checks

    keys = 200
    outcomes = _outcomes(pair64, method, *overrides, keys=keys)
    skipped = disagreed = 0
    checks = []
    for key, outcome in enumerate(outcomes):
        committed = _committed(outcome)
        assert all(winner >= 0 for _, winner, verified in committed if not verified), "an unverified draft unscored"
        skipped += sum(not verified for *_, verified in committed)
        wrong = [p for p, (token, winner, _) in enumerate(committed, start=1) if token != winner]
        disagreed += bool(wrong)
        diverged = first_divergence(tokens=outcome.tokens, reference=llm_tokens[key])
        assert diverged == (wrong[0] if wrong else None)
        if wrong:
            assert llm_tokens[key][wrong[0] - 1] == committed[wrong[0] - 1][1]
        checks += unverified_checks(outcome.records)
        assert sum(unverified_checks(outcome.records)) >= bool(wrong)
    # the test saw responses that stay with the LLM and responses that leave it, and both kinds of unverified draft
    assert 0 < disagreed < keys and 0 < sum(checks) < len(checks), (disagreed, sum(checks), len(checks))


def test_the_summary_reports_where_methods_leave_the_llm_alone(tiny_pair):
    """Coupled: HLM's responses are the LLM alone's; U-HLM (evaluation mode) reports the share of its unverified
    drafts that are not the LLM's winners and where its responses diverge."""
    from uhlm_ray.experiments.datasets import Example
    from uhlm_ray.experiments.evaluate import run_method, summarize_methods

    examples = [Example(id=f"e{i}", prompt=p, reference="r")
                for i, p in enumerate(["the cat", "a dog", "red and blue", "the mat is small"])]
    cfg = load_config(overrides=["decode.max_new_tokens=10", "methods=[llm,hlm,u_hlm]", "clock.tau_slm_ms=1",
                                 "clock.tau_llm_ms=2", "clock.tau_measure_ms=1", "decode.sampling=coupled",
                                 "policy.u_th=0.3", "block.payload=ids"])
    results = {m: run_method(pair=tiny_pair, examples=examples, method=m, cfg=cfg, encoder=None, store=None)
               for m in cfg.methods}
    s = summarize_methods(results=results, cfg=cfg)
    assert s["hlm"]["identical_to_llm"] == 1.0 and s["hlm"]["unverified_checked"] == 0
    u = s["u_hlm"]
    assert u["unverified_checked"] == sum(not r.sent for res in results["u_hlm"] for r in res.records) > 0
    assert 0.0 < u["unverified_disagreement"] <= 1.0 and u["identical_to_llm"] < 1.0
    assert 1 <= u["first_divergence_median"] <= 10
