"""Bits a sent round puts on the uplink (U-HLM paper, Section II-B).

A full payload is the vocabulary distribution, |V| probabilities of b_prob = 32 (fp32) or 16 (fp16) bits, plus the
index of the draft token, ceil(log2 |V|) bits (the paper neglects the index; we count it).
"""

from __future__ import annotations

import math

from uhlm_ray.config import PayloadConfig
from uhlm_ray.validation import check_choice, check_range


def index_bits(*, vocab_size: int) -> int:
    """Bits to name one token of the vocabulary."""
    return max(1, math.ceil(math.log2(vocab_size)))


def full_payload_bits(*, vocab_size: int, cfg: PayloadConfig) -> int:
    """B = |V| * b_prob (+ the draft index)."""
    check_range(vocab_size, field="vocab_size", low=1)
    check_choice(str(cfg.prob_bits), field="payload.prob_bits", allowed=("16", "32"))
    bits = vocab_size * cfg.prob_bits
    return bits + index_bits(vocab_size=vocab_size) if cfg.include_draft_index else bits
