"""The decoding loop: devices (device/) and the verifier (base_station/) wired together, one record per round.

`decode_lockstep` runs several device decoders that share one SLM in lockstep: one batched SLM forward per round for
every unfinished device, then one verification call carrying every sent draft. It does not know how requests reach
the verifier: the core passes an in-process `Verifier`, the Ray device actor passes a Serve client, so the one-device
cell and the core loop are the same code. The block method's rounds (`block_hlm`) run the same way: each drafting
step is one batched SLM forward over the devices still drafting, then one call verifies every uploaded block.
`decode_llm_lockstep` is the LLM-alone reference (r(t) ~ y every round) for several prompts the same way.
`decode_batch` runs several prompts of one method in-process (what a trial does, `runtime.batch_size` at a time);
`decode_prompt` is its single-prompt case. Every draw is keyed by (seed, device, prompt, round), so a prompt's tokens
do not depend on the batch it is decoded in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from uhlm_ray.base_station.verifier import Verifier
from uhlm_ray.config import METHODS, EvaluateConfig
from uhlm_ray.device.block_decoder import BlockDecoder
from uhlm_ray.device.decoder import DeviceDecoder, PerturbedLogits, keyed_uniform
from uhlm_ray.device.policies import (
    PAPER_TAU_LLM_MS,
    AlwaysSend,
    ChannelAwareThreshold,
    NeverSend,
    RandomSend,
    SkipPolicy,
    UncertaintyThreshold,
)
from uhlm_ray.device.stopping import make_stop_rule
from uhlm_ray.device.uncertainty import draw_dropout_probs
from uhlm_ray.models.loading import LoadedModel, ModelPair
from uhlm_ray.models.prefix_cache import PrefixCache
from uhlm_ray.models.session import CausalSession, forward_sessions, mc_dropout_logits
from uhlm_ray.protocol import BlockRequest, BlockResult, Reopen, Scored, VerifyRequest, VerifyResult
from uhlm_ray.records import NAN, RoundRecord
from uhlm_ray.sampling.coupling import race_winner
from uhlm_ray.sampling.rng import Purpose, SessionKey
from uhlm_ray.sampling.verify import sample_inverse_cdf
from uhlm_ray.snr import mean_snr
from uhlm_ray.validation import ConfigError


class VerifierClient(Protocol):
    """What the loop needs of a verifier, in-process or remote. A remote one may lose a session (a replica dies):
    it then calls `reopen(session_id)`, which opens it again as it was, and retries."""

    def open(self, *, session_id: str, prompt_ids: list[int], key: SessionKey) -> float: ...

    def verify(self, requests: list[VerifyRequest], *, reopen: Reopen | None = None) -> list[VerifyResult]: ...

    def verify_blocks(self, requests: list[BlockRequest], *, reopen: Reopen | None = None) -> list[BlockResult]: ...

    def score(self, *, session_id: str, new_tokens: list[int], reopen: Reopen | None = None,
              position: int | None = None) -> Scored: ...

    def score_batch(self, *, items: list[tuple[str, list[int]]], reopen: Reopen | None = None,
                    positions: list[int] | None = None) -> list[Scored]: ...

    def close(self, *, session_id: str) -> bool: ...


def reopener(*, verifier: VerifierClient, jobs: list[DeviceJob], decoders: list) -> Reopen:
    """Rebuild a lost session as the verifier held it: the prompt and every response token it had processed."""
    index = {job.session_id: i for i, job in enumerate(jobs)}

    def reopen(session_id: str) -> None:
        i = index[session_id]
        decoder = decoders[i]
        verifier.open(session_id=session_id, prompt_ids=jobs[i].prompt_ids + decoder.tokens[:decoder.llm_seen],
                      key=jobs[i].key)

    return reopen


def make_policy(*, method: str, cfg: EvaluateConfig, send_prob: float | None = None) -> SkipPolicy | None:
    """The skip policy of a method; None for the LLM alone and the block method (its stopping rule decides)."""
    if method in ("llm", "block_hlm"):
        return None
    if method == "slm":
        return NeverSend()
    if method == "hlm":
        return AlwaysSend()
    if method == "rand_hlm":
        chosen = send_prob if send_prob is not None else cfg.policy.send_prob
        return RandomSend(send_prob=0.5 if chosen is None else chosen)
    if method in ("u_hlm", "cu_hlm"):
        u_th = cfg.cu_hlm.u_th if method == "cu_hlm" else cfg.policy.u_th
        if cfg.policy.channel_aware:
            tau_llm_s = (cfg.clock.tau_llm_ms or PAPER_TAU_LLM_MS) / 1e3
            return ChannelAwareThreshold(u_th=u_th, fit_a=cfg.policy.fit_a, fit_b=cfg.policy.fit_b,
                                         tau_llm_s=tau_llm_s)
        return UncertaintyThreshold(u_th=u_th)
    raise ConfigError(f"method={method!r} is not one of {list(METHODS)}")


def is_exact(*, method: str, cfg: EvaluateConfig) -> bool:
    """Whether a method's configuration is lossless (its output distributed as the LLM's), whatever one run did: a
    lossy setting that happened to skip nothing is still lossy. Skipping policies are lossy; HLM and the block
    method are exact unless a missed deadline keeps a draft (`deadline_mode=fallback`) or the block commits drafts
    below `block.skip_u_th` unverified."""
    fallback = cfg.channel.deadline_ms is not None and cfg.channel.deadline_mode == "fallback"
    if method == "llm":
        return True
    if method == "hlm":
        return not fallback
    if method == "block_hlm":
        return cfg.block.skip_u_th is None and not fallback
    return False


def evaluates(*, method: str, cfg: EvaluateConfig) -> bool:
    """Whether skipped rounds are scored by the LLM too (HLM sends all; the LLM alone has no drafts)."""
    return method in cfg.decode.evaluation_methods and method not in ("llm", "hlm")


@dataclass
class DeviceJob:
    """One prompt for one device: what `decode_lockstep` needs to start it."""

    session_id: str
    key: SessionKey
    prompt_ids: list[int]
    method: str
    policy: SkipPolicy | None  # None for the block method
    mean_snr: float  # the device's average SNR (its distance in a cell)
    paraphrase_ids: list[list[int]] | None = None  # prompt perturbation's K paraphrased prompts, chat-templated
    fixed_drafts: int | None = None  # block.stop=fixed: this device's own block length (a cell's plan)


@dataclass
class DeviceOutcome:
    tokens: list[int]
    records: list[RoundRecord]
    stop_reason: str
    prefill_s: float  # SLM + LLM prompt prefill, off both clocks


OnDone = Callable[[int, DeviceOutcome], None]  # called with a job's index the moment that job has finished


def decode_lockstep(
    *,
    slm: LoadedModel,
    verifier: VerifierClient,
    jobs: list[DeviceJob],
    cfg: EvaluateConfig,
    eos_token_ids: frozenset[int],
    prefixes: PrefixCache | None = None,
    on_done: OnDone | None = None,
    width: int | None = None,
) -> list[DeviceOutcome]:
    """Decode every job to the end, a round at a time for all of them together; `on_done` hears of each job as
    soon as it has finished, so that its result can be stored before the others end. At most `width` jobs decode
    at once (None: all), and a finished job's place goes to the next job at once (`Slots`)."""
    if any(job.method == "block_hlm" for job in jobs):
        if any(job.method != "block_hlm" for job in jobs):
            raise ConfigError("decode_lockstep: block_hlm jobs cannot share a lockstep with one-draft methods")
        return decode_blocks_lockstep(slm=slm, verifier=verifier, jobs=jobs, cfg=cfg, eos_token_ids=eos_token_ids,
                                      prefixes=prefixes, on_done=on_done, width=width)
    def decoder(job: DeviceJob) -> DeviceDecoder:
        return DeviceDecoder(
            key=job.key, method=job.method, cfg=cfg, policy=job.policy, mean_snr=job.mean_snr,
            vocab_size=slm.vocab_size, eos_token_ids=eos_token_ids, evaluate=evaluates(method=job.method, cfg=cfg),
            support=slm.draft_support,
        )

    devices = Devices(slm=slm, verifier=verifier, jobs=jobs, prefixes=prefixes, decoder=decoder, width=width)
    sessions, decoders, paraphrased, prefill_s = devices.sessions, devices.decoders, devices.paraphrased, \
        devices.prefill_s
    reopen = reopener(verifier=verifier, jobs=jobs, decoders=decoders)
    active = devices.slots.active
    while active:
        start = time.perf_counter()
        forward_sessions([sessions[i] for i in active])  # Step 1's SLM forward, batched over devices
        drafts = {i: decoders[i].draft(logits=sessions[i].next_logits(), tau_slm_s=sessions[i].timing.forward_s,
                                       perturbed=perturbed_passes(measure=decoders[i].measure, session=sessions[i],
                                                                  paraphrased=paraphrased[i], cfg=cfg))
                  for i in active}
        sent = [i for i in active if drafts[i].sent]
        verify_start = time.perf_counter()
        replies = verifier.verify([decoders[i].request(session_id=jobs[i].session_id, draft=drafts[i])
                                   for i in sent], reopen=reopen) if sent else []
        verify_wall = time.perf_counter() - verify_start
        results: dict[int, VerifyResult] = dict(zip(sent, replies, strict=True))
        wall = time.perf_counter() - start  # the round of every device in lockstep ends together
        for i in active:
            # passes replayed from the prefix cache count as the time they took when computed
            replayed = sessions[i].timing.replayed_s + (results[i].replayed_s if i in results else 0.0)
            record = decoders[i].commit(draft=drafts[i], result=results.get(i), wall_s=wall + replayed)
            record.verify_wall_s = verify_wall + results[i].replayed_s if i in results else 0.0
            for session in (sessions[i], *paraphrased[i]):
                session.append(record.token)
        _finish_done(verifier=verifier, jobs=jobs, decoders=decoders, active=active, reopen=reopen,
                     prefill_s=prefill_s, on_done=on_done)
        active = devices.slots.retire(lambda i: decoders[i].done)
    return [_outcome(decoder=d, prefill_s=p) for d, p in zip(decoders, prefill_s, strict=True)]


