"""The SLM's output head over a sub-vocabulary (model.slm_head_vocab, uhlm_ray.models.trimmed_head) on the tiny
random-weight pair: the same logits on the kept ids, none elsewhere, and exact methods still emit the LLM's law.

The tiny vocabulary has 18 ids (<unk>, <eos> and 16 words); the head keeps the first KEEP, so the LLM puts about
half its mass on tokens the SLM can no longer draft, and every one of them must come from a verdict (a recovered
token). Chi-square goodness of fit of the first three tokens over SEEDS keyed decodes, at ALPHA per test, as in
tests/test_block_exact.py; the trimmed SLM alone is the power check.
"""

from __future__ import annotations

import pytest
import torch

from tests.test_block_exact import ALPHA, LENGTH, PAYLOADS, PROMPT, SEEDS, block_samples, chi_square_p, llm_joint_law
from uhlm_ray.base_station.verifier import Verifier
from uhlm_ray.config import ModelConfig, load_config
from uhlm_ray.decode import DeviceJob, decode_lockstep, make_policy
from uhlm_ray.models import load_pair
from uhlm_ray.models.prefix_cache import model_fingerprint
from uhlm_ray.models.trimmed_head import TrimmedHead, kept_ids, swapped_head, trimmed_head_of
from uhlm_ray.sampling.rng import SessionKey
from uhlm_ray.validation import ConfigError

KEEP = 9  # ids 0..8: <unk>, <eos> and 7 of the 16 words


@pytest.fixture(scope="module")
def trimmed_pair(tiny_pair_dirs):
    slm, llm = tiny_pair_dirs
    return load_pair(ModelConfig(pair="custom", slm=slm, llm=llm, dtype="float32", slm_head_vocab=KEEP))


@pytest.fixture(scope="module")
def law(trimmed_pair):
    return llm_joint_law(trimmed_pair.llm.model, PROMPT, trimmed_pair.vocab_size)


def test_kept_ids_are_the_first_ones_and_the_special_tokens(tiny_pair):
    ids = kept_ids(tokenizer=tiny_pair.slm.tokenizer, vocab_size=tiny_pair.vocab_size, keep=1).tolist()
    assert ids == [0, 1]  # <unk> (id 0) and <eos>, special, though only one id is asked for
    assert kept_ids(tokenizer=tiny_pair.slm.tokenizer, vocab_size=18, keep=KEEP).tolist() == list(range(KEEP))


