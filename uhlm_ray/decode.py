"""The decoding loop for one prompt and one method, emitting one RoundRecord per round.

A round of a hybrid method (HLM, Rand-HLM, U-HLM, SLM), as the U-HLM paper's Steps 1-3:
  SLM forward -> x = softmax(z), draft d ~ x, u from the same z -> policy: send? -> if sent: payload over the
  modelled uplink, LLM catch-up forward -> y, verify (accept / resample) -> both sides append r(t).
The LLM-alone reference samples r(t) ~ y every round.

Evaluation mode scores skipped rounds too, on a separate LLM session so that the verifier's catch-up is timed as it
would really happen; that work is kept off both clocks.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from uhlm_ray.channel import draw_fading_gain, linear_to_db, mean_snr, uplink_seconds
from uhlm_ray.config import METHODS, EvaluateConfig
from uhlm_ray.models.loading import ModelPair
from uhlm_ray.models.session import CausalSession, PrefillStore
from uhlm_ray.payload import full_payload_bits
from uhlm_ray.policies import AlwaysSend, NeverSend, RandomSend, SkipPolicy, UncertaintyThreshold
from uhlm_ray.records import NAN, RoundRecord
from uhlm_ray.rng import Purpose, keyed_rng
from uhlm_ray.uncertainty import (
    confidence_uncertainty,
    draw_temperatures,
    entropy_uncertainty,
    temperature_perturbation,
)
from uhlm_ray.validation import ConfigError
from uhlm_ray.verify import rejection_probability, sample_inverse_cdf, verify_draft


def make_policy(*, method: str, cfg: EvaluateConfig, send_prob: float | None = None) -> SkipPolicy | None:
    """The skip policy of a method; None for the LLM alone."""
    if method == "llm":
        return None
    if method == "slm":
        return NeverSend()
    if method == "hlm":
        return AlwaysSend()
    if method == "rand_hlm":
        chosen = send_prob if send_prob is not None else cfg.policy.send_prob
        return RandomSend(send_prob=0.5 if chosen is None else chosen)
    if method == "u_hlm":
        return UncertaintyThreshold(u_th=cfg.policy.u_th)
    raise ConfigError(f"method={method!r} is not one of {list(METHODS)}")


def chat_prompt_ids(*, tokenizer, prompt: str) -> list[int]:
    """The prompt as the user turn of the models' chat template, ready for generation."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return list(ids["input_ids"] if isinstance(ids, dict) else ids)
    return tokenizer(prompt)["input_ids"]


def measure_uncertainty(
    *, logits: torch.Tensor, probs: torch.Tensor, draft: int, cfg: EvaluateConfig, rng: np.random.Generator
) -> float:
    """u(t) by the configured measure, from the logits z [V] and x [V] that produced the draft."""
    measure = cfg.uncertainty.measure
    if measure == "entropy":
        return float(entropy_uncertainty(probs=probs.unsqueeze(0))[0])
    if measure == "confidence":
        return float(confidence_uncertainty(probs=probs.unsqueeze(0))[0])
    thetas = draw_temperatures(rng=rng, k=cfg.uncertainty.k, theta_max=cfg.uncertainty.theta_max)  # [1, K]
    uniforms = rng.random(size=thetas.shape)  # [1, K]
    u = temperature_perturbation(
        logits=logits.unsqueeze(0),
        draft=torch.tensor([draft]),
        thetas=torch.from_numpy(thetas),
        uniforms=torch.from_numpy(uniforms),
    )
    return float(u[0])


def _uniform(*, seed: int, device: int, prompt: int, round_index: int, purpose: Purpose) -> torch.Tensor:
    rng = keyed_rng(seed=seed, device=device, prompt=prompt, round_index=round_index, purpose=purpose)
    return torch.tensor([rng.random()])


def decode_prompt(
    *,
    pair: ModelPair,
    prompt_ids: list[int],
    prompt_index: int,
    method: str,
    cfg: EvaluateConfig,
    policy: SkipPolicy | None,
    device_index: int = 0,
    prefills: PrefillStore | None = None,
) -> tuple[list[int], list[RoundRecord], str, float]:
    """Decode one prompt; returns (response tokens, records, stop reason, prefill seconds)."""
    seed = cfg.decode.seed
    keys = dict(seed=seed, device=device_index, prompt=prompt_index)
    snr_mean = mean_snr(cfg.channel)
    bits = full_payload_bits(vocab_size=pair.vocab_size, cfg=cfg.payload)
    evaluate = method in cfg.decode.evaluation_methods and method not in ("llm", "hlm")

    # the prompt reaches the base station once, before the first round; prefills are kept off both clocks
    slm = CausalSession(model=pair.slm, prompt_ids=prompt_ids, prefills=prefills) if method != "llm" else None
    llm = CausalSession(model=pair.llm, prompt_ids=prompt_ids, prefills=prefills)
    prefill_s = llm.prefill_s + (slm.prefill_s if slm is not None else 0.0)
    oracle = CausalSession(model=pair.llm, prompt_ids=prompt_ids, prefills=prefills) if evaluate else None

    tokens: list[int] = []
    records: list[RoundRecord] = []
    stop_reason = "max_new_tokens"
    for t in range(1, cfg.decode.max_new_tokens + 1):
        round_start = time.perf_counter()
        if slm is None:
            record = _llm_round(llm=llm, t=t, keys=keys, method=method)
        else:
            record, oracle_s = _hybrid_round(
                slm=slm, llm=llm, oracle=oracle, t=t, keys=keys, method=method, cfg=cfg, policy=policy,
                snr_mean=snr_mean, bits=bits,
            )
            record.wall_s -= oracle_s
        record.wall_s += time.perf_counter() - round_start
        records.append(record)
        tokens.append(record.token)
        for session in (slm, llm, oracle):
            if session is not None:
                session.append(record.token)
        if record.token in pair.eos_token_ids:
            stop_reason = "eos"
            break
    return tokens, records, stop_reason, prefill_s


