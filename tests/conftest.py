"""Shared fixtures: a tiny random-weight Qwen2 pair saved as real Hugging Face folders (mechanics only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "is", "big", "small", "red", "blue", "and", "or", "not", "yes"]


def save_tiny_model(folder: Path, *, words: list[str], layers: int, hidden: int, seed: int) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    vocab = {"<unk>": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, eos_token_id=1,
        tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(config)
    # random init at std 0.02 gives near-uniform distributions; sharper logits make drafts disagree more usefully
    with torch.no_grad():
        model.lm_head.weight.mul_(25.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


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


@pytest.fixture(scope="session")
def real_pair():
    """The embedded Qwen2.5-Coder pair (assembled and converted on first use)."""
    from uhlm_ray.config import ModelConfig
    from uhlm_ray.models import load_pair

    return load_pair(ModelConfig())
