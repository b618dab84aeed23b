"""Model loading, the vocabulary check and the KV-cache step API on a tiny random-weight pair (mechanics)."""

import numpy as np
import pytest
import torch

from uhlm_ray.config import ModelConfig
from uhlm_ray.models import CausalSession, full_recompute_logits, load_pair
from uhlm_ray.models.prefix_cache import PrefixCache
from uhlm_ray.models.tiny import WORDS, save_tiny_model
from uhlm_ray.validation import ConfigError


def test_catch_up_equals_full_recompute(tiny_pair):
    """Skipped tokens caught up in one forward give the same y as recomputing the whole sequence."""
    prompt = [2, 3, 4, 5]
    session = CausalSession(model=tiny_pair.llm, prompt_ids=prompt)
    appended = [6, 7, 8, 9, 10]
    session.append(appended[0])
    session.next_logits()  # a one-token step
    for token in appended[1:]:  # then four skipped rounds ...
        session.append(token)
    before = session.processed
    caught_up = session.next_logits()  # ... caught up in one pass
    assert session.processed - before == 4
    reference = full_recompute_logits(model=tiny_pair.llm, token_ids=prompt + appended)
    torch.testing.assert_close(caught_up, reference, atol=1e-4, rtol=1e-4)


def test_step_by_step_equals_full_recompute(tiny_pair):
    prompt = [2, 3]
    session = CausalSession(model=tiny_pair.slm, prompt_ids=prompt)
    seq = list(prompt)
    for token in [4, 5, 6]:
        session.append(token)
        seq.append(token)
        torch.testing.assert_close(session.next_logits(), full_recompute_logits(model=tiny_pair.slm, token_ids=seq),
                                   atol=1e-4, rtol=1e-4)


def test_shared_prefill_gives_the_same_logits(tiny_pair):
    store = PrefixCache()
    first = CausalSession(model=tiny_pair.llm, prompt_ids=[2, 3, 4], prefixes=store)
    second = CausalSession(model=tiny_pair.llm, prompt_ids=[2, 3, 4], prefixes=store)
    assert second.prefill_s == first.prefill_s  # the measured cost of the one real prefill
    for session in (first, second):
        session.append(7)
    torch.testing.assert_close(first.next_logits(), second.next_logits())
    # the copies do not share cache state
    first.append(8)
    first.next_logits()
    assert second.processed == 4 and first.processed == 5


def test_pair_reports_vocab_and_eos(tiny_pair):
    assert tiny_pair.vocab_size == len(WORDS) + 2
    assert 1 in tiny_pair.eos_token_ids


def test_mismatched_vocabulary_size_is_refused(tmp_path, tiny_pair_dirs):
    other = save_tiny_model(tmp_path / "other", words=WORDS + ["extra"], layers=1, hidden=32, seed=3)
    with pytest.raises(ConfigError, match="vocabulary size differs"):
        load_pair(ModelConfig(pair="custom", slm=tiny_pair_dirs[0], llm=str(other), dtype="float32"))


def test_mismatched_token_map_names_the_first_differing_token(tmp_path, tiny_pair_dirs):
    swapped = list(WORDS)
    swapped[2], swapped[3] = swapped[3], swapped[2]  # "cat" and "dog" trade ids
    other = save_tiny_model(tmp_path / "swapped", words=swapped, layers=1, hidden=32, seed=3)
    with pytest.raises(ConfigError, match="token 'cat' has id 4 in the SLM but 5 in the LLM"):
        load_pair(ModelConfig(pair="custom", slm=tiny_pair_dirs[0], llm=str(other), dtype="float32"))


def test_unknown_sources_are_clear_errors(tiny_pair_dirs):
    with pytest.raises(ConfigError, match="no such GGUF file"):
        load_pair(ModelConfig(pair="custom", slm="/nonexistent/model.gguf", llm=tiny_pair_dirs[1]))
    with pytest.raises(ConfigError, match="model.pair='nope' is not one of"):
        load_pair(ModelConfig(pair="nope"))
    with pytest.raises(ConfigError, match="needs both model.slm and model.llm"):
        load_pair(ModelConfig(pair="custom", slm=tiny_pair_dirs[0]))