def test_the_trimmed_head_gives_the_whole_heads_logits_on_kept_ids_and_none_elsewhere(tiny_pair):
    hidden = torch.randn(3, 5, tiny_pair.slm.model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    whole = tiny_pair.slm.model.get_output_embeddings()(hidden)  # [3, 5, V]
    head = trimmed_head_of(tiny_pair.slm, keep=KEEP)
    trimmed = head(hidden)  # [3, 5, V]
    assert trimmed.shape == whole.shape
    assert torch.equal(trimmed[..., :KEEP], whole[..., :KEEP])
    assert torch.isneginf(trimmed[..., KEEP:]).all()
    assert torch.softmax(trimmed, dim=-1)[..., KEEP:].sum() == 0.0


def test_the_trimmed_head_gives_a_row_the_same_bits_alone_or_batched(tiny_pair):
    """The tiny pair is float32 through oneDNN, so batch-invariant: the kept rows must stay so after the trim."""
    assert tiny_pair.slm.batch_invariant
    head = trimmed_head_of(tiny_pair.slm, keep=KEEP)
    hidden = torch.randn(4, tiny_pair.slm.model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        batched = head(hidden)  # [4, V]
        alone = torch.stack([head(hidden[i:i + 1])[0] for i in range(4)])  # [4, V]
    assert torch.equal(batched, alone)


def test_swapping_the_head_in_and_out_leaves_the_model_as_it_was(tiny_pair):
    own = tiny_pair.slm.model.get_output_embeddings()
    before = model_fingerprint(model=tiny_pair.slm.model, source="s", device="cpu")
    head = trimmed_head_of(tiny_pair.slm, keep=KEEP)
    with swapped_head(tiny_pair.slm, head=head):
        assert isinstance(tiny_pair.slm.model.get_output_embeddings(), TrimmedHead)
        # a prefix cache must not hand the trimmed model the whole head's logits, nor one trim another's
        during = model_fingerprint(model=tiny_pair.slm.model, source="s", device="cpu")
    with swapped_head(tiny_pair.slm, head=trimmed_head_of(tiny_pair.slm, keep=KEEP + 2)):
        other = model_fingerprint(model=tiny_pair.slm.model, source="s", device="cpu")
    assert tiny_pair.slm.model.get_output_embeddings() is own
    assert len({before, during, other}) == 3
    assert model_fingerprint(model=tiny_pair.slm.model, source="s", device="cpu") == before


CASES = {**{payload: PAYLOADS[payload] for payload in ("full", "truncated_top_k", "ids")},
         "coupled_ids": ["decode.sampling=coupled", "block.payload=ids"]}


@pytest.mark.parametrize("payload", list(CASES))
def test_blocks_drafted_from_a_trimmed_slm_are_distributed_as_the_llm(trimmed_pair, law, payload):
    samples, outcomes = block_samples(trimmed_pair, [*CASES[payload], "block.stop=fixed", "block.fixed_drafts=3",
                                                     "block.max_drafts=3"], blocks=False)
    drafts = [d for o in outcomes for r in o.records for d in r.drafts]
    assert max(drafts) < KEEP  # nothing outside the kept ids is ever drafted ...
    dropped = sum(t >= KEEP for s in samples for t in s) / (len(samples) * LENGTH)
    assert dropped > 0.2  # ... yet the LLM's tokens outside them are emitted, by the verdicts
    p = chi_square_p(samples, law)
    print(f"{payload}: p = {p:.4f}, {dropped:.1%} of the tokens outside the kept ids")
    assert p > ALPHA


def test_the_trimmed_slm_alone_is_told_from_the_llm(trimmed_pair, law):
    """Power check: decoded alone, the trimmed SLM emits kept ids only, and the test rejects its law."""
    cfg = load_config(overrides=["model.pair=custom", f"decode.max_new_tokens={LENGTH}", "channel.fading=none"])
    jobs = [DeviceJob(session_id=f"s{seed}", key=SessionKey(seed=seed, device=0, prompt=0), prompt_ids=PROMPT,
                      method="slm", policy=make_policy(method="slm", cfg=cfg), mean_snr=1.0) for seed in range(SEEDS)]
    verifier = Verifier(model=trimmed_pair.llm, max_sessions=SEEDS)
    outcomes = decode_lockstep(slm=trimmed_pair.slm, verifier=verifier, jobs=jobs, cfg=cfg, eos_token_ids=frozenset())
    samples = [tuple(o.tokens) for o in outcomes]
    assert max(t for s in samples for t in s) < KEEP
    assert chi_square_p(samples, law) < ALPHA


def test_a_head_vocabulary_outside_the_vocabulary_is_refused(tiny_pair_dirs):
    slm, llm = tiny_pair_dirs
    with pytest.raises(ConfigError, match=r"model\.slm_head_vocab=19 is outside 1\.\.18"):
        load_pair(ModelConfig(pair="custom", slm=slm, llm=llm, dtype="float32", slm_head_vocab=19))
    with pytest.raises(ConfigError, match=r"model\.slm_head_vocab"):
        load_config(overrides=["model.slm_head_vocab=0"])


@pytest.mark.parametrize("method", ["hlm", "block_hlm"])
def test_a_trimmed_slm_uploads_one_probability_per_kept_id(trimmed_pair, tiny_pair, method):
    """A dense upload carries the SLM's support: KEEP probabilities, not |V| (the verifier puts 0 on the rest)."""
    assert trimmed_pair.slm.draft_support == KEEP and tiny_pair.slm.draft_support == tiny_pair.vocab_size == 18
    cfg = load_config(overrides=["model.pair=custom", "decode.max_new_tokens=6", "channel.fading=none",
                                 "block.payload=full", "block.stop=fixed", "block.fixed_drafts=2",
                                 "payload.sync_token_ids=false"])
    id_bits = 5  # ceil(log2 18): indices still name ids of the whole vocabulary
    for pair, dense in ((trimmed_pair, KEEP), (tiny_pair, 18)):
        job = DeviceJob(session_id=method, key=SessionKey(seed=0, device=0, prompt=0), prompt_ids=PROMPT,
                        method=method, policy=None if method == "block_hlm" else make_policy(method=method, cfg=cfg),
                        mean_snr=1.0)
        outcome, = decode_lockstep(slm=pair.slm, verifier=Verifier(model=pair.llm, max_sessions=1), jobs=[job],
                                   cfg=cfg, eos_token_ids=frozenset())
        sent = [r for r in outcome.records if r.sent]
        assert sent
        for r in sent:
            drafts = len(r.drafts) if method == "block_hlm" else 1
            assert r.kept_tokens == dense * drafts
            assert r.payload_bits == drafts * (dense * 32 + id_bits)
