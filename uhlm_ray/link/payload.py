"""Bits a sent round puts on the uplink (U-HLM paper, Section II-B; CU-HLM's truncated uploads).

A full payload is the vocabulary distribution, |V| probabilities of b_prob = 32 (fp32) or 16 (fp16) bits, plus the
index of the draft token, ceil(log2 |V|) bits (the paper neglects the index; we count it).

A truncated payload (CU-HLM) keeps the k most probable tokens: k indices of ceil(log2 |V|) bits and k renormalised
probabilities of b_prob bits, plus the draft index. Top-k keeps a fixed k; top-p keeps the fewest tokens whose
mass reaches p (the most probable first, which is the smallest set of that mass). The device drafts from the same
renormalised distribution x~ it sends, so verification stays exact with respect to its draft distribution.
A payload is never larger than the full one: past |V| b_prob / (ceil(log2 |V|) + b_prob) tokens the dense codec wins.

A block of the block method uploads, per draft, its id alone (`ids`), or with its truncated or full distribution
(`block_payload_bits`).

Sync cost (neglected by the paper): the LLM has not seen the tokens of the rounds skipped since the last upload, so
the upload also carries their ids, ceil(log2 |V|) bits each (`payload.sync_token_ids`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from uhlm_ray.config import TRUNCATIONS, PayloadConfig
from uhlm_ray.validation import ConfigError, check_choice, check_range


def index_bits(*, vocab_size: int) -> int:
    """Bits to name one token of the vocabulary."""
    return max(1, math.ceil(math.log2(vocab_size)))


def full_payload_bits(*, vocab_size: int, cfg: PayloadConfig) -> int:
    """B = |V| * b_prob (+ the draft index)."""
    check_range(vocab_size, field="vocab_size", low=1)
    check_choice(str(cfg.prob_bits), field="payload.prob_bits", allowed=("16", "32"))
    bits = vocab_size * cfg.prob_bits
    return bits + index_bits(vocab_size=vocab_size) if cfg.include_draft_index else bits


def truncated_payload_bits(*, kept: int, vocab_size: int, cfg: PayloadConfig) -> int:
    """B = k (ceil(log2 |V|) + b_prob) (+ the draft index), or the full payload if that is smaller."""
    check_range(kept, field="kept tokens", low=1, high=vocab_size)
    bits = kept * (index_bits(vocab_size=vocab_size) + cfg.prob_bits)
    bits += index_bits(vocab_size=vocab_size) if cfg.include_draft_index else 0
    return min(bits, full_payload_bits(vocab_size=vocab_size, cfg=cfg))


def sync_bits(*, skipped_tokens: int, vocab_size: int) -> int:
    """The ids of the tokens drafted in skipped rounds since the last upload, which the LLM must catch up on."""
    return skipped_tokens * index_bits(vocab_size=vocab_size)


def block_payload_bits(*, payload: str, kept: list[int], verified: list[bool], vocab_size: int,
                       cfg: PayloadConfig) -> int:
    """The bits of an uploaded block of n drafts (sync ids not included).

    Each verified draft costs, by `payload`: "ids" its id, ceil(log2 |V|) bits (the verifier treats it as a point
    mass); "full" the full payload |V| b_prob (+ its id); "truncated" its kept tokens k_i (ceil(log2 |V|) + b_prob)
    (+ its id). A draft committed unverified rides as its id only, and a block with such drafts carries one flag
    bit per draft so the verifier knows which to test. Message framing (lengths) is left to the transport.
    """
    bits = 0
    for k, check in zip(kept, verified, strict=True):
        if not check or payload == "ids":
            bits += index_bits(vocab_size=vocab_size)
        elif payload == "full":
            bits += full_payload_bits(vocab_size=vocab_size, cfg=cfg)
        else:
            bits += truncated_payload_bits(kept=k, vocab_size=vocab_size, cfg=cfg)
    return bits + (len(verified) if not all(verified) else 0)


def compression_rate(*, payload_bits: int, vocab_size: int, cfg: PayloadConfig) -> float:
    """1 - B / B_full of one sent round (0 for a full upload)."""
    return 1.0 - payload_bits / full_payload_bits(vocab_size=vocab_size, cfg=cfg)


@dataclass(frozen=True)
class Truncated:
    """What a truncating device drafts from and uploads."""

    probs: torch.Tensor  # x~ [V] float32: x on the kept tokens, renormalised, zero elsewhere
    kept: int  # k
    kept_mass: float  # m = sum of x over the kept tokens; TV(x~, x) = 1 - m


def truncate(*, probs: torch.Tensor, truncation: str, top_k: int, top_p: float) -> Truncated:
    """x [V] -> x~ [V] by top-k or top-p truncation; "none" keeps every token with non-zero probability."""
    x = probs.float()  # [V]
    if truncation not in TRUNCATIONS:
        raise ConfigError(f"truncation={truncation!r} is not one of {list(TRUNCATIONS)}")
    if truncation == "none":
        return Truncated(probs=x, kept=int((x > 0).sum()), kept_mass=float(x.sum()))
    vocab, total = x.shape[-1], float(x.sum())
    if truncation == "top_k":
        kept = min(top_k, vocab)
        sorted_probs, order = torch.topk(x, kept)  # [k] each, most probable first
    else:  # the fewest tokens whose mass reaches p: the first index where the running mass is >= p
        width = 64  # a partial sort (topk) grown until it holds that mass: a full sort of |V| costs ~40x more
        while True:
            sorted_probs, order = torch.topk(x, min(width, vocab))  # [w] each
            running = torch.cumsum(sorted_probs, dim=-1)  # [w]
            if float(running[-1]) >= top_p * total or width >= vocab:
                break
            width *= 4
        kept = min(int(torch.searchsorted(running, torch.tensor([top_p * total]))[0]) + 1, sorted_probs.shape[-1])
    keep = order[:kept]  # [k]
    mass = float(sorted_probs[:kept].sum())
    out = torch.zeros_like(x)  # [V]
    out[keep] = x[keep] / mass
    return Truncated(probs=out, kept=kept, kept_mass=mass / total)
