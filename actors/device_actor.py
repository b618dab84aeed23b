"""A Ray actor holding one SLM copy for several simulated devices, decoding their prompts in lockstep.

One call (`run_prompts`) decodes every prompt the driver hands the actor, at most `width` at once (as many as
the actor has devices), with one batched SLM forward per round and every sent draft of the round in flight to the
Serve verifier at once. A finished prompt's place goes to the next prompt at once (continuous batching,
`decode.Slots`), and the call streams each result back the moment its prompt ends (a Ray generator), so the
driver stores it before the others finish. The actor is restartable (`max_restarts`); after a crash the driver
hands the restarted actor the prompts it has not stored, which decode again from the start with the same keyed
draws, so their results are the same and each prompt is stored exactly once.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
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
    """One prompt for one device."""

    device_index: int
    prompt_index: int
    example_id: str
    reference: str
    prompt: str
    distance_m: float
    fixed_drafts: int | None = None  # this device's block length under a Multi-SPIN plan (cell.draft_lengths)


def session_id(*, run: str, device_index: int, prompt_index: int) -> str:
    """Deterministic, so a prompt decoded again after a crash reopens (and so replaces) the session its crashed
    attempt left."""
    return f"{run}:d{device_index}:p{prompt_index}"


# `pid` answers from its own thread while `run_prompts` streams (the kill test asks it mid-stream)
@ray.remote(max_restarts=3, max_task_retries=3, concurrency_groups={"control": 1})
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

    @ray.method(concurrency_group="control")
    def pid(self) -> int:
        return os.getpid()

    @ray.method(max_task_retries=0)  # a crashed stream is handed again by the driver, without the stored prompts
    def run_prompts(self, assignments: list[Assignment], width: int) -> Iterator[PromptResult]:
        """Decode `assignments` (in order, at most `width` at once) and yield each result as its prompt ends."""
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
        finished: queue.Queue = queue.Queue()  # (index, outcome), then None at the end, or the decode's exception

        def decode() -> None:  # the lockstep calls back from inside its loop; a generator must yield from outside
            try:
                decode_lockstep(slm=self.slm, verifier=self.client, jobs=jobs, cfg=cfg,
                                eos_token_ids=self.eos_token_ids, prefixes=self.prefixes, width=width,
                                on_done=lambda i, outcome: finished.put((i, outcome)))
                finished.put(None)
            except BaseException as err:  # noqa: BLE001 - re-raised in the actor's thread below
                finished.put(err)

        worker = threading.Thread(target=decode, name="lockstep", daemon=True)
        worker.start()
        while (item := finished.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            i, outcome = item
            a = assignments[i]
            yield PromptResult(
                method=cfg.cell.method, prompt_index=a.prompt_index, example_id=a.example_id,
                reference=a.reference, response=self.slm.tokenizer.decode(outcome.tokens, skip_special_tokens=True),
                tokens=outcome.tokens, stop_reason=outcome.stop_reason, prompt_tokens=len(prompt_ids[i]),
                prefill_s=outcome.prefill_s, records=outcome.records, device_index=a.device_index,
            )
        worker.join()
