"""Forward passes shared by every run that reaches the same prefix: the same model fed the same tokens in the same
chunks computes the same thing, so it is computed once.

A session's history is a chain of *chunks*: the prompt (its prefill), then the tokens of each later forward pass
(one response token per SLM round; the previous token plus the skipped drafts per LLM catch-up). A chunk's key
hashes the model, the key of the chunk before it and its tokens, so two sessions share a key exactly when they fed
the model the same tokens in the same passes. Trials of a threshold sweep do that until their policies first
disagree on a round whose verdict changes the text, and every method drafts the same tokens up to its first
resample, so most of a sweep's forward passes repeat.

An entry holds what the pass produced and what a later session needs to go on as if it had run the pass itself:

- the new keys and values of every layer (appended to the session's own KV cache, so a session that leaves the
  shared path continues from a cache bit-identical to the one it would have built; Qwen2.5's grouped-query
  attention keeps this at 12 KiB (0.5B) to 28 KiB (1.5B) per token in bf16),
- the hidden states of the chunk's tokens (scoring, evaluation mode) and the next-token logits,
- the seconds the pass took, which the session reports as its own (time replay): a trial that found its forward
  passes here reports the clocks of the run that computed them, so sharing changes no throughput figure.

Only passes of one session alone are shared: a padded batch rounds differently in bf16 than a solo pass, so a
batched session leaves the shared path for good. Entries live in memory (least recently used first out, bounded in
bytes) and, when a folder is given, in safetensors files there, written atomically, which is how the trials of a
sweep running in separate worker processes share them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from uhlm_ray.config import RuntimeConfig
from uhlm_ray.models.batch_invariance import batch_invariant_of
from uhlm_ray.models.linear_backend import linear_backend_of
from uhlm_ray.validation import check_range


@dataclass
class ChunkEntry:
    keys: list[torch.Tensor]  # per layer [1, H_kv, n, D]: the chunk's new keys
    values: list[torch.Tensor]  # per layer [1, H_kv, n, D]
    hidden: torch.Tensor  # [n, H] last hidden states of the chunk's tokens, model dtype
    logits: torch.Tensor  # [V] next-token logits after the chunk, the model's output dtype
    forward_s: float  # what the pass took when it was computed

    @property
    def nbytes(self) -> int:
        tensors = [*self.keys, *self.values, self.hidden, self.logits]
        return sum(t.numel() * t.element_size() for t in tensors)


# model -> (its tensors' names, shapes, storage and in-place version counters, the digest of its weight sample):
# sampling every tensor costs ~20 ms on a GPU (a device-to-host copy each), and a session asks at every prompt
_WEIGHT_DIGESTS: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()


@torch.no_grad()
def _weight_digest(model: torch.nn.Module) -> str:
    """Each tensor's name, shape, dtype and first and last values, hashed; recomputed only after a tensor changed
    in place (its version counter moved) or was replaced (a module swapped in: a trimmed output head)."""
    state = model.state_dict(keep_vars=True)
    versions = tuple((name, tuple(t.shape), t.data_ptr(), t._version) for name, t in state.items())
    cached = _WEIGHT_DIGESTS.get(model)
    if cached is not None and cached[0] == versions:
        return cached[1]
    digest = hashlib.sha256()
    for name, tensor in state.items():
        flat = tensor.detach().reshape(-1)
        ends = torch.cat([flat[:8], flat[-8:]]).to(torch.float64).cpu()
        digest.update(f"|{name}:{tuple(tensor.shape)}:{tensor.dtype}:".encode() + ends.numpy().tobytes())
    _WEIGHT_DIGESTS[model] = (versions, digest.hexdigest())
    return digest.hexdigest()


def model_fingerprint(*, model: torch.nn.Module, source: str, device: str) -> str:
    """The root of a model's chunk chain: its source, dtype and device, a sample of its weights (each tensor's
    shape and its first and last values), the library that multiplies its matrices (oneDNN and MKL round a pass
    differently) and whether its passes are batch-invariant (a one-token pass then rounds differently). The source
    alone would let two models loaded from one folder, or a folder whose weights changed since an on-disk cache was
    written, answer for each other."""
    return hashlib.sha256(f"{source}|{device}|{linear_backend_of(model)}|{batch_invariant_of(model)}|"
                          f"{_weight_digest(model)}".encode()).hexdigest()


def chunk_key(*, parent: str, tokens: list[int]) -> str:
    """The key of a chunk: its parent's key (the model's fingerprint for a prompt) and its tokens."""
    digest = hashlib.sha256(parent.encode())
    digest.update(b"|" + ",".join(map(str, tokens)).encode())
    return digest.hexdigest()


class PrefixCache:
    """Chunk entries by key, in memory and optionally in a folder shared between processes."""

    def __init__(self, *, directory: Path | None = None, max_memory_mb: float = 1024.0) -> None:
        check_range(max_memory_mb, field="runtime.prefix_cache_mb", low=0.0)
        self.directory = directory
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_memory_mb * 2**20)
        self._memory: OrderedDict[str, ChunkEntry] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> ChunkEntry | None:
        entry = self._memory.get(key)
        if entry is not None:
            self._memory.move_to_end(key)
        elif self.directory is not None and (self.directory / f"{key}.safetensors").is_file():
            entry = _read(self.directory / f"{key}.safetensors")
            self._remember(key, entry)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, key: str, entry: ChunkEntry) -> None:
        self._remember(key, entry)
        if self.directory is not None:
            _write(self.directory / f"{key}.safetensors", entry)

    def _remember(self, key: str, entry: ChunkEntry) -> None:
        if key in self._memory:
            return
        self._memory[key] = entry
        self._bytes += entry.nbytes
        while self._bytes > self.max_bytes and self._memory:
            _, dropped = self._memory.popitem(last=False)
            self._bytes -= dropped.nbytes


def prefix_cache(runtime: RuntimeConfig, *, directory: Path | None = None) -> PrefixCache | None:
    """The cache a run's settings ask for; None when `runtime.share_prefixes` is off."""
    if not runtime.share_prefixes:
        return None
    return PrefixCache(directory=directory, max_memory_mb=runtime.prefix_cache_mb)


def _write(path: Path, entry: ChunkEntry) -> None:
    """Atomically: a concurrent reader sees the whole file or none (two writers write the same bytes)."""
    tensors = {"hidden": entry.hidden, "logits": entry.logits}
    for layer, (k, v) in enumerate(zip(entry.keys, entry.values, strict=True)):
        tensors[f"k{layer}"], tensors[f"v{layer}"] = k, v
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: t.detach().contiguous().cpu() for k, t in tensors.items()}, tmp,
                  metadata={"forward_s": repr(entry.forward_s), "layers": str(len(entry.keys))})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read(path: Path) -> ChunkEntry:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    layers = int(meta["layers"])
    return ChunkEntry(keys=[tensors[f"k{i}"] for i in range(layers)], values=[tensors[f"v{i}"] for i in range(layers)],
                      hidden=tensors["hidden"], logits=tensors["logits"], forward_s=float(meta["forward_s"]))