def decode_blocks_lockstep(
    *,
    slm: LoadedModel,
    verifier: VerifierClient,
    jobs: list[DeviceJob],
    cfg: EvaluateConfig,
    eos_token_ids: frozenset[int],
    prefixes: PrefixCache | None = None,
    on_done: OnDone | None = None,
    width: int | None = None,
) -> list[DeviceOutcome]:
    """The block method for every job, a block round at a time for all of them together (`width`: as in
    `decode_lockstep`)."""
    def decoder(job: DeviceJob) -> BlockDecoder:
        return BlockDecoder(
            key=job.key, cfg=cfg, mean_snr=job.mean_snr,
            rule=make_stop_rule(cfg=cfg, vocab_size=slm.vocab_size, fixed_drafts=job.fixed_drafts),
            vocab_size=slm.vocab_size, eos_token_ids=eos_token_ids, evaluate=evaluates(method=job.method, cfg=cfg),
            prompt_last_token=job.prompt_ids[-1], support=slm.draft_support)

    devices = Devices(slm=slm, verifier=verifier, jobs=jobs, prefixes=prefixes, decoder=decoder, width=width)
    sessions, decoders, paraphrased, prefill_s = devices.sessions, devices.decoders, devices.paraphrased, \
        devices.prefill_s
    reopen = reopener(verifier=verifier, jobs=jobs, decoders=decoders)
    active = devices.slots.active
    while active:
        start = time.perf_counter()
        replayed = dict.fromkeys(active, 0.0)  # SLM passes replayed from the prefix cache count as computed
        drafting = list(active)
        for i in active:
            decoders[i].begin_round()
        while drafting:  # one batched SLM step for every device still drafting
            forward_sessions([sessions[i] for i in drafting])
            going = []
            for i in drafting:
                replayed[i] += sessions[i].timing.replayed_s
                perturbed = perturbed_passes(measure=decoders[i].measure, session=sessions[i],
                                             paraphrased=paraphrased[i], cfg=cfg)
                if decoders[i].add_draft(logits=sessions[i].next_logits(), tau_slm_s=sessions[i].timing.forward_s,
                                         perturbed=perturbed):
                    for session in (sessions[i], *paraphrased[i]):
                        session.append(decoders[i].last_draft)
                    going.append(i)
            drafting = going
        sent = [i for i in active if decoders[i].close_block()]
        verify_start = time.perf_counter()
        replies = verifier.verify_blocks([decoders[i].request(session_id=jobs[i].session_id)
                                          for i in sent], reopen=reopen) if sent else []
        verify_wall = time.perf_counter() - verify_start
        results: dict[int, BlockResult] = dict(zip(sent, replies, strict=True))
        wall = time.perf_counter() - start
        for i in active:
            reply = results.get(i)
            record = decoders[i].commit(result=reply, wall_s=wall + replayed[i] +
                                        (reply.replayed_s if reply is not None else 0.0))
            record.verify_wall_s = verify_wall + reply.replayed_s if reply is not None else 0.0
            drop, last, logits, follow = decoders[i].slm_rewind()
            for session in (sessions[i], *paraphrased[i]):  # back to the kept prefix, then what the LLM added
                session.discard(count=drop, last_token=last, logits=logits if session is sessions[i] else None)
                for token in follow:
                    session.append(token)
        _finish_done(verifier=verifier, jobs=jobs, decoders=decoders, active=active, reopen=reopen,
                     prefill_s=prefill_s, on_done=on_done)
        active = devices.slots.retire(lambda i: decoders[i].done)
    return [_outcome(decoder=d, prefill_s=p) for d, p in zip(decoders, prefill_s, strict=True)]


