"""Shared fixtures: a tiny random-weight Qwen2 pair saved as real Hugging Face folders (mechanics only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from uhlm_ray.models.tiny import WORDS, save_tiny_model

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_pair_dirs(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("tiny")
    slm = save_tiny_model(root / "slm", words=WORDS, layers=2, hidden=32, seed=1)
    llm = save_tiny_model(root / "llm", words=WORDS, layers=3, hidden=48, seed=2)
    return str(slm), str(llm)



@pytest.fixture(scope="session")
def tiny_pair(tiny_pair_dirs):
    from uhlm_ray.config import ModelConfig
    from uhlm_ray.models import load_pair

    slm, llm = tiny_pair_dirs
    return load_pair(ModelConfig(pair="custom", slm=slm, llm=llm, dtype="float32"))


@pytest.fixture(scope="module")
def tiny_pair64(tiny_pair_dirs):
    """The tiny pair in float64: no rounding tie can flip a sampled token between batched and solo passes."""
    from uhlm_ray.config import ModelConfig
    from uhlm_ray.models import load_pair

    slm, llm = tiny_pair_dirs
    pair = load_pair(ModelConfig(pair="custom", slm=slm, llm=llm, dtype="float32"))
    pair.slm.model.double()
    pair.llm.model.double()
    return pair


@pytest.fixture(scope="session")
def real_pair():
    """The embedded Qwen2.5-Coder pair (assembled and converted on first use)."""
    from uhlm_ray.config import ModelConfig
    from uhlm_ray.models import load_pair

    return load_pair(ModelConfig())
