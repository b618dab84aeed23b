"""Every stopping rule replayed on the coupled LLM's own responses, beside the oracle stop: how close the block
method comes to its ceiling on a data set, on the paper's clock.

    .venv/bin/python bench/stop_replay.py [--prompts 16] [--tokens 128] [overrides...]

Under coupled sampling (`decode.sampling=coupled`, ids payload) the response is the LLM's own sample under the
session's noise whatever the blocks are (uhlm_ray/sampling/coupling.py): a stopping rule only chooses where blocks
end, and so how many drafts, uploads and LLM passes the same tokens cost. One decode of the LLM alone and one
teacher-forced SLM pass over its response therefore give, at every response position j, what the device would see
there: the SLM's race winner d_j (keyed by position, as in the decoder), whether it is the LLM's token t_j, its
x_d, and its uncertainty u_j (eq. 6-7, temperatures keyed by position). Each rule of uhlm_ray/device/stopping.py is
then run on them as the block decoder runs it (`begin_round`, `go_on` after each draft, `observe` after each
verdict; capped at block.max_drafts and the token budget), and each round is priced on the decode-time clock:
k (tau_SLM + tau_u) + E[upload of k ids] + tau_LLM(pass of 1 + k) + the downlink's answer, with the upload's
expected time under the configured link model (blind: no fade known). The LLM alone costs tau_LLM a token.

The oracle stop knows the matches: it drafts the whole run of matching drafts (up to block.max_drafts) and stops
before the first mismatch, so every round reaches as far as a round can (the fewest rounds) and a draft is wasted
only where a round starts on a mismatch: it bounds what a rule deciding from the device's side can reach
(tests/test_bench_stop_replay.py checks it against every rule on random match sequences).

One approximation: a draft after a block's first mismatch is drawn, in the decoder, on the SLM's own (wrong)
prefix; here it has the features of the same position on the LLM's prefix. It is rejected either way; only where a
rule stops after it, and so the round's drafting time, can differ.

Prints, per rule, tok/s, the ratio to the LLM alone with its 95% bootstrap interval over prompts (paired: the same
prompts and tokens), acceptance (accepted drafts / drafts) and tokens per round.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time

import numpy as np
import torch

from uhlm_ray.config import EvaluateConfig, load_config
from uhlm_ray.device.stopping import DraftStep, StopRule, make_stop_rule
from uhlm_ray.device.uncertainty import draw_temperatures, temperature_perturbation
from uhlm_ray.experiments.datasets import load_examples
from uhlm_ray.experiments.evaluate import run_method
from uhlm_ray.link.channel import expected_upload_seconds
from uhlm_ray.link.fading import DecodeClock
from uhlm_ray.link.payload import index_bits
from uhlm_ray.measures.intervals import clustered_ratio_vs
from uhlm_ray.models import load_pair, response_logits
from uhlm_ray.models.chat import chat_prompt_ids
from uhlm_ray.sampling.coupling import race_winner
from uhlm_ray.sampling.rng import Purpose, SessionKey
from uhlm_ray.snr import mean_snr

PAPER_CLOCK = ["clock.tau_slm_ms=24.6", "clock.tau_llm_ms=104.6", "clock.llm_pass=flat"]
RULES = [  # (label, overrides); "oracle" is the replay's own
    *[(f"fixed n = {n}", ["block.stop=fixed", f"block.fixed_drafts={n}"]) for n in (1, 2, 3, 4, 5)],
    *[(f"uncertainty stop u <= {u}", ["block.stop=uncertainty", f"block.stop_u_th={u}"]) for u in (0.1, 0.2, 0.3)],
    ("confidence stop 0.4 (HF's, re-fitted)", ["block.stop=confidence"]),
    ("confidence stop 0.4, up to 20 drafts", ["block.stop=confidence", "block.max_drafts=20"]),
    ("channel-aware stop", ["block.stop=channel_aware"]),
    ("oracle stop (knows the matches)", ["block.max_drafts=20"]),
]


@dataclasses.dataclass(frozen=True)
class Position:
    """What the device sees at one response position, on the LLM's prefix."""

    match: bool  # d_j == t_j: the SLM's race winner is the LLM's token
    x_d: float
    uncertainty: float


def positions(*, pair, prompt_ids: list[int], response: list[int], key: SessionKey,
              cfg: EvaluateConfig) -> list[Position]:
    """The SLM teacher-forced over the LLM's response: each position's race winner, its x_d and its u."""
    logits = response_logits(model=pair.slm, prompt_ids=prompt_ids, response=response)  # [R, V]: position j's x
    probs = torch.softmax(logits.double(), dim=-1)  # [R, V]
    out = []
    for j, token in enumerate(response):
        draft = race_winner(probs=probs[j], key=key, position=j + 1)
        rng = key.rng(round_index=j + 1, purpose=Purpose.TEMPERATURES)
        thetas = draw_temperatures(rng=rng, k=cfg.uncertainty.k, theta_max=cfg.uncertainty.theta_max)  # [1, K]
        u = temperature_perturbation(logits=logits[j:j + 1], draft=torch.tensor([draft]),
                                     thetas=torch.from_numpy(thetas),
                                     uniforms=torch.from_numpy(rng.random(size=thetas.shape)))
        out.append(Position(match=draft == token, x_d=float(probs[j, draft]), uncertainty=float(u[0])))
    return out


