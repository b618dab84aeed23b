"""The SLM's output head restricted to a sub-vocabulary: a cheaper draft, verified exactly all the same.

The SLM's projection onto its 151,936-token vocabulary is about a fifth of a Qwen2.5-0.5B step on a CPU (15 of
76 ms in bf16 on 2 cores). Frequency-ranked speculative sampling (FR-Spec, Zhao et al., 2025) drafts from the most
frequent tokens only. A byte-level BPE vocabulary numbers its merges in the order it learnt them, most frequent
first, so the first N ids are a frequency rank that needs no corpus. The special tokens (end of turn, end of text)
are kept too, so a draft can still end the response.

The SLM then puts probability 0 on every other token (its logits are -inf there). Nothing downstream changes:
speculative sampling (full or truncated uploads) is exact for any proposal it is sent, an ids upload is verified as
a point mass, and a coupled draft is kept only when it is the LLM's own race winner, so every exact method still
emits the LLM's law. What the trim costs is acceptance: the LLM's mass outside the kept ids is never drafted. The
SLM alone and the lossy methods decode from the trimmed SLM.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from uhlm_ray.validation import ConfigError


class TrimmedHead(torch.nn.Module):
    """An output projection over `kept` ids only: hidden [..., H] -> logits [..., V], -inf outside `kept`.

    The kept rows are a layer of the head's own class, so the product runs where the whole head's did (oneDNN or
    torch, batch-invariant or not: uhlm_ray.models.linear_backend and batch_invariance reach it like any layer), and
    in the state dict, so a prefix cache's model fingerprint tells one trim from another."""

    def __init__(self, *, head: torch.nn.Linear, kept: torch.Tensor) -> None:
        super().__init__()
        weight = head.weight  # [V, H]
        self.vocab_size = int(weight.shape[0])
        self.register_buffer("kept", kept.to(weight.device))  # [N] int64
        self.rows = torch.nn.Linear(weight.shape[1], len(kept), bias=head.bias is not None, device=weight.device,
                                    dtype=weight.dtype).requires_grad_(False)  # [N, H]
        with torch.no_grad():
            self.rows.weight.copy_(weight[self.kept])
            if head.bias is not None:
                self.rows.bias.copy_(head.bias[self.kept])
        self.rows.__class__ = type(head)
        if hasattr(head, "pad_single_row"):  # batch invariance was installed at load, before the trim
            self.rows.pad_single_row = head.pad_single_row
        self.full = head  # the whole head it was cut from

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # as rows [M, H]: HF's last-position slice [1, 1, H] of a longer pass keeps its parent's batch stride, and
        # a bf16 CPU product of such an input with a weight that needs no grad took a path 15x slower (torch 2.13)
        sub = self.rows(hidden.reshape(-1, hidden.shape[-1])).reshape(*hidden.shape[:-1], -1)  # [..., N]
        out = sub.new_full((*sub.shape[:-1], self.vocab_size), float("-inf"))  # [..., V]
        return out.index_copy_(-1, self.kept, sub)


def check_head_vocab(*, keep: int, rows: int) -> None:
    """Refuse a head vocabulary outside 1..rows, the SLM's output rows (read from config.json before any weights
    load, by the preflight, or from the loaded head)."""
    if not 1 <= keep <= rows:
        raise ConfigError(f"model.slm_head_vocab={keep} is outside 1..{rows} (the SLM's output rows)")


def kept_ids(*, tokenizer, vocab_size: int, keep: int) -> torch.Tensor:
    """The first `keep` ids (BPE merge order) and every special or added token's id below `vocab_size`, sorted."""
    check_head_vocab(keep=keep, rows=vocab_size)
    special = set(getattr(tokenizer, "all_special_ids", [])) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    ids = set(range(keep)) | {i for i in special if 0 <= i < vocab_size}
    return torch.tensor(sorted(ids), dtype=torch.long)


def trimmed_head_of(model, *, keep: int) -> TrimmedHead:
    """A LoadedModel's whole output head restricted to `kept_ids(keep)` (the model is left as it is)."""
    head = model.model.get_output_embeddings()
    if isinstance(head, TrimmedHead):
        head = head.full
    ids = kept_ids(tokenizer=model.tokenizer, vocab_size=model.vocab_size, keep=keep)
    return TrimmedHead(head=head, kept=ids)


def trim_output_head(model, *, keep: int) -> None:
    """Restrict a LoadedModel's output head to `kept_ids(keep)`, in place."""
    model.model.set_output_embeddings(trimmed_head_of(model, keep=keep))


@contextmanager
def swapped_head(model, *, head: torch.nn.Module) -> Iterator[None]:
    """A LoadedModel decodes through `head` (a TrimmedHead, say) inside the block; its own head is put back after."""
    own = model.model.get_output_embeddings()
    model.model.set_output_embeddings(head)
    try:
        yield
    finally:
        model.model.set_output_embeddings(own)
