"""The step API: one sequence in one model, with a KV cache and lazy catch-up.

Both sides use the same class. The device's SLM appends each response token and asks for the next logits every
round (one-token forward). The base station's LLM also appends every response token, but runs only when it is asked
to verify: it then processes, in a single forward pass against its cache, every token it has not seen yet (the
skipped rounds' tokens and the previous response token). The cost of a round therefore grows with the text only
through attention over the cache, never through re-encoding the prefix.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from uhlm_ray.models.loading import LoadedModel


@dataclass
class _Prefill:
    cache: DynamicCache
    logits: torch.Tensor  # [V] float32
    seconds: float  # what computing it took


class PrefillStore:
    """Prompt prefills shared by every session of the same model and prompt.

    Each method of an evaluation decodes the same prompts; their prompt forward passes are identical, so the first
    session computes it and later ones start from a copy of its KV cache. Each session still reports the seconds the
    prefill really took, so no method looks faster for having run later.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[int, tuple[int, ...]], _Prefill] = {}

    def get(self, *, model: torch.nn.Module, prompt_ids: list[int]) -> _Prefill | None:
        return self._entries.get((id(model), tuple(prompt_ids)))

    def put(self, *, model: torch.nn.Module, prompt_ids: list[int], entry: _Prefill) -> None:
        self._entries[(id(model), tuple(prompt_ids))] = entry


class CausalSession:
    """Created with its prompt already processed (the prefill), timed in `prefill_s`."""

    def __init__(self, *, model: LoadedModel, prompt_ids: list[int], prefills: PrefillStore | None = None) -> None:
        self._model = model.model
        self._device = next(model.model.parameters()).device
        self._cache = DynamicCache(config=model.model.config)
        self._pending: list[int] = list(prompt_ids)  # tokens the model has not processed yet
        self._logits: torch.Tensor | None = None  # [V] float32, next-token logits after every processed token
        self.processed = 0  # tokens in the KV cache
        shared = prefills.get(model=self._model, prompt_ids=prompt_ids) if prefills is not None else None
        if shared is not None:
            self._cache = copy.deepcopy(shared.cache)
            self._logits = shared.logits
            self._pending = []
            self.processed = len(prompt_ids)
            self.prefill_s = shared.seconds
        else:
            start = time.perf_counter()
            self.next_logits()
            self.prefill_s = time.perf_counter() - start
            if prefills is not None:
                prefills.put(model=self._model, prompt_ids=prompt_ids,
                             entry=_Prefill(copy.deepcopy(self._cache), self._logits, self.prefill_s))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def append(self, token: int) -> None:
        """A response token is final: the model will see it at its next forward pass."""
        self._pending.append(int(token))
        self._logits = None

    @torch.inference_mode()
    def next_logits(self) -> torch.Tensor:
        """Next-token logits [V] (float32, CPU) given everything appended so far; catches up in one forward pass."""
        if self._logits is None:
            if not self._pending:
                raise RuntimeError("next_logits() on a session with nothing to process")
            ids = torch.tensor([self._pending], dtype=torch.long, device=self._device)  # [1, n]
            out = self._model(input_ids=ids, past_key_values=self._cache, use_cache=True, logits_to_keep=1)
            self._cache = out.past_key_values
            # sampling and verification run on the CPU in float32, wherever the model runs
            self._logits = out.logits[0, -1].float().cpu()  # [V]
            self.processed += len(self._pending)
            self._pending = []
        return self._logits


@torch.inference_mode()
def full_recompute_logits(*, model: LoadedModel, token_ids: list[int]) -> torch.Tensor:
    """Next-token logits [V] (float32) from one cache-free forward over the whole sequence; the reference in tests."""
    device = next(model.model.parameters()).device
    ids = torch.tensor([token_ids], dtype=torch.long, device=device)  # [1, n]
    return model.model(input_ids=ids, use_cache=False).logits[0, -1].float().cpu()
