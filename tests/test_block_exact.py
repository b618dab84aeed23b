"""Exactness of the block method on the tiny random-weight pair (float32): the joint law of the first three response
tokens equals the LLM's own P(t1) P(t2 | t1) P(t3 | t1, t2), computed with plain cache-free forwards.

Every payload is tried (full x, truncated top-k and top-p x~, ids only, ids with greedy drafts), each with blocks of
three drafts, so tokens 2 and 3 are verified inside a block, after a rollback, or come as bonus tokens. Chi-square
goodness of fit over SEEDS independent decodes (the seed keys every draw), cells with an expected count below 5
pooled, significance ALPHA per test. Blocks of three are capped at the three tested tokens, so bonus tokens and the
round after a fully kept block are tested apart, with blocks of one and two from a drafter close to the LLM. Three
negative controls must be rejected: drafting from x~ but uploading x, resampling a rejected ids draft from y with
the draft left in, and a bonus drawn from y_n instead of y_{n+1}.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

import uhlm_ray.base_station.verifier as verifier_module
import uhlm_ray.decode as decode_module
from uhlm_ray.base_station.verifier import Verifier
from uhlm_ray.config import ModelConfig, load_config
from uhlm_ray.decode import DeviceJob, decode_lockstep, make_policy
from uhlm_ray.device.block_decoder import BlockDecoder
from uhlm_ray.models import load_pair
from uhlm_ray.models.prefix_cache import PrefixCache
from uhlm_ray.models.tiny import WORDS, save_tiny_model
from uhlm_ray.sampling.block_verify import verify_block
from uhlm_ray.sampling.rng import SessionKey
from uhlm_ray.sampling.verify import sample_inverse_cdf

ALPHA = 1e-3
SEEDS = 4000
PROMPT = [2, 3, 4, 5, 6]
LENGTH = 3


@torch.inference_mode()
def llm_joint_law(model, prompt: list[int], vocab: int) -> np.ndarray:
    """P(t1, t2, t3) [V, V, V] from plain forwards over every prefix (no KV cache, no batching tricks)."""
    def next_probs(prefixes: list[list[int]]) -> torch.Tensor:
        ids = torch.tensor(prefixes)  # [P, len] equal lengths, no padding
        return torch.softmax(model(input_ids=ids, use_cache=False).logits[:, -1].double(), dim=-1)  # [P, V]

    p1 = next_probs([prompt])[0]  # [V]
    p2 = next_probs([prompt + [a] for a in range(vocab)])  # [V, V]
    pairs = itertools.product(range(vocab), repeat=2)
    p3 = next_probs([prompt + [a, b] for a, b in pairs]).reshape(vocab, vocab, vocab)
    return (p1[:, None, None] * p2[:, :, None] * p3).numpy()


def chi_square_p(samples: list[tuple[int, ...]], law: np.ndarray) -> float:
    """Goodness of fit of the sampled triples to `law`, cells with expected count < 5 pooled into one."""
    counts = np.zeros(law.size)
    for triple in samples:
        counts[np.ravel_multi_index(triple, law.shape)] += 1
    expected = law.ravel() / law.sum() * len(samples)
    big = expected >= 5
    observed = np.append(counts[big], counts[~big].sum())
    wanted = np.append(expected[big], expected[~big].sum())
    assert observed.sum() == len(samples)
    return float(stats.chisquare(observed, wanted).pvalue)


def block_samples(pair, overrides: list[str], *, blocks: bool = True):
    """SEEDS decodes of the first LENGTH tokens with the block method, batched in lockstep (one job per seed): the
    tokens, and with `blocks=False` (overrides choose the blocks) the outcomes too."""
    fixed = ["block.stop=fixed", "block.fixed_drafts=3", "block.max_drafts=3"] if blocks else []
    # a block leaves the budget's last token to its verdict: one token more lets the first block hold three drafts
    budget = LENGTH + 1 if blocks else LENGTH
    cfg = load_config(overrides=["model.pair=custom", f"decode.max_new_tokens={budget}", *fixed,
                                 "channel.fading=none", *overrides])
    jobs = [DeviceJob(session_id=f"s{seed}", key=SessionKey(seed=seed, device=0, prompt=0), prompt_ids=PROMPT,
                      method="block_hlm", policy=None, mean_snr=1.0) for seed in range(SEEDS)]
    prefixes = PrefixCache()  # the prompt's prefill is computed once
    verifier = Verifier(model=pair.llm, max_sessions=SEEDS, prefixes=prefixes)
    # no end-of-sequence stop: the law of three tokens, whatever they are
    outcomes = decode_lockstep(slm=pair.slm, verifier=verifier, jobs=jobs, cfg=cfg, eos_token_ids=frozenset(),
                               prefixes=prefixes)
    for outcome in outcomes:
        assert len(outcome.tokens) == budget
        assert not blocks or len(outcome.records[0].drafts) == 3  # the first round really drafts a block of three
    samples = [tuple(o.tokens[:LENGTH]) for o in outcomes]
    return samples if blocks else (samples, outcomes)


@pytest.fixture(scope="module")
def law(tiny_pair):
    return llm_joint_law(tiny_pair.llm.model, PROMPT, tiny_pair.vocab_size)


PAYLOADS = {
    "full": ["block.payload=full"],
    "truncated_top_k": ["block.payload=truncated", "block.truncation=top_k", "block.top_k=3"],
    "truncated_top_p": ["block.payload=truncated", "block.truncation=top_p", "block.top_p=0.6"],
    "ids": ["block.payload=ids"],
    "ids_greedy": ["block.payload=ids", "block.greedy=true"],
}


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_first_three_tokens_are_distributed_as_the_llm(tiny_pair, law, payload):
    samples = block_samples(tiny_pair, PAYLOADS[payload])
    assert chi_square_p(samples, law) > ALPHA


class _DraftsFromTruncatedUploadsFull(BlockDecoder):
    """The negative control: drafts come from the truncated x~, but the upload carries the untruncated x."""

    def request(self, *, session_id: str):
        request = super().request(session_id=session_id)
        request.draft_probs = torch.stack([torch.softmax(d.logits, dim=-1) for d in self.block])  # [n, V] x
        return request


def test_negative_control_uploading_x_for_drafts_from_x_tilde_is_detected(tiny_pair, law, monkeypatch):
    monkeypatch.setattr(decode_module, "BlockDecoder", _DraftsFromTruncatedUploadsFull)
    samples = block_samples(tiny_pair, PAYLOADS["truncated_top_k"])
    assert chi_square_p(samples, law) < ALPHA


@pytest.fixture(scope="module")
def close_pair(tiny_pair_dirs, tmp_path_factory):
    """A drafter close to the LLM: the tiny LLM (rebuilt from its seed in a folder of its own, so that no shared
    prefix pass keyed by the model's source mixes the two) with its output head perturbed by noise of half its
    spread. On the random tiny pair two drafts are both kept too rarely (< 1% of blocks) for a chi-square to see
    the bonus path."""
    _, llm = tiny_pair_dirs
    drafter = save_tiny_model(tmp_path_factory.mktemp("close") / "slm", words=WORDS, layers=3, hidden=48, seed=2)
    pair = load_pair(ModelConfig(pair="custom", slm=str(drafter), llm=llm, dtype="float32"))
    assert torch.equal(pair.slm.model.lm_head.weight, pair.llm.model.lm_head.weight), "not the LLM's twin"
    with torch.no_grad():
        head = pair.slm.model.lm_head.weight
        head.add_(torch.randn(head.shape, generator=torch.Generator().manual_seed(0)) * 0.5 * head.std())
    return pair


def path_counts(outcomes) -> dict[str, int]:
    """How often each way of reaching the tested tokens happened, from the first round's record."""
    paths = {"bonus as token 3": 0, "bonus, then a catch-up round": 0, "rollback": 0}
    for o in outcomes:
        first = o.records[0]
        paths["bonus as token 3"] += first.bonus and len(first.drafts) == 2
        paths["bonus, then a catch-up round"] += first.bonus and len(first.drafts) == 1 and len(o.records) > 1
        paths["rollback"] += first.recovered
    return paths


# n = 2: a block whose two drafts are both kept gives token 3 as its bonus; n = 1: a kept draft gives token 2 as its
# bonus, and the next round catches up on d_1 and that bonus before drafting token 3
SHORT_BLOCKS = {2: "bonus as token 3", 1: "bonus, then a catch-up round"}


def _short_blocks(n: int) -> list[str]:
    return ["block.stop=fixed", f"block.fixed_drafts={n}", f"block.max_drafts={n}"]


@pytest.mark.parametrize("payload", list(PAYLOADS))
@pytest.mark.parametrize("n", list(SHORT_BLOCKS))
def test_bonus_tokens_and_catch_up_after_a_bonus_are_distributed_as_the_llm(close_pair, law, payload, n):
    """Blocks of n = 1 or 2 from a close drafter, so that bonus tokens are among the tested tokens and the round
    after a fully kept block catches up on d_n and the bonus (that path in at least 1% of the seeds)."""
    samples, outcomes = block_samples(close_pair, [*_short_blocks(n), *PAYLOADS[payload]], blocks=False)
    paths = path_counts(outcomes)
    assert paths[SHORT_BLOCKS[n]] >= SEEDS // 100, paths
    assert chi_square_p(samples, law) > ALPHA


def _bonus_from_the_last_drafts_row(**kwargs):
    """The negative control of the bonus: drawn from y_n (the last draft's row) instead of y_{n+1}."""
    verdict = verify_block(**kwargs)
    rows = verdict.bonus.nonzero().squeeze(-1)  # [R]
    n = kwargs["num_drafts"][rows]  # [R]
    y = kwargs["target"].float()[rows, n - 1]  # [R, V]
    verdict.tokens[rows, n] = sample_inverse_cdf(probs=y, uniform=kwargs["u_final"][rows])
    return verdict


def test_negative_control_a_bonus_drawn_from_y_n_is_detected(close_pair, law, monkeypatch):
    monkeypatch.setattr(verifier_module, "verify_block", _bonus_from_the_last_drafts_row)
    samples, _ = block_samples(close_pair, [*_short_blocks(2), *PAYLOADS["full"]], blocks=False)
    assert chi_square_p(samples, law) < ALPHA


def _resampling_y_with_the_rejected_draft(**kwargs):
    """The negative control of the ids path: a rejected point-mass draft is resampled from y itself, not from y
    without the draft (norm(max(y - delta_d, 0)))."""
    verdict = verify_block(**kwargs)
    if kwargs["draft_probs"] is None:
        rows = verdict.recovered.nonzero().squeeze(-1)  # [R]
        a = verdict.num_accepted[rows]  # [R]
        y = kwargs["target"].float()[rows, a]  # [R, V] y at the rejection, the draft left in
        verdict.tokens[rows, a] = sample_inverse_cdf(probs=y, uniform=kwargs["u_final"][rows])
    return verdict


def test_negative_control_resampling_from_y_with_the_rejected_draft_is_detected(tiny_pair, law, monkeypatch):
    monkeypatch.setattr(verifier_module, "verify_block", _resampling_y_with_the_rejected_draft)
    samples = block_samples(tiny_pair, PAYLOADS["ids"])
    assert chi_square_p(samples, law) < ALPHA


def test_the_sampled_law_is_not_the_slms(tiny_pair, law):
    """Power check: the SLM alone, decoded by the same loop with the same seeds, has a law of three tokens that the
    test tells from the LLM's at this sample size."""
    cfg = load_config(overrides=["model.pair=custom", f"decode.max_new_tokens={LENGTH}", "channel.fading=none"])
    jobs = [DeviceJob(session_id=f"s{seed}", key=SessionKey(seed=seed, device=0, prompt=0), prompt_ids=PROMPT,
                      method="slm", policy=make_policy(method="slm", cfg=cfg), mean_snr=1.0) for seed in range(SEEDS)]
    verifier = Verifier(model=tiny_pair.llm, max_sessions=SEEDS)
    outcomes = decode_lockstep(slm=tiny_pair.slm, verifier=verifier, jobs=jobs, cfg=cfg, eos_token_ids=frozenset())
    assert all(len(o.tokens) == LENGTH for o in outcomes)
    assert chi_square_p([tuple(o.tokens) for o in outcomes], law) < ALPHA
