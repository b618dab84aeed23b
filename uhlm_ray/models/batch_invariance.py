"""Batch-invariant passes: a sequence's logits are the same bits whether its pass runs alone or in a padded batch.

Every draw is keyed by (seed, device, prompt, position or round), so a prompt decodes to the same tokens at any batch
size exactly when its logits do not change with the batch. In a float32 pass on a CPU two things change them in the
last bits, and a token drawn where two candidates nearly tie then flips (the SLM alone decoded some Alpaca prompts
differently at batch 4 to 16, docs/reproduction.md):

- The products. oneDNN multiplies a one-row input (a solo one-token step) with a matrix-vector kernel whose sums run
  in another order than its matrix-matrix kernel; the latter gives a row the same bits for any number of rows from 2
  on (measured on the Qwen2.5 shapes, 2 to 100 rows, where MKL's sgemm changes with the row count up to 9). So a
  one-row product runs as two rows (`OneDnnLinear`, `pad_single_row`).
- Attention. SDPA over a left-padded batch computes each sequence over other key lengths and offsets than its solo
  pass. So each sequence attends in a call of its own, over exactly its own keys and queries, shaped as in its solo
  pass (`invariant_attention`).

Each fix alone left 3 of 4 sequences of a padded batch of the tiny pair with other bits than their solo passes;
both together leave none (`tests/test_batch_invariance.py`, on the tiny and the embedded pair). Outside the models
one more sum had to change: eq. 2's normaliser over |V| is summed row by row (`sampling/verify.py`), since torch
splits one row's sum across threads but not several rows'.

The rest of a decoder layer (norms, rotary embeddings, activations, residuals) works row by row. Cost on the 2-core
EPYC: a one-row product through the matrix-matrix kernel takes 1.3-1.8x as long (the output head's the same), so a
single stream's one-token steps slow down; a lockstep batch is not touched. `model.batch_invariant` (default: on
where this holds, a float32 CPU model through oneDNN) chooses it. The modelled clock's calibration times a device's
passes with it off (`single_stream`), and `bench/assisted_race.py`, a single-stream race, turns it off for every
row.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from uhlm_ray.validation import ConfigError

ATTENTION = "uhlm_batch_invariant"  # the name under which transformers finds `invariant_attention`


def invariant_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                        **_: object) -> tuple[torch.Tensor, None]:
    """transformers' attention interface, one sequence at a time. query [B, H, N, D]; key, value [B, H_kv, P + N, D]
    (a batch left-padded on both parts, as `models.session` builds it); attention_mask [B, 1, N, P + N] (True or
    0.0 where visible) or None (no padding: every key visible, causal among the new tokens). Returns
    [B, N, H, D]; a padding query's row is zeros."""
    batch, heads, n_query, _ = query.shape
    out = query.new_zeros(batch, n_query, heads, value.shape[-1])  # [B, N, H, D]
    groups = getattr(module, "num_key_value_groups", 1)
    for b in range(batch):
        if attention_mask is None:
            visible = torch.arange(key.shape[2], device=key.device)
            n = n_query
        else:
            # the last query is the sequence's last token (left padding), which sees every key of its sequence
            last = attention_mask[b, 0, -1]  # [P + N]
            seen = last if last.dtype == torch.bool else last == 0
            visible = seen.nonzero().squeeze(-1)  # [L]
            n = int(seen[key.shape[2] - n_query:].sum())  # its own new tokens: the last n columns
        q = query[b:b + 1, :, n_query - n:].contiguous()  # [1, H, n, D]
        k = key[b:b + 1].index_select(2, visible)  # [1, H_kv, L, D]
        v = value[b:b + 1].index_select(2, visible)
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # [1, H, L, D]
        length = k.shape[2]
        # query j (of n) sits at position L - n + j and sees the keys up to it
        causal = None if n == 1 else torch.ones(n, length, dtype=torch.bool, device=q.device).tril(length - n)
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=causal, dropout_p=dropout,
                                                             scale=scaling)  # [1, H, n, D]
        out[b, n_query - n:] = o[0].transpose(0, 1)
    return out, None


def resolve_batch_invariant(setting: bool | None, *, dtype: torch.dtype, device: str, linear_backend: str) -> bool:
    """None (auto): on where it holds, a float32 CPU model whose products run through oneDNN; an explicit True
    elsewhere is refused, naming why (MKL's sgemm and GPU kernels change a row's bits with the number of rows)."""
    holds = device == "cpu" and dtype == torch.float32 and linear_backend == "onednn"
    if setting and not holds:
        raise ConfigError(f"model.batch_invariant=true needs a float32 CPU model whose products run through oneDNN "
                          f"(model.linear_backend=auto or onednn); this model is {dtype} on {device!r} with "
                          f"linear_backend={linear_backend!r}; use model.batch_invariant=null or false")
    return holds if setting is None else setting


def install_batch_invariance(model: torch.nn.Module, *, on: bool) -> None:
    """Route `model`'s attention through `invariant_attention` and its oneDNN products' one-row inputs through the
    matrix-matrix kernel (on), or back to the attention it had and the fast one-row kernel (off). A model class that
    takes no custom attention function is refused, naming the setting."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    from uhlm_ray.models.linear_backend import OneDnnLinear

    if ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTENTION, invariant_attention)
        AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the same masks as SDPA's (None where unpadded)
    if not hasattr(model, "_attention_before_invariance"):
        model._attention_before_invariance = model.config._attn_implementation
    try:
        model.set_attn_implementation(ATTENTION if on else model._attention_before_invariance)
    except (ValueError, ImportError) as err:
        raise ConfigError(f"model.batch_invariant: {type(model).__name__} takes no custom attention function "
                          f"({str(err).splitlines()[0]}); use model.batch_invariant=false") from err
    for module in model.modules():
        if isinstance(module, OneDnnLinear):
            module.pad_single_row = on


@contextmanager
def single_stream(*models: torch.nn.Module) -> Iterator[None]:
    """Batch invariance off for a while (the timing of one device's passes, which would run the fast one-row
    kernel), then as it was."""
    was = [batch_invariant_of(m) for m in models]
    for m in models:
        install_batch_invariance(m, on=False)
    try:
        yield
    finally:
        for m, on in zip(models, was, strict=True):
            install_batch_invariance(m, on=on)


def batch_invariant_of(model: torch.nn.Module) -> bool:
    """Whether `model` runs batch-invariant passes (part of its prefix-cache fingerprint and calibration key)."""
    return getattr(model.config, "_attn_implementation", None) == ATTENTION