class Slots:
    """Which of `count` jobs decode now (continuous batching): at most `width` at once (None: all), in job order,
    and the moment jobs finish, the next waiting ones take their places (`open_job(i)` opens job i), so a long
    response does not leave its lockstep batch half empty while it ends. No token depends on it: every draw is
    keyed by its job and position, not by the batch."""

    def __init__(self, *, count: int, width: int | None, open_job: Callable[[int], None]) -> None:
        if width is not None and width < 1:
            raise ConfigError(f"lockstep width={width} is outside [1, inf]")
        self.width = count if width is None else width
        self.active: list[int] = []  # the jobs decoding now, in the order they were opened
        self._waiting = iter(range(count))
        self._open_job = open_job
        self._refill()

    def _refill(self) -> None:
        while len(self.active) < self.width and (i := next(self._waiting, None)) is not None:
            self._open_job(i)
            self.active.append(i)

    def retire(self, done: Callable[[int], bool]) -> list[int]:
        """Drop the finished jobs, open waiting ones in their places; the jobs decoding now."""
        self.active = [i for i in self.active if not done(i)]
        self._refill()
        return self.active


class Devices:
    """Each job's SLM session, its LLM session on the verifier, its decoder (`decoder`) and the paraphrase sessions
    the decoder's uncertainty measure needs, indexed by job and opened as `Slots` admits the job."""

    def __init__(self, *, slm: LoadedModel, verifier: VerifierClient, jobs: list[DeviceJob],
                 prefixes: PrefixCache | None, decoder: Callable[[DeviceJob], DeviceDecoder | BlockDecoder],
                 width: int | None) -> None:
        self.slm, self.verifier, self.jobs, self.prefixes, self.decoder = slm, verifier, jobs, prefixes, decoder
        self.sessions: list[CausalSession | None] = [None] * len(jobs)
        self.decoders: list = [None] * len(jobs)
        self.paraphrased: list[list[CausalSession]] = [[] for _ in jobs]
        self.prefill_s = [0.0] * len(jobs)
        self.slots = Slots(count=len(jobs), width=width, open_job=self._open)

    def _open(self, i: int) -> None:
        job = self.jobs[i]
        session = CausalSession(model=self.slm, prompt_ids=job.prompt_ids, prefixes=self.prefixes)
        llm_prefill = self.verifier.open(session_id=job.session_id, prompt_ids=job.prompt_ids, key=job.key)
        self.sessions[i], self.decoders[i] = session, self.decoder(job)
        self.paraphrased[i] = _paraphrase_sessions(slm=self.slm, job=job, measure=self.decoders[i].measure)
        self.prefill_s[i] = session.prefill_s + llm_prefill + sum(p.prefill_s for p in self.paraphrased[i])