def test_batched_forward_equals_each_session_alone(tiny_pair):
    """Sessions of different lengths, with different catch-ups, padded into one pass: same logits, same caches."""
    from uhlm_ray.models.session import forward_sessions

    prompts = [[2, 3], [4, 5, 6, 7, 8], [9]]
    appended = [[10, 11, 12], [13], [14, 15]]  # catch-ups of 3, 1 and 2 tokens
    batched = [CausalSession(model=tiny_pair.llm, prompt_ids=p) for p in prompts]
    for session, tokens in zip(batched, appended, strict=True):
        for token in tokens:
            session.append(token)
    forward_sessions(batched, score=True)
    assert {s.timing.batch_size for s in batched} == {3}
    for session, prompt, tokens in zip(batched, prompts, appended, strict=True):
        seq = prompt + tokens
        torch.testing.assert_close(session.next_logits(), full_recompute_logits(model=tiny_pair.llm, token_ids=seq),
                                   atol=1e-4, rtol=1e-4)
        # scoring: y of each caught-up token given its prefix
        for offset, token in enumerate(tokens):
            prefix = seq[: len(prompt) + offset]
            y = torch.softmax(full_recompute_logits(model=tiny_pair.llm, token_ids=prefix), -1)
            assert session.pending_probs[offset] == pytest.approx(float(y[token]), abs=1e-5)
    # the unpadded caches stay right for the next, again batched, step
    for session in batched:
        session.append(3)
    forward_sessions(batched)
    for session, prompt, tokens in zip(batched, prompts, appended, strict=True):
        torch.testing.assert_close(session.next_logits(),
                                   full_recompute_logits(model=tiny_pair.llm, token_ids=prompt + tokens + [3]),
                                   atol=1e-4, rtol=1e-4)


def _partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        yield [[first], *part]
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1:]]


def test_pass_groups_is_the_cheapest_split():
    """Against every partition of the sessions (not only contiguous runs of the sorted lengths)."""
    from uhlm_ray.models.session import pass_groups

    def cost(groups, lengths, overhead):
        return sum(overhead + len(g) * max(lengths[i] for i in g) for g in groups)

    rng = np.random.default_rng(3)
    for _ in range(40):
        lengths = rng.integers(1, 9, size=int(rng.integers(1, 7))).tolist()
        overhead = int(rng.integers(0, 20))
        groups = pass_groups(lengths, overhead_rows=overhead)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        best = min(cost(p, lengths, overhead) for p in _partitions(list(range(len(lengths)))))
        assert cost(groups, lengths, overhead) == best
    assert pass_groups([1] * 7 + [6], overhead_rows=12) == [list(range(7)), [7]]  # 19 + 18 rows, not 12 + 48
    assert pass_groups([1] * 7 + [6], overhead_rows=4096) == [list(range(8))]  # a GPU: one pass


def test_a_long_catch_up_gets_its_own_pass_with_the_same_results(tiny_pair):
    from uhlm_ray.models.session import forward_sessions

    prompts = [[2, 3], [4, 5, 6], [7], [8, 9]]
    appended = [[10], [11], [12], [2 + i % 10 for i in range(38)]]  # one device skipped 38 rounds
    sessions = [CausalSession(model=tiny_pair.llm, prompt_ids=p) for p in prompts]
    for session, tokens in zip(sessions, appended, strict=True):
        for token in tokens:
            session.append(token)
    forward_sessions(sessions)
    assert [s.timing.batch_size for s in sessions] == [3, 3, 3, 1]
    for session, prompt, tokens in zip(sessions, prompts, appended, strict=True):
        torch.testing.assert_close(session.next_logits(),
                                   full_recompute_logits(model=tiny_pair.llm, token_ids=prompt + tokens),
                                   atol=1e-4, rtol=1e-4)


def test_hub_ids_pin_a_commit_and_the_paper_pair_is_pinned(tmp_path):
    import re

    from uhlm_ray.models.loading import hub_reference
    from uhlm_ray.models.presets import PAIRS

    assert hub_reference("org/name@0123abc") == ("org/name", "0123abc")
    assert hub_reference("org/name") == ("org/name", None)
    folder = tmp_path / "weights@v2"  # a local folder whose name has an @ is a folder, not a pinned id
    folder.mkdir()
    assert hub_reference(str(folder)) == (str(folder), None)
    for source in PAIRS["paper"]:
        name, revision = hub_reference(source)
        assert re.fullmatch(r"[0-9a-f]{40}", revision or ""), f"{name} is not pinned to a commit"
