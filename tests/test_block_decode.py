"""The block method's mechanics on the tiny random-weight pair (float32): records, KV rollback on both sides, the
lossy settings, a missed deadline, and its metrics worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from uhlm_ray.base_station.verifier import Verifier
from uhlm_ray.config import load_config
from uhlm_ray.decode import decode_prompt
from uhlm_ray.link.payload import index_bits
from uhlm_ray.measures.block_metrics import BlockStats, summarize_blocks
from uhlm_ray.measures.clock import ModelledClock, modelled_seconds
from uhlm_ray.models import CausalSession, full_recompute_logits, response_logits
from uhlm_ray.protocol import BlockRequest
from uhlm_ray.records import BlockRecord, PromptResult
from uhlm_ray.sampling.rng import SessionKey

PROMPT = [2, 3, 4, 5, 6]


def _decode(pair, *overrides: str, tokens: int = 16, seed: int = 0):
    cfg = load_config(overrides=["model.pair=custom", f"decode.max_new_tokens={tokens}", f"decode.seed={seed}",
                                 *overrides])
    return cfg, decode_prompt(pair=pair, prompt_ids=PROMPT, prompt_index=0, method="block_hlm", cfg=cfg, policy=None)


@pytest.mark.parametrize("overrides", [
    ("block.payload=ids", "block.stop=fixed", "block.fixed_drafts=3"),
    ("block.payload=truncated", "block.stop=uncertainty", "block.stop_u_th=0.6"),
    ("block.payload=full", "block.stop=confidence"),
    ("block.payload=ids", "block.greedy=true", "block.stop=channel_aware"),
])
def test_block_records_are_consistent(tiny_pair, overrides):
    cfg, (tokens, records, stop_reason, _) = _decode(tiny_pair, *overrides)
    assert [r.round for r in records] == list(range(1, len(records) + 1))
    emitted, position, seen = [], 1, 0
    for r in records:
        n, a = len(r.drafts), r.num_accepted
        assert r.position == position and 1 <= n <= cfg.block.max_drafts and 0 <= a <= n
        assert r.sent and r.upload_attempts >= 1 and r.tau_up_s > 0  # lossless: every block is verified
        assert r.tokens[:a] == r.drafts[:a] and len(r.tokens) == a + 1
        assert r.bonus == (a == n) and r.recovered == (a < n)
        assert r.llm_pass_tokens == n + (len(emitted) - seen)  # the drafts and every token the LLM has not seen
        ids = "block.payload=ids" in overrides
        assert (r.payload_bits == n * index_bits(vocab_size=tiny_pair.vocab_size) + r.sync_bits) or not ids
        assert all(p == pytest.approx(min(1.0, y / x) if not ids else y, abs=1e-6)
                   for p, y, x in zip(r.accept_prob, r.y_d, r.x_d, strict=True))
        seen = len(emitted) + a  # the LLM processed the catch-up and the kept drafts, not its own last token
        emitted += r.tokens
        position += len(r.tokens)
    assert tokens == emitted[:len(tokens)] and stop_reason in ("eos", "max_new_tokens")


def test_response_logits_score_each_token_on_the_prefix_before_it(tiny_pair):
    response = [7, 8, 9, 4]
    rows = response_logits(model=tiny_pair.slm, prompt_ids=PROMPT, response=response)  # [4, V]
    assert rows.shape == (len(response), tiny_pair.vocab_size)
    for j in range(len(response)):
        assert torch.allclose(rows[j], full_recompute_logits(model=tiny_pair.slm, token_ids=PROMPT + response[:j]),
                              atol=1e-5), j


def test_slm_and_llm_caches_roll_back_to_the_kept_prefix(tiny_pair):
    """After a discard, the next logits equal a cache-free forward over the kept tokens: nothing kept recomputed,
    nothing discarded left behind."""
    session = CausalSession(model=tiny_pair.slm, prompt_ids=PROMPT)
    for token in (7, 8, 9):
        session.append(token)
    session.next_logits()
    session.discard(count=2, last_token=7)
    session.append(11)
    assert torch.allclose(session.next_logits(), full_recompute_logits(model=tiny_pair.slm, token_ids=PROMPT + [7, 11]),
                          atol=1e-5)

    verifier = Verifier(model=tiny_pair.llm)
    verifier.open(session_id="s", prompt_ids=PROMPT, key=SessionKey(seed=1, device=0, prompt=0))
    (first,) = verifier.verify_blocks([BlockRequest(session_id="s", round_index=1, new_tokens=[], drafts=[7, 8, 9],
                                                    draft_probs=None)])
    kept = first.tokens  # a drafts and the final token, which the LLM has not processed yet
    (second,) = verifier.verify_blocks([BlockRequest(session_id="s", round_index=2, new_tokens=[kept[-1]],
                                                     drafts=[4], draft_probs=None)])
    y = torch.softmax(full_recompute_logits(model=tiny_pair.llm, token_ids=PROMPT + kept), dim=-1)
    assert second.y_d[0] == pytest.approx(float(y[4]), abs=1e-5)
    assert second.pass_tokens == 2


def test_skip_threshold_commits_drafts_unverified_and_says_it_is_lossy(tiny_pair):
    _, (tokens, records, _, _) = _decode(tiny_pair, "block.skip_u_th=1.0", "block.stop=fixed", "block.fixed_drafts=2")
    assert not any(r.sent for r in records)  # every draft below the threshold: nothing goes up
    assert all(r.tokens == r.drafts and not r.bonus for r in records)
    summary = summarize_blocks(results=[_result(records, tokens)], clock=ModelledClock(tau_slm=0.02, tau_llm=0.1))
    assert summary["exact"] == 0.0 and summary["num_skipped"] == len(tokens) and summary["uploads_per_token"] == 0


def test_lossy_blocks_are_scored_in_evaluation_mode(tiny_pair):
    """Drafts committed unverified get the LLM's y_d afterwards, so the risk they took is measured."""
    _, (tokens, records, _, _) = _decode(tiny_pair, "block.skip_u_th=0.5", "block.stop=fixed",
                                         "block.fixed_drafts=2", "decode.evaluation_methods=[block_hlm]", tokens=20)
    unverified = [(r, i) for r in records for i in range(r.num_accepted if r.sent else len(r.drafts))
                  if not (r.sent and r.verified[i])]
    assert unverified, "some drafts were committed unverified"
    assert all(not math.isnan(r.y_d[i]) for r, i in unverified)
    summary = summarize_blocks(results=[_result(records, tokens)], clock=ModelledClock(tau_slm=0.02, tau_llm=0.1))
    assert summary["rejection_risk"] >= 0.0 and summary["exact"] == 0.0


