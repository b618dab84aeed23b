"""Bits a sent round puts on the uplink (U-HLM paper, Section II-B; CU-HLM's truncated uploads).

A full payload is the vocabulary distribution, |V| probabilities of b_prob bits, plus the index of the draft token,
ceil(log2 |V|) bits (the paper neglects the index; we count it). b_prob is the width of `payload.prob_dtype`: 32 for
float32, 16 for float16 or bfloat16. A half-precision payload really is half precision: `quantise` rounds the
distribution to that dtype, the device draws its draft from the rounded distribution, and the verifier tests against
the same values (`payload_distribution`), so verification stays exact.

A truncated payload (CU-HLM) keeps the k most probable tokens: k indices of ceil(log2 |V|) bits and k renormalised
probabilities of b_prob bits, plus the draft index. Top-k keeps a fixed k; top-p keeps the fewest tokens whose
mass reaches p (the most probable first, which is the smallest set of that mass). The device drafts from the same
renormalised distribution x~ it sends, so verification stays exact with respect to its draft distribution.
A payload is never larger than the full one: past |V| b_prob / (ceil(log2 |V|) + b_prob) tokens the dense codec wins.

A device whose SLM head covers a sub-vocabulary (`model.slm_head_vocab`, uhlm_ray/models/trimmed_head.py) puts
probability 0 on every other id, so its dense payload is one probability per id of that support, in the order both
ends know (the kept ids are part of the model the two sides agree on), and the verifier puts 0 elsewhere: `support`
ids instead of |V|. Indices still name ids of the whole vocabulary.

A block of the block method uploads, per draft, its id alone (`ids`), or with its truncated or full distribution
(`block_payload_bits`).

Sync cost (neglected by the paper): the LLM has not seen the tokens of the rounds skipped since the last upload, so
the upload also carries their ids, ceil(log2 |V|) bits each (`payload.sync_token_ids`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from uhlm_ray.config import PROB_DTYPES, TRUNCATIONS, PayloadConfig
from uhlm_ray.validation import ConfigError, check_range

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# bfloat16 keeps float32's range: values below this are sent as 0, so that a float64 sum of the payload is exact
BFLOAT16_FLOOR = 2.0 ** -45


def index_bits(*, vocab_size: int) -> int:
    """Bits to name one token of the vocabulary."""
    return max(1, math.ceil(math.log2(vocab_size)))


def full_payload_bits(*, vocab_size: int, cfg: PayloadConfig, support: int | None = None) -> int:
    """B = |V| * b_prob (+ the draft index); a trimmed SLM head sends its `support` ids' probabilities, not |V|."""
    check_range(vocab_size, field="vocab_size", low=1)
    if support is not None:
        check_range(support, field="support", low=1, high=vocab_size)
    bits = (vocab_size if support is None else support) * cfg.bits
    return bits + index_bits(vocab_size=vocab_size) if cfg.include_draft_index else bits


def truncated_payload_bits(*, kept: int, vocab_size: int, cfg: PayloadConfig, support: int | None = None) -> int:
    """B = k (ceil(log2 |V|) + b_prob) (+ the draft index), or the full payload (over `support`) if that is smaller."""
    check_range(kept, field="kept tokens", low=1, high=vocab_size if support is None else support)
    bits = kept * (index_bits(vocab_size=vocab_size) + cfg.bits)
    bits += index_bits(vocab_size=vocab_size) if cfg.include_draft_index else 0
    return min(bits, full_payload_bits(vocab_size=vocab_size, cfg=cfg, support=support))


def sync_bits(*, skipped_tokens: int, vocab_size: int) -> int:
    """The ids of the tokens drafted in skipped rounds since the last upload, which the LLM must catch up on."""
    return skipped_tokens * index_bits(vocab_size=vocab_size)