def _outcome(*, decoder: DeviceDecoder | BlockDecoder, prefill_s: float) -> DeviceOutcome:
    return DeviceOutcome(tokens=decoder.tokens, records=decoder.records, stop_reason=decoder.stop_reason or "",
                         prefill_s=prefill_s)


def _finish_done(*, verifier: VerifierClient, jobs: list[DeviceJob], decoders: list, active: list[int],
                 reopen: Reopen, prefill_s: list[float], on_done: OnDone | None) -> None:
    """Devices done this round: the LLM scores what it has not seen (evaluation mode), then the session closes."""
    done = [i for i in active if decoders[i].done]
    unscored = [i for i in done if decoders[i].evaluate and decoders[i].unscored_tokens()]
    if unscored:  # one batched pass for every device that ended this round
        coupled = decoders[unscored[0]].coupled  # one method, one sampling mode per lockstep
        scored = verifier.score_batch(items=[(jobs[i].session_id, decoders[i].unscored_tokens()) for i in unscored],
                                      reopen=reopen,
                                      positions=[decoders[i].llm_seen + 1 for i in unscored] if coupled else None)
        for i, (probs, _, winners) in zip(unscored, scored, strict=True):
            decoders[i].finish_scoring(probs=probs, winners=winners)
    for i in done:
        verifier.close(session_id=jobs[i].session_id)
        if on_done is not None:
            on_done(i, _outcome(decoder=decoders[i], prefill_s=prefill_s[i]))


