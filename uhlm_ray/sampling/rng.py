"""Randomness keyed by what a draw is for, not by the order draws happen in.

Every random number in a run comes from `keyed_rng(seed=..., prompt=..., round_index=..., purpose=...)`, a fresh
numpy Generator seeded from the tuple (seed, device, prompt, round, purpose). A prompt therefore gets the same tokens
whether it runs alone, first, last, or on any of many devices, and changing one method's policy does not shift the
draws of another.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class Purpose(enum.IntEnum):
    """What a draw is used for; the value is part of the seed key, so never renumber."""

    DRAFT = 1  # the SLM's draft d ~ x
    TEMPERATURES = 2  # eq. 6: the K temperatures and their K sample draws
    POLICY = 3  # Rand-HLM's coin
    ACCEPT = 4  # the accept test u < y_d / x_d
    RESAMPLE = 5  # d* ~ norm(max(y - x, 0))
    FADING = 6  # the round's Rayleigh fading gain
    LLM_SAMPLE = 7  # the LLM-alone baseline's token
    MC_DROPOUT = 8  # MC dropout's K dropout probabilities and masks
    PARAPHRASE = 9  # prompt perturbation's K paraphrases (round 0: once per prompt)
    UPLINK = 10  # a block round's channel: fading draws, retransmissions
    COUPLED = 11  # the shared race noise of a response position (sampling/coupling.py): keyed by position, not round
    CHANNEL = 12  # a device's fading process in time for a prompt (link/fading.py): keyed by chunk, not round


def keyed_rng(
    *, seed: int, device: int = 0, prompt: int, round_index: int, purpose: Purpose, offset: int | None = None
) -> np.random.Generator:
    """A Generator determined by (seed, device, prompt, round, purpose) alone, and by `offset` when given: the
    position of a draw inside a block round (its k-th draft), so that no two draws of a run share a key."""
    key = [seed, device, prompt, round_index, int(purpose)] + ([] if offset is None else [offset])
    return np.random.default_rng(np.random.SeedSequence(key))


@dataclass(frozen=True)
class SessionKey:
    """What keys a decoding session's draws; the device and the verifier share it."""

    seed: int
    device: int
    prompt: int

    def rng(self, *, round_index: int, purpose: Purpose, offset: int | None = None) -> np.random.Generator:
        return keyed_rng(seed=self.seed, device=self.device, prompt=self.prompt, round_index=round_index,
                         purpose=purpose, offset=offset)

    def uniform(self, *, round_index: int, purpose: Purpose, offset: int | None = None) -> float:
        """One uniform in [0, 1), kept in float64: rounding it to float32 would turn about 3e-8 of draws into 1.0."""
        return float(self.rng(round_index=round_index, purpose=purpose, offset=offset).random())