def test_a_missed_deadline_keeps_the_drafts_and_charges_the_deadline(tiny_pair):
    _, (tokens, records, _, _) = _decode(tiny_pair, "channel.deadline_ms=0.001", "channel.deadline_mode=fallback",
                                         "block.stop=fixed", "block.fixed_drafts=2")
    assert all(r.deadline_fallback and not r.sent and r.tau_up_s == pytest.approx(1e-6) for r in records)
    clock = ModelledClock(tau_slm=0.02, tau_llm=0.1)
    assert modelled_seconds(record=records[0], clock=clock) == pytest.approx(2 * 0.02 + 1e-6
                                                                             + records[0].tau_uncertainty_s)


def _record(*, drafts, a, sent=True, verified=None, pass_tokens=None, bits=100, tau_llm=0.3) -> BlockRecord:
    n = len(drafts)
    final = [99] if sent else []
    return BlockRecord(
        method="block_hlm", prompt_index=0, round=1, position=1, drafts=drafts, uncertainty=[0.1] * n,
        x_d=[0.5] * n, verified=verified or [True] * n, sent=sent, tokens=drafts[:a] + final, num_accepted=a,
        recovered=sent and a < n, bonus=sent and a == n, y_d=[0.5] * n, accept_prob=[1.0] * n,
        payload_bits=bits if sent else 0, sync_bits=0, kept_tokens=0, fading_gain=1.0, snr_db=0.0,
        upload_attempts=1 if sent else 0, deadline_fallback=False, tau_up_s=0.05 if sent else 0.0, tau_slm_s=0.1 * n,
        tau_uncertainty_s=0.0, tau_llm_s=tau_llm if sent else 0.0,
        llm_pass_tokens=pass_tokens if pass_tokens is not None else n + 1, wall_s=1.0)