def _paraphrase_sessions(*, slm: LoadedModel, job: DeviceJob, measure: str) -> list[CausalSession]:
    """Prompt perturbation: one SLM session per paraphrased prompt, fed the same response tokens."""
    if measure != "prompt_perturbation":
        return []
    if not job.paraphrase_ids:
        raise ConfigError("uncertainty.measure='prompt_perturbation' needs the paraphrased prompts "
                          "(uhlm_ray.device.paraphrase.paraphrase_prompt_ids) in DeviceJob.paraphrase_ids")
    return [CausalSession(model=slm, prompt_ids=ids) for ids in job.paraphrase_ids]


def perturbed_passes(
    *, measure: str, session: CausalSession, paraphrased: list[CausalSession], cfg: EvaluateConfig
) -> PerturbedLogits | None:
    """The K extra SLM passes a sampling measure needs, run when the decoder measures u (so they are timed)."""
    if measure == "mc_dropout":
        def mc_dropout(rng: np.random.Generator) -> torch.Tensor:
            probs = draw_dropout_probs(rng=rng, k=cfg.uncertainty.k, p_max=cfg.uncertainty.dropout_max)
            return mc_dropout_logits(session, dropout_probs=probs.tolist(), seed=int(rng.integers(2**63 - 1)))
        return mc_dropout
    if measure == "prompt_perturbation":
        def prompt_perturbation(rng: np.random.Generator) -> torch.Tensor:
            forward_sessions(paraphrased)  # K paraphrased contexts, one batched pass
            return torch.stack([s.next_logits() for s in paraphrased])  # [K, V]
        return prompt_perturbation
    return None


def decode_prompt(
    *,
    pair: ModelPair,
    prompt_ids: list[int],
    prompt_index: int,
    method: str,
    cfg: EvaluateConfig,
    policy: SkipPolicy | None,
    device_index: int = 0,
    prefixes: PrefixCache | None = None,
    verifier: Verifier | None = None,
    paraphrase_ids: list[list[int]] | None = None,
) -> tuple[list[int], list[RoundRecord], str, float]:
    """Decode one prompt in-process; returns (response tokens, records, stop reason, prefill seconds)."""
    job = device_job(prompt_ids=prompt_ids, prompt_index=prompt_index, method=method, cfg=cfg, policy=policy,
                     device_index=device_index, paraphrase_ids=paraphrase_ids)
    (outcome,) = decode_batch(pair=pair, jobs=[job], cfg=cfg, prefixes=prefixes, verifier=verifier)
    return outcome.tokens, outcome.records, outcome.stop_reason, outcome.prefill_s


def device_job(*, prompt_ids: list[int], prompt_index: int, method: str, cfg: EvaluateConfig,
               policy: SkipPolicy | None, device_index: int = 0,
               paraphrase_ids: list[list[int]] | None = None) -> DeviceJob:
    """One prompt of a single-device run, keyed by (seed, device, prompt) whatever batch it is decoded in."""
    if policy is None and method not in ("llm", "block_hlm"):
        raise ConfigError(f"method={method!r} needs a skip policy")
    return DeviceJob(session_id=f"local-{device_index}-{prompt_index}",
                     key=SessionKey(seed=cfg.decode.seed, device=device_index, prompt=prompt_index),
                     prompt_ids=prompt_ids, method=method, policy=policy, mean_snr=mean_snr(cfg.channel),
                     paraphrase_ids=paraphrase_ids)


