"""The LLM's prompt fused into its first verification pass (runtime.fuse_llm_prefill, as Hugging Face assisted
generation does) saves one LLM forward per prompt whose first round is a block, or skipped by U-HLM (a verified
first token reads the prefill's logits, so it had no pass to save) and changes nothing else: the same tokens and the
same records,
the scores of skipped tokens (evaluation mode) included; and a block never drafts a token the budget leaves no room
for. On the tiny pair in float64, where a pass over other chunks cannot round a sampled token differently.
"""

from __future__ import annotations

import dataclasses

import pytest

from uhlm_ray.base_station.verifier import Verifier
from uhlm_ray.config import EvaluateConfig, load_config
from uhlm_ray.decode import decode_prompt, make_policy
from uhlm_ray.models.forward_meter import ForwardMeter
from uhlm_ray.models.prefix_cache import PrefixCache
from uhlm_ray.models.session import CausalSession
from uhlm_ray.records import record_outcome
from uhlm_ray.sampling.rng import SessionKey
from uhlm_ray.validation import ConfigError

PROMPTS = [[2, 3, 4, 5, 6], [7, 8, 9]]
RUNS = [  # (method, overrides): per-token methods (U-HLM skips, so it catches up and scores) and blocks
    ("hlm", {}),
    ("u_hlm", {}),
    ("block_hlm", {"payload": "full", "stop": "confidence", "max_drafts": 6}),
    ("block_hlm", {"payload": "ids", "stop": "fixed", "fixed_drafts": 3}),
]


def _run(pair, *, method: str, block: dict, prompt_index: int, fuse: bool, coupled: bool = False):
    cfg = EvaluateConfig()
    cfg.decode.max_new_tokens = 16
    cfg.decode.sampling = "coupled" if coupled else "independent"
    cfg.runtime.share_prefixes = not fuse
    cfg.runtime.fuse_llm_prefill = fuse
    cfg.block = dataclasses.replace(cfg.block, **block)
    policy = make_policy(method=method, cfg=cfg)
    return decode_prompt(pair=pair, prompt_ids=PROMPTS[prompt_index], prompt_index=prompt_index, method=method,
                         cfg=cfg, policy=policy)


@pytest.mark.parametrize("coupled", [False, True])
def test_a_fused_prompt_saves_one_llm_pass_and_changes_nothing_else(tiny_pair64, coupled):
    counter = ForwardMeter(tiny_pair64.llm.model)
    try:
        for method, block in RUNS:
            for index in range(len(PROMPTS)):
                counter.take()
                apart = _run(tiny_pair64, method=method, block=block, prompt_index=index, fuse=False, coupled=coupled)
                passes_apart = counter.take()[0]
                fused = _run(tiny_pair64, method=method, block=block, prompt_index=index, fuse=True, coupled=coupled)
                assert fused[0] == apart[0], (method, block, index)
                assert record_outcome(fused[1]) == record_outcome(apart[1]), (method, block, index)
                first_read_prefill = method == "hlm" or (method == "u_hlm" and fused[1][0].sent)
                assert counter.calls == passes_apart - (0 if first_read_prefill else 1), (method, block, index)
                assert fused[1][0].tau_llm_s > 0 or not fused[1][0].sent  # the first round's pass holds the prompt
                if method == "u_hlm":  # evaluation mode scored the skipped tokens, on the right positions
                    assert any(r.y_d == r.y_d for r in fused[1])
    finally:
        counter.remove()


def test_a_fused_session_has_no_prefill_pass(tiny_pair64):
    key = SessionKey(seed=0, device=0, prompt=0)
    counter = ForwardMeter(tiny_pair64.llm.model)
    try:
        fused = Verifier(model=tiny_pair64.llm, fuse_prefill=True).open(session_id="s", prompt_ids=PROMPTS[0], key=key)
        assert (fused, counter.calls) == (0.0, 0)
        apart = Verifier(model=tiny_pair64.llm).open(session_id="s", prompt_ids=PROMPTS[0], key=key)
        assert apart > 0.0 and counter.calls == 1
    finally:
        counter.remove()


def test_a_block_leaves_the_last_token_to_the_verdict(tiny_pair64):
    """b tokens left take at most b - 1 drafts (one when b = 1): the verdict's own token fills the budget."""
    budget = 16
    for index in range(len(PROMPTS)):
        tokens, records, _, _ = _run(tiny_pair64, method="block_hlm", prompt_index=index, fuse=False,
                                     block={"payload": "ids", "stop": "fixed", "fixed_drafts": 6})
        for record in records:
            left = budget - (record.position - 1)
            assert len(record.drafts) <= max(left - 1, 1), (index, record.position, record.drafts)
        assert any(len(r.drafts) == 6 for r in records)  # the cap binds only near the end


def test_fusing_needs_unshared_passes(tiny_pair64):
    with pytest.raises(ConfigError, match="runtime.fuse_llm_prefill.*runtime.share_prefixes=false"):
        load_config(overrides=["runtime.fuse_llm_prefill=true"])
    with pytest.raises(ConfigError, match="runtime.fuse_llm_prefill.*runtime.share_prefixes=false"):
        CausalSession(model=tiny_pair64.llm, prompt_ids=PROMPTS[0], prefixes=PrefixCache(), eager=False)
    assert load_config(overrides=["runtime.fuse_llm_prefill=true", "runtime.share_prefixes=false"]).runtime \
        .fuse_llm_prefill
