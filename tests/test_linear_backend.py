"""model.linear_backend: float32 CPU products through oneDNN, with the model otherwise untouched."""

import pytest
import torch

from uhlm_ray.config import ModelConfig, load_config
from uhlm_ray.models import load_pair
from uhlm_ray.models.linear_backend import (
    OneDnnLinear,
    install_linear_backend,
    linear_backend_of,
    resolve_linear_backend,
)
from uhlm_ray.models.prefix_cache import model_fingerprint
from uhlm_ray.validation import ConfigError

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")


def test_auto_is_onednn_for_float32_on_a_cpu_and_torch_elsewhere():
    assert resolve_linear_backend("auto", dtype=torch.float32, device="cpu") == "onednn"
    assert resolve_linear_backend("auto", dtype=torch.float64, device="cpu") == "torch"
    assert resolve_linear_backend("auto", dtype=torch.bfloat16, device="cpu") == "torch"  # already oneDNN's
    assert resolve_linear_backend("auto", dtype=torch.float32, device="cuda") == "torch"
    assert resolve_linear_backend("torch", dtype=torch.float32, device="cpu") == "torch"


def test_an_impossible_or_unknown_backend_is_refused_naming_the_setting():
    with pytest.raises(ConfigError, match=r"model.linear_backend=onednn needs float32 on a CPU"):
        resolve_linear_backend("onednn", dtype=torch.bfloat16, device="cpu")
    with pytest.raises(ConfigError, match=r"model.linear_backend='mkl' is not one of"):
        load_config(overrides=["model.linear_backend=mkl"])


def test_where_the_operator_fails_auto_keeps_torchs_product_and_onednn_is_refused(monkeypatch):
    from uhlm_ray.models import linear_backend

    monkeypatch.setattr(linear_backend, "_operator_problem", lambda: "this torch build cannot run oneDNN's linear")
    assert resolve_linear_backend("auto", dtype=torch.float32, device="cpu") == "torch"
    with pytest.raises(ConfigError, match=r"model.linear_backend=onednn: this torch build cannot run"):
        resolve_linear_backend("onednn", dtype=torch.float32, device="cpu")
    with pytest.raises(ConfigError, match=r"model.linear_backend=onednn"):
        install_linear_backend(torch.nn.Linear(4, 4), backend="onednn")


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits  # [B, N, V]


def test_a_onednn_model_computes_what_torchs_does_and_keeps_its_parameters(tiny_pair_dirs):
    slm, llm = tiny_pair_dirs
    pair = load_pair(ModelConfig(pair="custom", slm=slm, llm=llm, dtype="float32"))  # auto
    model = pair.llm.model
    assert pair.llm.linear_backend == linear_backend_of(model) == "onednn"
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert layers and all(type(m) is OneDnnLinear for m in layers)  # the output head included
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == bool(model.config.tie_word_embeddings)  # a tied head stays tied
    parameters = {name: id(p) for name, p in model.named_parameters()}

    ids = torch.randint(0, pair.vocab_size, (3, 7), generator=torch.Generator().manual_seed(0))
    onednn = _logits(model, ids)
    onednn_fingerprint = model_fingerprint(model=model, source="x", device="cpu")
    assert install_linear_backend(model, backend="torch") == len(layers)
    assert linear_backend_of(model) == "torch"
    assert {name: id(p) for name, p in model.named_parameters()} == parameters  # the very same tensors
    reference = _logits(model, ids)
    # float32 products summed in another order: equal to rounding, not bit for bit
    assert torch.allclose(onednn, reference, rtol=1e-4, atol=1e-4)
    # a prefix cache must never replay one backend's pass for the other
    assert model_fingerprint(model=model, source="x", device="cpu") != onednn_fingerprint

    # a oneDNN layer cast to float64 (the tests' exact pair) falls back to torch's product, bit for bit
    install_linear_backend(model, backend="onednn")
    model.double()
    as_onednn = _logits(model, ids)
    install_linear_backend(model, backend="torch")
    assert torch.equal(as_onednn, _logits(model, ids))


def test_a_torch_backend_pair_runs_no_layer_through_onednn(tiny_pair_dirs):
    slm, llm = tiny_pair_dirs
    pair = load_pair(ModelConfig(pair="custom", slm=slm, llm=llm, dtype="float32", linear_backend="torch"))
    assert pair.slm.linear_backend == pair.llm.linear_backend == "torch"
    assert not any(isinstance(m, OneDnnLinear) for m in pair.llm.model.modules())