def decode_batch(*, pair: ModelPair, jobs: list[DeviceJob], cfg: EvaluateConfig, prefixes: PrefixCache | None = None,
                 verifier: Verifier | None = None, on_done: OnDone | None = None,
                 width: int | None = None) -> list[DeviceOutcome]:
    """Several prompts of one method in lockstep, in-process: the LLM alone, or the devices and one verifier; at
    most `width` at once, a finished prompt's place going to the next (`Slots`)."""
    if {job.method for job in jobs} == {"llm"}:
        return decode_llm_lockstep(llm=pair.llm, jobs=jobs, cfg=cfg, eos_token_ids=pair.eos_token_ids,
                                   prefixes=prefixes, on_done=on_done, width=width)
    if any(job.method == "llm" for job in jobs):
        raise ConfigError("decode_batch: the LLM alone cannot share a lockstep with hybrid methods")
    verifier = verifier or Verifier(model=pair.llm, prefixes=prefixes, fuse_prefill=cfg.runtime.fuse_llm_prefill)
    return decode_lockstep(slm=pair.slm, verifier=verifier, jobs=jobs, cfg=cfg, eos_token_ids=pair.eos_token_ids,
                           prefixes=prefixes, on_done=on_done, width=width)


def decode_llm_lockstep(
    *,
    llm: LoadedModel,
    jobs: list[DeviceJob],
    cfg: EvaluateConfig,
    eos_token_ids: frozenset[int],
    prefixes: PrefixCache | None = None,
    on_done: OnDone | None = None,
    width: int | None = None,
) -> list[DeviceOutcome]:
    """The reference for every job together: the LLM samples r(t) ~ y every round, one batched forward a round.
    Each draw is keyed by (seed, device, prompt, round), so a prompt's tokens do not depend on its batch (`width`:
    as in `decode_lockstep`)."""
    sessions: list[CausalSession | None] = [None] * len(jobs)
    tokens: list[list[int]] = [[] for _ in jobs]
    records: list[list[RoundRecord]] = [[] for _ in jobs]
    stop_reasons = ["max_new_tokens"] * len(jobs)
    outcomes: list[DeviceOutcome | None] = [None] * len(jobs)

    def open_job(i: int) -> None:
        sessions[i] = CausalSession(model=llm, prompt_ids=jobs[i].prompt_ids, prefixes=prefixes)

    slots = Slots(count=len(jobs), width=width, open_job=open_job)
    active = slots.active
    while active:
        start = time.perf_counter()
        forward_sessions([sessions[i] for i in active])
        for i in active:
            llm_session, key, t = sessions[i], jobs[i].key, len(tokens[i]) + 1  # t: this prompt's round
            y = torch.softmax(llm_session.next_logits(), dim=-1)  # [V] float32
            if cfg.decode.sampling == "coupled":  # the race every coupled method's verifier runs at position t
                token = race_winner(probs=y, key=key, position=t)
            else:
                uniform = keyed_uniform(key=key, round_index=t, purpose=Purpose.LLM_SAMPLE)
                token = int(sample_inverse_cdf(probs=y.unsqueeze(0), uniform=uniform)[0])
            records[i].append(RoundRecord(
                method="llm", prompt_index=key.prompt, round=t, draft=token, token=token, uncertainty=NAN,
                sent=False, x_d=NAN, y_d=float(y[token]), beta=NAN, accepted=None, resampled=None, payload_bits=0,
                catch_up_tokens=llm_session.timing.tokens, fading_gain=NAN, snr_db=NAN, tau_up_s=0.0,
                tau_slm_s=0.0, tau_uncertainty_s=0.0, tau_llm_s=llm_session.timing.forward_s,
                wall_s=llm_session.timing.replayed_s,  # plus the round's wall time, below
            ))
            tokens[i].append(token)
            llm_session.append(token)
            if token in eos_token_ids:
                stop_reasons[i] = "eos"
        wall = time.perf_counter() - start  # the round of every prompt in lockstep ends together
        for i in active:
            records[i][-1].wall_s += wall
            if stop_reasons[i] == "eos" or len(tokens[i]) == cfg.decode.max_new_tokens:
                outcomes[i] = DeviceOutcome(tokens=tokens[i], records=records[i], stop_reason=stop_reasons[i],
                                            prefill_s=sessions[i].prefill_s)
                if on_done is not None:
                    on_done(i, outcomes[i])
        active = slots.retire(lambda i: outcomes[i] is not None)
    return [o for o in outcomes if o is not None]
