"""A Ray actor holding one SLM copy for several simulated devices, decoding their prompts in lockstep.

Each call decodes one "wave": at most one prompt per device of the actor, with one batched SLM forward per round and
every sent draft of the round in flight to the Serve verifier at once. The actor is restartable (`max_restarts`,
`max_task_retries`): a wave interrupted by a crash is decoded again from the start by the restarted actor, with the
same keyed draws, so its results are the same and the driver stores each prompt exactly once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import ray
import torch

from actors.verifier_deployment import ServeVerifierClient
from uhlm_ray.cell import device_channel
from uhlm_ray.config import config_from_dict
from uhlm_ray.decode import DeviceJob, decode_lockstep, make_policy
from uhlm_ray.device.paraphrase import paraphrase_prompt_ids
from uhlm_ray.models.chat import chat_prompt_ids
from uhlm_ray.models.loading import load_slm
from uhlm_ray.models.prefix_cache import prefix_cache
from uhlm_ray.records import PromptResult
from uhlm_ray.sampling.rng import SessionKey
from uhlm_ray.snr import mean_snr
from uhlm_ray.validation import ConfigError


@dataclass
class Assignment:
    """One prompt for one device in a wave."""

    device_index: int
    prompt_index: int
    example_id: str
    reference: str
    prompt: str
    distance_m: float
    fixed_drafts: int | None = None  # this device's block length under a Multi-SPIN plan (cell.draft_lengths)


def session_id(*, run: str, device_index: int, prompt_index: int) -> str:
    """Deterministic, so a retried wave reopens (and so replaces) the sessions its crashed attempt left."""
    return f"{run}:d{device_index}:p{prompt_index}"


@ray.remote(max_restarts=3, max_task_retries=3)
class DeviceActor:
    def __init__(self, config: dict, run: str) -> None:
        self.cfg = config_from_dict(config)
        self.run = run
        if self.cfg.model.num_threads is not None:
            torch.set_num_threads(self.cfg.model.num_threads)
        self.slm = load_slm(self.cfg.model, device="cpu")
        self.client = ServeVerifierClient()
        info = self.client.info()
        if info["vocab_size"] != self.slm.vocab_size:
            raise ConfigError(f"vocabulary size differs: SLM {self.slm.source!r} has {self.slm.vocab_size} output "
                              f"rows, the verifier's LLM {info['vocab_size']}")
        self.eos_token_ids = self.slm.eos_token_ids | frozenset(info["eos_token_ids"])
        self.policy = make_policy(method=self.cfg.cell.method, cfg=self.cfg)
        self.prefixes = prefix_cache(self.cfg.runtime)  # prompt prefills of the prompts this actor meets again

    def pid(self) -> int:
        return os.getpid()

    def run_wave(self, assignments: list[Assignment]) -> list[PromptResult]:
        cfg = self.cfg
        prompt_ids = [chat_prompt_ids(tokenizer=self.slm.tokenizer, prompt=a.prompt) for a in assignments]
        jobs = [
            DeviceJob(
                session_id=session_id(run=self.run, device_index=a.device_index, prompt_index=a.prompt_index),
                key=SessionKey(seed=cfg.decode.seed, device=a.device_index, prompt=a.prompt_index),
                prompt_ids=ids, method=cfg.cell.method, policy=self.policy,
                mean_snr=mean_snr(device_channel(channel=cfg.channel, distance_m=a.distance_m)),
                paraphrase_ids=paraphrase_prompt_ids(tokenizer=self.slm.tokenizer, prompt=a.prompt, cfg=cfg,
                                                     prompt_index=a.prompt_index),
                fixed_drafts=a.fixed_drafts,
            )
            for a, ids in zip(assignments, prompt_ids, strict=True)
        ]
        outcomes = decode_lockstep(slm=self.slm, verifier=self.client, jobs=jobs, cfg=cfg,
                                   eos_token_ids=self.eos_token_ids, prefixes=self.prefixes)
        return [
            PromptResult(
                method=cfg.cell.method, prompt_index=a.prompt_index, example_id=a.example_id,
                reference=a.reference, response=self.slm.tokenizer.decode(o.tokens, skip_special_tokens=True),
                tokens=o.tokens, stop_reason=o.stop_reason, prompt_tokens=len(ids), prefill_s=o.prefill_s,
                records=o.records, device_index=a.device_index,
            )
            for a, o, ids in zip(assignments, outcomes, prompt_ids, strict=True)
        ]
