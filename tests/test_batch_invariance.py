"""Batch-invariant passes (uhlm_ray/models/batch_invariance.py): in float32 on the CPU a sequence's logits are the same
bits alone and in a padded lockstep batch, so a trial decodes the tokens and records of batch-1 decoding at any
batch size (the float64 twin of the lockstep test is tests/test_batched_decode.py)."""

from __future__ import annotations

import pytest
import torch

from uhlm_ray.config import ModelConfig, load_config
from uhlm_ray.experiments.datasets import Example
from uhlm_ray.experiments.evaluate import run_method
from uhlm_ray.models.batch_invariance import batch_invariant_of, resolve_batch_invariant, single_stream
from uhlm_ray.models.loading import resolve_dtype
from uhlm_ray.models.session import CausalSession, forward_sessions
from uhlm_ray.records import drawn_outcome
from uhlm_ray.validation import ConfigError

EXAMPLES = [Example(id=f"e{i}", prompt=p, reference="ref") for i, p in enumerate(
    ["the cat", "a dog runs", "one two three", "sun and moon", "red", "the river runs far"])]


def _solo_and_batched(model, *, prompts: list[list[int]], news: list[list[int]]):
    """Each prompt's logits after its new tokens: from its own passes, and from one padded pass for all."""
    solo = []
    for prompt, new in zip(prompts, news, strict=True):
        session = CausalSession(model=model, prompt_ids=prompt)
        session.next_logits()
        for token in new:
            session.append(token)
        solo.append(session.next_logits().clone())
    sessions = [CausalSession(model=model, prompt_ids=p) for p in prompts]
    for session, new in zip(sessions, news, strict=True):
        session.next_logits()
        for token in new:
            session.append(token)
    forward_sessions(sessions)  # one pass, left-padded: prompts of 4-12 tokens, 1-3 new tokens each
    return solo, [s.next_logits() for s in sessions]


def _prompts(vocab: int):
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, min(vocab, 5000), (n,), generator=g).tolist() for n in (5, 9, 4, 12)]
    news = [torch.randint(3, min(vocab, 5000), (n,), generator=g).tolist() for n in (1, 3, 1, 2)]
    return prompts, news


@pytest.fixture(scope="module")
def real_pair_float32(request):
    """The embedded pair in float32: the session's pair where auto chose float32, else a float32 load of its own
    (auto is bf16 on a CPU with bf16 units, and batch invariance is a float32 property)."""
    if resolve_dtype("auto", device="cpu") == torch.float32:
        return request.getfixturevalue("real_pair")
    from uhlm_ray.models import load_pair

    return load_pair(ModelConfig(dtype="float32"))


@pytest.mark.parametrize("which", ["tiny", "real"])
def test_a_padded_batch_gives_each_sequence_its_solo_bits(which, request):
    pair = request.getfixturevalue("tiny_pair" if which == "tiny" else "real_pair_float32")
    for model in (pair.slm, pair.llm):
        assert model.batch_invariant and batch_invariant_of(model.model)  # float32 through oneDNN, auto
        prompts, news = _prompts(model.vocab_size)
        solo, batched = _solo_and_batched(model, prompts=prompts, news=news)
        for one, many in zip(solo, batched, strict=True):
            assert torch.equal(one, many), float((one - many).abs().max())


@pytest.mark.parametrize("method", ["llm", "slm", "hlm", "rand_hlm", "u_hlm", "cu_hlm", "block_hlm"])
def test_float32_lockstep_decodes_the_bits_of_batch_one(tiny_pair, method):
    """Tokens and every record field (x_d, y_d, u, beta, bits, ...) equal, not merely close, in float32."""

    def cfg(batch: int):
        return load_config(overrides=["decode.max_new_tokens=12", "policy.send_prob=0.5", "block.max_drafts=3",
                                      "decode.evaluation_methods=[u_hlm,rand_hlm,cu_hlm,block_hlm]",
                                      f"runtime.batch_size={batch}"])

    solo = run_method(pair=tiny_pair, examples=EXAMPLES, method=method, cfg=cfg(1), encoder=None, store=None)
    batched = run_method(pair=tiny_pair, examples=EXAMPLES, method=method, cfg=cfg(4), encoder=None, store=None)
    assert [r.batch_size for r in batched] == [4] * 6  # 4 at a time: prompts 4 and 5 take finished prompts' places
    assert sum(len(r.tokens) for r in solo) > 6 * 3
    assert drawn_outcome(batched) == drawn_outcome(solo)


def test_single_stream_turns_it_off_and_back(tiny_pair):
    model = tiny_pair.slm.model
    with single_stream(model):
        assert not batch_invariant_of(model)
        assert model.config._attn_implementation == "sdpa"  # what the model had before
        assert not any(getattr(m, "pad_single_row", False) for m in model.modules())
    assert batch_invariant_of(model)
    assert any(getattr(m, "pad_single_row", False) for m in model.modules())


def test_it_is_refused_where_it_cannot_hold():
    with pytest.raises(ConfigError, match="model.batch_invariant=true"):
        load_config(overrides=["model.batch_invariant=true", "model.device=cuda"])
    with pytest.raises(ConfigError, match="model.batch_invariant=true"):
        load_config(overrides=["model.batch_invariant=true", "model.linear_backend=torch"])
    with pytest.raises(ConfigError, match="linear_backend='torch'"):
        resolve_batch_invariant(True, dtype=torch.float32, device="cpu", linear_backend="torch")
    assert resolve_batch_invariant(None, dtype=torch.bfloat16, device="cpu", linear_backend="torch") is False
    assert resolve_batch_invariant(False, dtype=torch.float32, device="cpu", linear_backend="onednn") is False
    assert ModelConfig().batch_invariant is None  # auto by default


def test_a_rejected_rows_residual_has_its_bits_whatever_else_was_rejected():
    """Eq. 2's normaliser is a sum over |V| = 151,936: torch splits one row's sum across threads but gives each of
    several rows one thread, so summed together rows get other bits (found on the embedded pair: two Alpaca prompts'
    recovered tokens moved to the neighbouring id between batch 1 and 16). Each row must be its own."""
    from uhlm_ray.sampling.verify import residual_distribution

    g = torch.Generator().manual_seed(0)
    x = torch.softmax(torch.randn(8, 151_936, generator=g) * 3, dim=-1)
    y = torch.softmax(torch.randn(8, 151_936, generator=g) * 3, dim=-1)
    together = residual_distribution(x=x, y=y)  # [8, V]
    for i in range(8):
        assert torch.equal(residual_distribution(x=x[i:i + 1], y=y[i:i + 1])[0], together[i])