def replay(*, seen: list[Position], rule: StopRule | None, cfg: EvaluateConfig, clock: DecodeClock,
           upload_s) -> tuple[int, float, int, int, int]:
    """One prompt's rounds under a rule (None: the oracle): (tokens, seconds, drafts, accepted, rounds)."""
    max_drafts = cfg.block.max_drafts
    at = seconds = drafts = accepted = rounds = 0
    while at < len(seen):
        budget = min(max_drafts, len(seen) - at)
        if rule is None:  # the run of matching drafts; at least one draft a block
            k = 0
            while k < min(budget, len(seen) - at - 1) and seen[at + k].match:  # the last token can be the bonus
                k += 1
            k = max(k, 1)
        else:
            rule.begin_round(catch_up=1, upload_s=upload_s)
            block: list[DraftStep] = []
            while True:
                p = seen[at + len(block)]
                block.append(DraftStep(uncertainty=p.uncertainty, x_d=p.x_d, tau_slm_s=clock.tau_slm_s))
                if len(block) >= budget or not rule.go_on(step=block[-1], block=block):
                    break
            k = len(block)
        run = 0
        while run < k and seen[at + run].match:
            run += 1
        if rule is not None:
            rule.observe(block=block, num_accepted=run)
        emitted = min(run + 1, len(seen) - at)  # the kept drafts and the recovered or bonus token
        measure_s = clock.tau_measure_s if rule is not None and rule.needs_uncertainty else 0.0
        seconds += k * (clock.tau_slm_s + measure_s) + upload_s(k) + clock.llm_pass_seconds(1 + k) + \
            clock.block_answer_seconds(k)
        at, drafts, accepted, rounds = at + emitted, drafts + k, accepted + run, rounds + 1
    return at, seconds, drafts, accepted, rounds


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    base = [f"data.n_prompts={args.prompts}", f"decode.max_new_tokens={args.tokens}", "decode.evaluation_methods=[]",
            "runtime.share_prefixes=false", "runtime.batch_size=1", "decode.sampling=coupled", "block.payload=ids",
            *PAPER_CLOCK, *args.overrides]
    cfg = load_config(overrides=base)
    pair = load_pair(cfg.model)
    examples = load_examples(cfg.data)
    start = time.perf_counter()
    responses = run_method(pair=pair, examples=examples, method="llm", cfg=cfg, encoder=None, store=None)
    seen = [positions(pair=pair, prompt_ids=chat_prompt_ids(tokenizer=pair.tokenizer, prompt=e.prompt),
                      response=r.tokens, key=SessionKey(seed=cfg.decode.seed, device=0, prompt=r.prompt_index),
                      cfg=cfg) for r, e in zip(responses, examples, strict=True)]
    print(f"[replay] decoded and scored {len(seen)} responses in {time.perf_counter() - start:.0f} s", flush=True)

    clock = DecodeClock.for_run(cfg, measure=cfg.uncertainty.measure, vocab_size=pair.vocab_size)
    snr = mean_snr(cfg.channel)

    @functools.cache
    def upload_s(k: int) -> float:
        return expected_upload_seconds(bits=k * index_bits(vocab_size=pair.vocab_size), channel=cfg.channel,
                                       mean_snr=snr)

    tokens = np.array([[len(s)] for s in seen], dtype=float)  # [prompts, 1]
    llm_s = tokens * clock.tau_llm_s
    matches = np.mean([p.match for s in seen for p in s])
    print(f"\n{len(seen)} prompts of data set {cfg.data.name!r} x up to {args.tokens} tokens ({int(tokens.sum())} "
          f"tokens); coupled ids; {cfg.channel.model} at {10 * np.log10(snr):.2f} dB ({cfg.channel.process}), "
          f"expected upload of 1 / 3 ids {upload_s(1) * 1e3:.1f} / {upload_s(3) * 1e3:.1f} ms; tau_SLM "
          f"{clock.tau_slm_s * 1e3:.1f} ms, tau_LLM {clock.tau_llm_s * 1e3:.1f} ms (flat pass); the LLM alone "
          f"{1 / clock.tau_llm_s:.2f} tok/s; the SLM's race winner is the LLM's token at {matches:.3f} of positions")
    print("\n| stop rule | tok/s | x LLM alone [95% CI] | acceptance | tokens / round |")
    print("|---|---:|---:|---:|---:|")
    for label, overrides in RULES:
        rule_cfg = load_config(overrides=[*base, *overrides])
        rows = [replay(seen=s, rule=None if label.startswith("oracle") else
                       make_stop_rule(cfg=rule_cfg, vocab_size=pair.vocab_size),
                       cfg=rule_cfg, clock=clock, upload_s=upload_s) for s in seen]
        got = np.array(rows, dtype=float)  # [prompts, 5]
        ratio, low, high = clustered_ratio_vs(num=got[:, :1], den=got[:, 1:2], ref_num=tokens, ref_den=llm_s)
        print(f"| {label} | {got[:, 0].sum() / got[:, 1].sum():.2f} | {ratio:.3f} [{low:.3f}, {high:.3f}] | "
              f"{got[:, 3].sum() / got[:, 2].sum():.3f} | {got[:, 0].sum() / got[:, 4].sum():.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
