"""The one-device cell on the embedded Qwen2.5-Coder pair (bf16) equals the core loop, token for token.

A real local Ray, the real Serve verifier with the 1.5B LLM, a device actor with the 0.5B SLM.
"""

from __future__ import annotations

import socket

import pytest

from uhlm_ray.config import EvaluateConfig
from uhlm_ray.decode import decode_prompt, make_policy
from uhlm_ray.experiments.datasets import Example
from uhlm_ray.experiments.evaluate import ResultStore
from uhlm_ray.measures.similarity import load_encoder
from uhlm_ray.models.chat import chat_prompt_ids

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.real_models

EXAMPLE = Example(id="sum", prompt="Write a Python function that returns the sum of a list.",
                  reference="def total(xs):\n    return sum(xs)")


def test_one_device_cell_equals_the_core_loop_on_the_embedded_pair(real_pair, tmp_path):
    from ray import serve

    from actors.cell_runner import run_cell
    from actors.verifier_deployment import start_verifier

    cfg = EvaluateConfig()
    cfg.decode.max_new_tokens = 10
    cfg.tracking.enabled = False
    cfg.cell.n_devices = 1
    cfg.cell.method = "u_hlm"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        cfg.runtime.http_port = s.getsockname()[1]

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        start_verifier(cfg)
        (cell,) = run_cell(cfg=cfg, examples=[EXAMPLE], store=ResultStore(tmp_path), encoder=load_encoder("use"),
                           run="real")
    finally:
        serve.shutdown()
        ray.shutdown()

    ids = chat_prompt_ids(tokenizer=real_pair.tokenizer, prompt=EXAMPLE.prompt)
    tokens, records, _, _ = decode_prompt(pair=real_pair, prompt_ids=ids, prompt_index=0, method="u_hlm", cfg=cfg,
                                          policy=make_policy(method="u_hlm", cfg=cfg))
    assert cell.tokens == tokens
    assert [r.sent for r in cell.records] == [r.sent for r in records]
    assert [r.accepted for r in cell.records] == [r.accepted for r in records]
    assert any(r.sent for r in records) and not all(r.sent for r in records)  # both branches exercised