def _result(records, tokens=None) -> PromptResult:
    tokens = tokens if tokens is not None else [t for r in records for t in r.tokens]
    return PromptResult(method="block_hlm", prompt_index=0, example_id="e", reference="r", response="x",
                        tokens=tokens, stop_reason="max_new_tokens", prompt_tokens=5, prefill_s=0.0, records=records,
                        similarity=0.5)


def test_block_metrics_by_hand():
    records = [_record(drafts=[1, 2, 3], a=3), _record(drafts=[4, 5], a=0), _record(drafts=[6, 7, 8, 9], a=2)]
    stats = BlockStats.from_records(records)
    assert (stats.num_uploads, stats.num_drafts, stats.num_accepted_tokens) == (3, 9, 5)
    assert (stats.num_recovered_tokens, stats.num_bonus_tokens, stats.num_tokens) == (2, 1, 8)
    assert stats.mean_accepted_length == pytest.approx(1 + 5 / 3)  # tokens per verified block: 4, 1, 3
    assert stats.accepted_per_position == [2, 2, 1, 0] and stats.drafts_per_position == [3, 3, 2, 1]
    clock = ModelledClock(tau_slm=0.02, tau_llm=0.1, llm_pass="flat", flat_pass_tokens=4)
    # n tau_SLM + upload + the pass: 4 tokens -> one tau_LLM, 3 -> one, 5 -> two
    assert [modelled_seconds(record=r, clock=clock) for r in records] == pytest.approx(
        [0.06 + 0.05 + 0.1, 0.04 + 0.05 + 0.1, 0.08 + 0.05 + 0.2])
    measured = ModelledClock(tau_slm=0.02, tau_llm=0.1, llm_scale=0.5)  # tau_LLM / the measured one-token pass
    assert modelled_seconds(record=records[0], clock=measured) == pytest.approx(0.06 + 0.05 + 0.3 * 0.5)
    s = summarize_blocks(results=[_result(records)], clock=clock)
    assert s["num_tokens"] == 8 and s["uploads_per_token"] == pytest.approx(3 / 8)
    assert s["bits_per_token"] == pytest.approx(300 / 8) and s["exact"] == 1.0
    assert (s["acceptance_pos_1"], s["acceptance_pos_2"], s["acceptance_pos_4"]) == (pytest.approx(2 / 3),
                                                                                     pytest.approx(2 / 3), 0.0)
    assert s["throughput_modelled"] == pytest.approx(8 / (0.21 + 0.19 + 0.33))
    assert s["throughput_wall"] == pytest.approx(8 / 3.0)


@pytest.mark.parametrize("overrides", [
    ("block.payload=full", "block.stop=confidence"),
    ("block.payload=ids", "block.stop=fixed", "block.fixed_drafts=4"),
    ("decode.sampling=coupled", "block.payload=ids", "block.stop=fixed", "block.fixed_drafts=4"),
])
def test_every_judged_draft_is_drawn_from_the_slm_on_the_decoded_prefix(tiny_pair, overrides):
    """Speculative sampling is exact whatever the drafter conditions on, so the exactness tests cannot see a drafter
    out of step with the response (a cache not rolled back, a recovered or bonus token not caught up): it would only
    accept less. Each draft the verifier judged (the kept ones and the first rejected one) must carry the SLM's and
    the LLM's probabilities of it on the response prefix before it, from one cache-free forward over the response."""
    judged = 0
    for seed in range(4):
        _, (tokens, records, _, _) = _decode(tiny_pair, *overrides, tokens=24, seed=seed)
        x = response_logits(model=tiny_pair.slm, prompt_ids=PROMPT, response=tokens).softmax(-1)  # [m, V]
        y = response_logits(model=tiny_pair.llm, prompt_ids=PROMPT, response=tokens).softmax(-1)  # [m, V]
        for r in records:  # row j of x, y scores response token j (0-based)
            for k, draft in enumerate(r.drafts[:r.num_accepted + 1]):
                j = r.position - 1 + k
                assert r.x_d[k] == pytest.approx(float(x[j, draft]), abs=1e-5), (seed, r.round, k)
                assert r.y_d[k] == pytest.approx(float(y[j, draft]), abs=1e-5), (seed, r.round, k)
                judged += 1
    assert judged >= 24  # enough drafts, rejected ones included, to have looked
