"""Multi-SPIN's per-device block lengths against common ones, in one run: cells of `--devices` devices at random
placements, each decoded three times with the block method (fixed stop, coupled ids) and priced on the cell's slotted
clock under `cell.scheduler=multi_spin`:

- planned: each device's length from `uhlm_ray.draft_control.cell_draft_plan`;
- best common: every device at the plan's best common length;
- configured: every device at block.fixed_drafts.

    .venv/bin/python bench/draft_lengths.py [--placements 4] [--devices 8] [overrides...]

Under coupled sampling an exact method emits the LLM's own tokens whatever its block lengths, so the three runs of a
placement decode the same tokens and differ only in their rounds: the comparison is paired. Printed: per placement
the plan and the measured goodput (verified tokens per second of slots) of each, then the goodput ratios' means over
placements with 95% t-intervals. The devices decode in process (one lockstep, the in-process verifier), as the cell
job's device actors do; the clock is the configured one (the paper's taus, a flat LLM pass, by default here), the
one the plan uses.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import numpy as np
from scipy import stats

from uhlm_ray.base_station.verifier import Verifier
from uhlm_ray.cell import device_channel, device_distances, summarize_cell
from uhlm_ray.config import load_config
from uhlm_ray.decode import DeviceJob, decode_lockstep
from uhlm_ray.draft_control import cell_draft_plan
from uhlm_ray.experiments.datasets import load_examples
from uhlm_ray.experiments.evaluate import run_clock
from uhlm_ray.models import load_pair
from uhlm_ray.models.chat import chat_prompt_ids
from uhlm_ray.records import PromptResult
from uhlm_ray.sampling.rng import SessionKey
from uhlm_ray.snr import mean_snr

BASE = ["cell.method=block_hlm", "block.stop=fixed", "block.payload=ids", "decode.sampling=coupled",
        "cell.scheduler=multi_spin", "cell.draft_lengths=multi_spin", "clock.tau_slm_ms=24.6",
        "clock.tau_llm_ms=104.6", "clock.llm_pass=flat", "channel.bandwidth_hz=20000", "decode.max_new_tokens=32",
        "data.name=alpaca", "data.path=../shared/data"]


def decode_cell(*, pair, cfg, examples, first: int, drafts: dict[int, int]) -> list[PromptResult]:
    """Every device's one prompt (examples first, first + 1, ...) at its block length, in one lockstep."""
    distances = device_distances(cfg.cell)
    jobs, prompts = [], []
    for d in range(cfg.cell.n_devices):
        example = examples[(first + d) % len(examples)]
        ids = chat_prompt_ids(tokenizer=pair.tokenizer, prompt=example.prompt)
        prompts.append((example, ids))
        jobs.append(DeviceJob(session_id=f"d{d}", key=SessionKey(seed=cfg.decode.seed, device=d, prompt=first + d),
                              prompt_ids=ids, method="block_hlm", policy=None,
                              mean_snr=mean_snr(device_channel(channel=cfg.channel, distance_m=distances[d])),
                              fixed_drafts=drafts[d]))
    outcomes = decode_lockstep(slm=pair.slm, verifier=Verifier(model=pair.llm, max_sessions=len(jobs)), jobs=jobs,
                               cfg=cfg, eos_token_ids=pair.eos_token_ids)
    return [PromptResult(method="block_hlm", prompt_index=first + d, example_id=ex.id, reference=ex.reference,
                         response="", tokens=o.tokens, stop_reason=o.stop_reason, prompt_tokens=len(ids),
                         prefill_s=o.prefill_s, records=o.records, device_index=d)
            for d, ((ex, ids), o) in enumerate(zip(prompts, outcomes, strict=True))]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--placements", type=int, default=4)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    base = [*BASE, f"cell.n_devices={args.devices}", f"data.n_prompts={args.placements * args.devices}",
            *args.overrides]
    cfg0 = load_config(overrides=base)
    pair = load_pair(cfg0.model)
    examples = load_examples(cfg0.data)
    print(f"[bench] {args.placements} placements x {args.devices} devices x 1 prompt x <= "
          f"{cfg0.decode.max_new_tokens} tokens, W = {cfg0.channel.bandwidth_hz / 1e3:g} kHz, "
          f"{cfg0.channel.model} on {cfg0.channel.process}, tau_SLM {cfg0.clock.tau_slm_ms} ms, "
          f"tau_LLM {cfg0.clock.tau_llm_ms} ms", flush=True)
    rows, ratios = [], {"planned / best common": [], "planned / configured": []}
    start = time.perf_counter()
    for p in range(args.placements):
        cfg = load_config(overrides=[*base, f"cell.placement_seed={p}"])
        plan = cell_draft_plan(cfg=cfg, vocab_size=pair.vocab_size)
        n = cfg.cell.n_devices
        runs = {"planned": plan.drafts, "best common": dict.fromkeys(range(n), plan.homogeneous_drafts),
                "configured": dict.fromkeys(range(n), cfg.block.fixed_drafts)}
        goodput, tokens = {}, {}
        for name, drafts in runs.items():
            results = decode_cell(pair=pair, cfg=cfg, examples=examples, first=p * n, drafts=drafts)
            clock = run_clock(results={"block_hlm": results}, cfg=cfg, vocab_size=pair.vocab_size)
            summary = summarize_cell(results=results, distances_m=device_distances(cfg.cell), channel=cfg.channel,
                                     clock=clock, seed=cfg.decode.seed,
                                     cell=dataclasses.replace(cfg.cell, draft_lengths="configured"),
                                     per_device_summaries=False)["cell"]
            goodput[name] = float(summary["goodput"])
            tokens[name] = [r.tokens for r in results]
        same = all(tokens[name] == tokens["planned"] for name in runs)
        ratios["planned / best common"].append(goodput["planned"] / goodput["best common"])
        ratios["planned / configured"].append(goodput["planned"] / goodput["configured"])
        rows.append((p, plan, goodput, same))
        print(f"[bench] placement {p}: lengths {[plan.drafts[d] for d in range(n)]}, goodput "
              + ", ".join(f"{k} {v:.2f}" for k, v in goodput.items())
              + f" tok/s; same tokens: {same} ({time.perf_counter() - start:.0f} s)", flush=True)

    print("\n| placement | planned lengths | planned goodput (plan) | best common n | measured: planned | best common "
          "| configured | same tokens |")
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for p, plan, goodput, same in rows:
        lengths = " ".join(str(plan.drafts[d]) for d in sorted(plan.drafts))
        print(f"| {p} | {lengths} | {plan.goodput:.1f} | {plan.homogeneous_drafts} | {goodput['planned']:.2f} | "
              f"{goodput['best common']:.2f} | {goodput['configured']:.2f} | {'yes' if same else 'no'} |")
    print("\n| ratio of measured goodputs | mean | 95% t-interval over placements | placements |")
    print("|---|---:|---:|---:|")
    for name, values in ratios.items():
        mean = statistics.fmean(values)
        if len(values) > 1:
            half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values))
            interval = f"[{mean - half:.3f}, {mean + half:.3f}]"
        else:
            interval = "-"
        print(f"| {name} | {mean:.3f} | {interval} | {len(values)} |")
    print(f"\nwall time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
