"""Named SLM/LLM pairs."""

from __future__ import annotations

from uhlm_ray.config import ModelConfig
from uhlm_ray.validation import ConfigError

PAIRS: dict[str, tuple[str, str]] = {
    # Works offline: Qwen2.5-Coder 0.5B / 1.5B Instruct, Q4_K_M GGUF from PyPI part packages, 151,936 tokens.
    "qwen2.5-coder-embedded": ("embedded:qwen2.5-coder-0.5b-instruct", "embedded:qwen2.5-coder-1.5b-instruct"),
    # The U-HLM paper's pair from the hub at pinned commits (Llama-2 is gated: accept its licence, export HF_TOKEN);
    # 32,000 tokens.
    "paper": ("TinyLlama/TinyLlama-1.1B-Chat-v1.0@fe8a4ea1ffedaf415f4da2f062534de366a451e6",
              "meta-llama/Llama-2-7b-chat-hf@f5db02db724555f92da89c216ac04704f23d4590"),
}


def resolve_pair(cfg: ModelConfig) -> tuple[str, str]:
    """(slm, llm) sources: a named pair, with `model.slm` / `model.llm` overriding either side."""
    if cfg.pair == "custom":
        if not (cfg.slm and cfg.llm):
            raise ConfigError("model.pair='custom' needs both model.slm and model.llm")
        return cfg.slm, cfg.llm
    if cfg.pair not in PAIRS:
        raise ConfigError(f"model.pair={cfg.pair!r} is not one of {sorted([*PAIRS, 'custom'])}")
    slm, llm = PAIRS[cfg.pair]
    return cfg.slm or slm, cfg.llm or llm