def _llm_round(*, llm: CausalSession, t: int, keys: dict, method: str) -> RoundRecord:
    """The LLM alone: r(t) ~ y."""
    forward_start, seen_before = time.perf_counter(), llm.processed
    z = llm.next_logits()  # [V]
    tau_llm = time.perf_counter() - forward_start
    y = torch.softmax(z, dim=-1)  # [V] float32
    token = int(sample_inverse_cdf(probs=y.unsqueeze(0), uniform=_uniform(**keys, round_index=t,
                                                                          purpose=Purpose.LLM_SAMPLE))[0])
    return RoundRecord(
        method=method, prompt_index=keys["prompt"], round=t, draft=token, token=token, uncertainty=NAN,
        sent=False, x_d=NAN, y_d=float(y[token]), beta=NAN, accepted=None, resampled=None, payload_bits=0,
        catch_up_tokens=llm.processed - seen_before, fading_gain=NAN, snr_db=NAN, tau_up_s=0.0, tau_slm_s=0.0,
        tau_uncertainty_s=0.0, tau_llm_s=tau_llm, wall_s=0.0,
    )


def _hybrid_round(
    *,
    slm: CausalSession,
    llm: CausalSession,
    oracle: CausalSession | None,
    t: int,
    keys: dict,
    method: str,
    cfg: EvaluateConfig,
    policy: SkipPolicy,
    snr_mean: float,
    bits: int,
) -> tuple[RoundRecord, float]:
    """One round of Steps 1-2; returns the record and the evaluation-only seconds spent inside it."""
    # Step 1: the SLM drafts d ~ x from its logits z
    forward_start = time.perf_counter()
    z = slm.next_logits()  # [V] float32
    tau_slm = time.perf_counter() - forward_start
    x = torch.softmax(z, dim=-1)  # [V] eq. 1
    draft = int(sample_inverse_cdf(probs=x.unsqueeze(0), uniform=_uniform(**keys, round_index=t,
                                                                          purpose=Purpose.DRAFT))[0])

    # u(t) from the same logits, recorded for every method (Fig. 3 and 5 need it) but on the clocks only for
    # policies that use it
    u_start = time.perf_counter()
    rng = keyed_rng(**keys, round_index=t, purpose=Purpose.TEMPERATURES)
    u = measure_uncertainty(logits=z, probs=x, draft=draft, cfg=cfg, rng=rng)
    spent = time.perf_counter() - u_start
    tau_u, eval_s = (spent, 0.0) if policy.needs_uncertainty else (0.0, spent)

    sent = policy.should_send(uncertainty=u, rng=keyed_rng(**keys, round_index=t, purpose=Purpose.POLICY))
    gain = draw_fading_gain(rng=keyed_rng(**keys, round_index=t, purpose=Purpose.FADING), fading=cfg.channel.fading)
    snr = snr_mean * gain

    x_d = float(x[draft])
    y_d, beta, accepted, resampled, tau_llm, catch_up, token = NAN, NAN, None, None, 0.0, 0, draft
    if sent:
        # Step 2: the LLM catches up on every token it has not seen, in one forward pass, then verifies d
        forward_start, seen_before = time.perf_counter(), llm.processed
        y = torch.softmax(llm.next_logits(), dim=-1)  # [V]
        tau_llm = time.perf_counter() - forward_start
        catch_up = llm.processed - seen_before  # 0 in round 1: the prompt prefill already gave y
        verdict = verify_draft(
            x=x.unsqueeze(0), y=y.unsqueeze(0), draft=torch.tensor([draft]),
            u_accept=_uniform(**keys, round_index=t, purpose=Purpose.ACCEPT),
            u_resample=_uniform(**keys, round_index=t, purpose=Purpose.RESAMPLE),
            validate=False,  # softmax outputs: finite, normalised, right length by construction
        )
        token, accepted, resampled = int(verdict.token[0]), bool(verdict.accepted[0]), bool(verdict.recovered[0])
        y_d, beta = float(y[draft]), float(verdict.beta[0])
    elif oracle is not None:
        eval_start = time.perf_counter()
        y_d = float(torch.softmax(oracle.next_logits(), dim=-1)[draft])
        beta = float(rejection_probability(x_d=torch.tensor([x_d]), y_d=torch.tensor([y_d]))[0])
        eval_s += time.perf_counter() - eval_start

    record = RoundRecord(
        method=method, prompt_index=keys["prompt"], round=t, draft=draft, token=token, uncertainty=u, sent=sent,
        x_d=x_d, y_d=y_d, beta=beta, accepted=accepted, resampled=resampled,
        payload_bits=bits if sent else 0, catch_up_tokens=catch_up, fading_gain=gain,
        snr_db=linear_to_db(snr) if snr > 0 else -math.inf,
        tau_up_s=uplink_seconds(bits=bits, bandwidth_hz=cfg.channel.bandwidth_hz, snr=snr) if sent else 0.0,
        tau_slm_s=tau_slm, tau_uncertainty_s=tau_u, tau_llm_s=tau_llm, wall_s=0.0,
    )
    return record, eval_s
