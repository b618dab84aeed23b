"""Counts and times one model's forward passes by module hooks, with no change to the code that calls it."""

from __future__ import annotations

import time

import torch


class ForwardMeter:
    """Forward passes of a causal LM's decoder, timed from the decoder's start to the output head's end.

    A pass that stops at the decoder (no output head) is counted and timed to the decoder's end. `heads`: other
    output heads the model may be given while metered (a TrimmedHead), timed as its own."""

    def __init__(self, model: torch.nn.Module, *, heads: tuple[torch.nn.Module, ...] = ()) -> None:
        self.calls, self.seconds = 0, 0.0
        self._started: float | None = None
        self._handles = []
        watched = [(model.get_decoder(), True), (model.get_output_embeddings(), False), *((h, False) for h in heads)]
        for module, counts in watched:
            self._handles.append(module.register_forward_pre_hook(self._start))
            self._handles.append(module.register_forward_hook(lambda *_, counts=counts: self._stop(counts=counts)))

    def _start(self, *_) -> None:
        self._started = time.perf_counter()

    def _stop(self, *, counts: bool) -> None:
        self.seconds += time.perf_counter() - self._started
        self.calls += counts

    def take(self) -> tuple[int, float]:
        """(forward passes, seconds) since the last take."""
        out = (self.calls, self.seconds)
        self.calls, self.seconds = 0, 0.0
        return out

    def remove(self) -> None:
        """Unhook: the model runs as before."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
