"""The sampling uncertainty measures beyond temperature perturbation: MC dropout and prompt perturbation.

Mechanics on the tiny random-weight pair: ranges, K-sample limit cases, determinism under a seed, the session left
untouched, and the extra passes counted on the clocks when the policy uses u.
"""

import numpy as np
import pytest
import torch

from uhlm_ray.config import EvaluateConfig
from uhlm_ray.decode import decode_prompt, make_policy
from uhlm_ray.device.uncertainty import draw_dropout_probs, sample_disagreement
from uhlm_ray.models import CausalSession
from uhlm_ray.models.session import mc_dropout_logits
from uhlm_ray.validation import ConfigError

PROMPT = [2, 3, 4, 5, 6]


def test_sample_disagreement_limits():
    one_hot = torch.zeros(5, 8)
    one_hot[:, 3] = 1.0
    uniforms = torch.linspace(0.01, 0.99, 5)
    assert sample_disagreement(probs=one_hot, draft=3, uniforms=uniforms) == 0.0  # every pass agrees
    assert sample_disagreement(probs=one_hot, draft=4, uniforms=uniforms) == 1.0  # none does
    mixed = one_hot.clone()
    mixed[:2] = 0.0
    mixed[:2, 6] = 1.0  # two of five passes put all mass elsewhere
    assert sample_disagreement(probs=mixed, draft=3, uniforms=uniforms) == pytest.approx(2 / 5)


def test_dropout_probs_are_uniform_in_range():
    rng = np.random.default_rng(0)
    probs = draw_dropout_probs(rng=rng, k=20_000, p_max=0.1)
    assert probs.min() >= 0 and probs.max() <= 0.1 and probs.mean() == pytest.approx(0.05, abs=0.002)
    with pytest.raises(ConfigError, match="uncertainty.dropout_max"):
        draw_dropout_probs(rng=rng, k=3, p_max=1.0)


def test_mc_dropout_passes(tiny_pair):
    session = CausalSession(model=tiny_pair.slm, prompt_ids=PROMPT)
    session.append(7)
    clean = session.next_logits().clone()
    processed = session.processed
    # p = 0 in every pass: K copies of the clean distribution
    zero = mc_dropout_logits(session, dropout_probs=[0.0] * 4, seed=1)
    assert zero.shape == (4, tiny_pair.vocab_size)
    torch.testing.assert_close(zero, clean.expand(4, -1), atol=1e-4, rtol=1e-4)
    # p = 0.5: the passes differ from each other; the same seed gives the same passes
    noisy = mc_dropout_logits(session, dropout_probs=[0.5] * 4, seed=1)
    assert not torch.allclose(noisy[0], noisy[1])
    torch.testing.assert_close(noisy, mc_dropout_logits(session, dropout_probs=[0.5] * 4, seed=1))
    # the session is untouched: same cache length, same logits, and it still steps correctly
    assert session.processed == processed
    torch.testing.assert_close(session.next_logits(), clean)
    session.append(8)
    assert session.next_logits().shape == (tiny_pair.vocab_size,)


def _cfg(measure: str) -> EvaluateConfig:
    cfg = EvaluateConfig()
    cfg.uncertainty.measure = measure
    cfg.uncertainty.k = 6
    cfg.decode.max_new_tokens = 8
    cfg.policy.u_th = 0.3
    return cfg


def test_mc_dropout_in_the_loop_is_seeded_and_on_the_clock(tiny_pair):
    cfg = _cfg("mc_dropout")
    policy = make_policy(method="u_hlm", cfg=cfg)
    runs = [decode_prompt(pair=tiny_pair, prompt_ids=PROMPT, prompt_index=0, method="u_hlm", cfg=cfg, policy=policy)
            for _ in range(2)]
    (tokens, records, _, _), (again, records_again, _, _) = runs
    assert tokens == again and [r.uncertainty for r in records] == [r.uncertainty for r in records_again]
    assert all(r.uncertainty * cfg.uncertainty.k == pytest.approx(round(r.uncertainty * cfg.uncertainty.k))
               for r in records)  # multiples of 1/K in [0, 1]
    assert all(0.0 <= r.uncertainty <= 1.0 for r in records)
    assert all(r.tau_uncertainty_s > 0 for r in records)  # U-HLM uses u: the K passes are on the clocks


def test_prompt_perturbation_in_the_loop(tiny_pair):
    from uhlm_ray.device.paraphrase import load_wordnet, paraphrase_prompt_ids, paraphrases

    cfg = _cfg("prompt_perturbation")
    try:
        wordnet = load_wordnet(None)
    except ConfigError as err:  # a machine without WordNet gets an error that says how to install it
        assert "apt-get install wordnet-base" in str(err) and "nltk.downloader wordnet" in str(err)
        pytest.fail(f"WordNet is part of the test set-up (scripts/setup.sh installs wordnet-base): {err}")
    texts = paraphrases(prompt="the big dog sat on the red mat", k=5, rate=1.0, rng=np.random.default_rng(0),
                        wordnet=wordnet)
    assert len(texts) == 5 and any(t != "the big dog sat on the red mat" for t in texts)
    assert paraphrases(prompt="the big dog", k=3, rate=0.0, rng=np.random.default_rng(0), wordnet=wordnet) == \
        ["the big dog"] * 3
    ids = paraphrase_prompt_ids(tokenizer=tiny_pair.tokenizer, prompt="the big dog sat", cfg=cfg, prompt_index=0)
    assert len(ids) == cfg.uncertainty.k
    policy = make_policy(method="u_hlm", cfg=cfg)
    tokens, records, _, _ = decode_prompt(pair=tiny_pair, prompt_ids=PROMPT, prompt_index=0, method="u_hlm",
                                          cfg=cfg, policy=policy, paraphrase_ids=ids)
    again, _, _, _ = decode_prompt(pair=tiny_pair, prompt_ids=PROMPT, prompt_index=0, method="u_hlm", cfg=cfg,
                                   policy=policy, paraphrase_ids=ids)
    assert tokens == again
    assert all(0.0 <= r.uncertainty <= 1.0 and r.tau_uncertainty_s > 0 for r in records)
    with pytest.raises(ConfigError, match="needs the paraphrased prompts"):
        decode_prompt(pair=tiny_pair, prompt_ids=PROMPT, prompt_index=0, method="u_hlm", cfg=cfg, policy=policy)
