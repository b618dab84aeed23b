"""Forward passes shared through the prefix cache change nothing but the time spent: same tokens, same records, the
computing run's clocks replayed; across processes through files; bounded in memory; batched passes never shared.

On the tiny pair in bfloat16, where a pass computed differently (other chunks, a batch) would round differently.
"""

from __future__ import annotations

import pytest
import torch

from uhlm_ray.config import EvaluateConfig, ModelConfig
from uhlm_ray.decode import decode_prompt, make_policy
from uhlm_ray.models import load_pair
from uhlm_ray.models.prefix_cache import PrefixCache, model_fingerprint
from uhlm_ray.models.session import CausalSession, forward_sessions
from uhlm_ray.records import record_outcome

PROMPTS = [[2, 3, 4, 5, 6], [7, 8, 9]]
RUNS = [("slm", None), ("hlm", None), ("u_hlm", 0.2), ("u_hlm", 0.4), ("u_hlm", 0.6), ("rand_hlm", None),
        ("llm", None)]


@pytest.fixture(scope="module")
def bf16_pair(tiny_pair_dirs):
    slm, llm = tiny_pair_dirs
    return load_pair(ModelConfig(pair="custom", slm=slm, llm=llm, dtype="bfloat16"))


def _run(pair, *, method: str, u_th: float | None, prompt_index: int, prefixes: PrefixCache | None):
    cfg = EvaluateConfig()
    cfg.decode.max_new_tokens = 16
    cfg.policy.u_th = u_th if u_th is not None else 0.3
    policy = make_policy(method=method, cfg=cfg, send_prob=0.4 if method == "rand_hlm" else None)
    return decode_prompt(pair=pair, prompt_ids=PROMPTS[prompt_index], prompt_index=prompt_index, method=method,
                         cfg=cfg, policy=policy, prefixes=prefixes)


def test_shared_passes_give_the_same_tokens_and_records(bf16_pair):
    prefixes = PrefixCache()
    for method, u_th in RUNS:
        for index in range(len(PROMPTS)):
            alone = _run(bf16_pair, method=method, u_th=u_th, prompt_index=index, prefixes=None)
            shared = _run(bf16_pair, method=method, u_th=u_th, prompt_index=index, prefixes=prefixes)
            assert shared[0] == alone[0], (method, u_th, index)
            assert record_outcome(shared[1]) == record_outcome(alone[1])
    # drafts repeat across methods and thresholds until the first resample: most SLM passes were shared
    assert prefixes.hits > 0.3 * (prefixes.hits + prefixes.misses)


def test_a_replayed_run_reports_the_computing_runs_clocks(bf16_pair):
    prefixes = PrefixCache()
    first = _run(bf16_pair, method="u_hlm", u_th=0.4, prompt_index=0, prefixes=prefixes)
    misses = prefixes.misses
    again = _run(bf16_pair, method="u_hlm", u_th=0.4, prompt_index=0, prefixes=prefixes)
    assert prefixes.misses == misses  # every pass, SLM and LLM, came from the cache
    assert again[3] == first[3]  # prefill seconds
    for a, b in zip(first[1], again[1], strict=True):
        assert (b.tau_slm_s, b.tau_llm_s) == (a.tau_slm_s, a.tau_llm_s)
        assert b.wall_s >= b.tau_slm_s + b.tau_llm_s  # the round's wall includes the replayed passes


def test_entries_in_a_folder_serve_another_process(bf16_pair, tmp_path):
    writer = PrefixCache(directory=tmp_path)
    computed = _run(bf16_pair, method="u_hlm", u_th=0.4, prompt_index=1, prefixes=writer)
    assert any(tmp_path.glob("*.safetensors")) and not any(tmp_path.glob("*.tmp"))
    reader = PrefixCache(directory=tmp_path)  # another process: nothing in memory, the same folder
    replayed = _run(bf16_pair, method="u_hlm", u_th=0.4, prompt_index=1, prefixes=reader)
    assert reader.misses == 0 and reader.hits > 0
    assert replayed[0] == computed[0] and record_outcome(replayed[1]) == record_outcome(computed[1])


def test_two_models_from_one_folder_do_not_share_entries(bf16_pair, tiny_pair_dirs):
    slm, llm = tiny_pair_dirs
    changed = load_pair(ModelConfig(pair="custom", slm=slm, llm=llm, dtype="bfloat16"))
    with torch.no_grad():  # the same folder, then edited in memory (a fine-tuning step, a perturbed head)
        changed.llm.model.get_output_embeddings().weight.mul_(-1.0)
    prefixes = PrefixCache()
    original = _run(bf16_pair, method="llm", u_th=None, prompt_index=0, prefixes=prefixes)
    misses = prefixes.misses
    edited = _run(changed, method="llm", u_th=None, prompt_index=0, prefixes=prefixes)
    assert prefixes.misses > misses  # the edited model computed its own passes
    assert edited[0] == _run(changed, method="llm", u_th=None, prompt_index=0, prefixes=None)[0]
    assert edited[0] != original[0]


def test_memory_is_bounded_and_batches_are_not_shared(bf16_pair):
    tiny = PrefixCache(max_memory_mb=0.05)
    _run(bf16_pair, method="hlm", u_th=None, prompt_index=0, prefixes=tiny)
    assert 0 < tiny._bytes <= tiny.max_bytes
    prefixes = PrefixCache()
    a = CausalSession(model=bf16_pair.slm, prompt_ids=PROMPTS[0], prefixes=prefixes)
    b = CausalSession(model=bf16_pair.slm, prompt_ids=PROMPTS[1], prefixes=prefixes)
    stored = len(prefixes._memory)
    a.append(3), b.append(4)
    forward_sessions([a, b])
    assert len(prefixes._memory) == stored and a._chunk is None
    a.append(5)
    a.next_logits()  # alone again, but its cache came from a batch: still not shared
    assert len(prefixes._memory) == stored
    alone = CausalSession(model=bf16_pair.slm, prompt_ids=PROMPTS[0], prefixes=None)
    alone.append(3), alone.append(5)
    assert torch.allclose(alone.next_logits(), a.next_logits(), atol=0.1)  # same text, bf16 batch rounding aside


def test_bad_memory_bound_names_the_field():
    from uhlm_ray.validation import ConfigError

    with pytest.raises(ConfigError, match="runtime.prefix_cache_mb"):
        PrefixCache(max_memory_mb=-1)


def test_a_fingerprint_follows_in_place_edits(tiny_pair_dirs):
    """The weight sample is kept per model between sessions, and taken again once a tensor changed in place."""
    slm, llm = tiny_pair_dirs
    model = load_pair(ModelConfig(pair="custom", slm=slm, llm=llm, dtype="bfloat16")).llm.model
    before = model_fingerprint(model=model, source="x", device="cpu")
    assert model_fingerprint(model=model, source="x", device="cpu") == before
    head = model.get_output_embeddings().weight
    last = head.view(-1)[-1].item()
    with torch.no_grad():
        head.view(-1)[-1] = last + 1.0  # the last value of one tensor: inside the sample
    edited = model_fingerprint(model=model, source="x", device="cpu")
    assert edited != before
    with torch.no_grad():
        head.view(-1)[-1] = last  # the same values again, after another in-place write
    assert model_fingerprint(model=model, source="x", device="cpu") == before