def block_payload_bits(*, payload: str, kept: list[int], verified: list[bool], vocab_size: int,
                       cfg: PayloadConfig, support: int | None = None) -> int:
    """The bits of an uploaded block of n drafts (sync ids not included).

    Each verified draft costs, by `payload`: "ids" its id, ceil(log2 |V|) bits (the verifier treats it as a point
    mass); "full" the full payload |V| b_prob (+ its id; `support` ids for a trimmed head); "truncated" its kept
    tokens k_i (ceil(log2 |V|) + b_prob) (+ its id). A draft committed unverified rides as its id only, and a block
    with such drafts carries one flag bit per draft so the verifier knows which to test. Message framing (lengths)
    is left to the transport.
    """
    bits = 0
    for k, check in zip(kept, verified, strict=True):
        if not check or payload == "ids":
            bits += index_bits(vocab_size=vocab_size)
        elif payload == "full":
            bits += full_payload_bits(vocab_size=vocab_size, cfg=cfg, support=support)
        else:
            bits += truncated_payload_bits(kept=k, vocab_size=vocab_size, cfg=cfg, support=support)
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


def truncate(*, probs: torch.Tensor, truncation: str, top_k: int, top_p: float,
             full_sort: bool | None = None) -> Truncated:
    """x [V] -> x~ [V] by top-k or top-p truncation; "none" keeps every token with non-zero probability.

    Top-p finds its tokens by one full sort (`full_sort`; None: on a GPU, where a sort of |V| is cheap and a topk of
    most of |V| is not, docs/gpu_h200.md) or by a partial sort grown until it holds the mass (on a CPU, where a
    full sort costs ~40x a small topk). Both keep the same tokens, ties at the cut aside."""
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
        full = x.is_cuda if full_sort is None else full_sort
        width = vocab if full else 64
        while True:  # [w] each, most probable first
            sorted_probs, order = torch.sort(x, descending=True) if full else torch.topk(x, min(width, vocab))
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


@dataclass(frozen=True)
class Quantised:
    """What a device uploads in `payload.prob_dtype`, and the distribution that upload stands for."""

    sent: torch.Tensor  # [..., V] in the payload's dtype: the values that go up
    probs: torch.Tensor  # [..., V] float32: payload_distribution(sent), what the draft is drawn from


def payload_distribution(sent: torch.Tensor) -> torch.Tensor:
    """The distribution [..., V] float32 that uploaded values [..., V] stand for; both ends compute it.

    float32 values are taken as they are (the device's softmax, or a truncation renormalised in float32). float16
    and bfloat16 values, rounded one by one, need not sum to exactly 1, so they are renormalised over the last axis
    in float64: every float16 value is a multiple of 2^-24 and every bfloat16 value `quantise` sends one of 2^-52,
    so their float64 sum is exact whatever the order of summation, and the quotient, correctly rounded to float64
    and then to float32, is the same number on the device and on the base station (any machine, any batch).
    """
    if sent.dtype not in (torch.float16, torch.bfloat16):
        return sent.float()
    if sent.is_sparse:
        sent = sent.to_dense()
    wide = sent.double()
    return (wide / wide.sum(dim=-1, keepdim=True)).float()


def quantise(*, probs: torch.Tensor, dtype: str) -> Quantised:
    """A distribution x [..., V] (full, or a truncated x~) -> the upload in `dtype` and the distribution it stands for.

    float32: x as it is. float16 / bfloat16: x is renormalised in float64, then each probability is rounded to the
    nearest value of the dtype (round half to even). A probability that underflows is sent as 0: float16 flushes
    those below 2^-25 (about 3e-8; its smallest subnormal is 2^-24), bfloat16 those below 2^-45 (BFLOAT16_FLOOR; it
    would keep them, but an exact float64 sum needs the floor). Such a token is then never drafted, and can still be
    emitted by the verifier's residual max(y - q, 0), so exactness holds; the mass lost is below |V| 2^-25 (float16)
    or |V| 2^-45 (bfloat16). The rounded values are renormalised by `payload_distribution`, in float64, to the
    float32 distribution the device draws its draft from: the verifier computes the same from what it receives.
    """
    if dtype not in PROB_DTYPES:
        raise ConfigError(f"payload.prob_dtype={dtype!r} is not one of {sorted(PROB_DTYPES)}")
    if dtype == "float32":
        return Quantised(sent=probs, probs=probs)
    wide = probs.double()
    sent = (wide / wide.sum(dim=-1, keepdim=True)).to(TORCH_DTYPES[dtype])  # [..., V]
    if dtype == "bfloat16":
        sent = torch.where(sent.double() < BFLOAT16_FLOOR, torch.zeros_like(sent), sent)
    return Quantised(sent=sent, probs=payload_distribution(sent))
