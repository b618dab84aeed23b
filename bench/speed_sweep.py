"""Modelled throughput against the device's speed: the fading process in time under the fixed and the channel-aware
thresholds and the block stopping rules, with 95% intervals over prompts and fading realisations.

    .venv/bin/python bench/speed_sweep.py [--prompts 2] [--tokens 24] [--speeds 0,1,3,10,30,60,120]
        [--realisations 8] [--decoded-realisations 2] [--budget-min M] [overrides...]

Decodes the built-in prompts on the embedded pair, then prices every round on the modelled clock at each speed
(`channel.speed_kmh`; the Doppler frequency f_D = v f_c / c sets how fast h(t) changes, uhlm_ray/link/fading.py).
A fading realisation is the device's process keyed by (seed, device, prompt) (`SessionKey`, `Purpose.CHANNEL`):
realisation r is the one of seed `decode.seed + r`. Methods whose tokens do not depend on the channel (U-HLM's fixed
threshold, the block method's uncertainty and fixed stops, the LLM alone) are decoded once, on realisation 0's seed,
and re-walked at each speed on each of `--realisations` realisations (uhlm_ray/link/reprice.py). Those that read the
channel while decoding (the channel-aware threshold, the channel-aware stop) are decoded again at each speed on the
first `--decoded-realisations` of them (fewer where `--budget-min` runs out) with `decode.seed = decode.seed + r`;
one seed keys a session's fading and its token draws, so past realisation 0 their sampling is redrawn with their
fading. Every method sees the same prompts and, realisation by realisation, the same h(t). Throughput is tokens over
modelled seconds summed over the (prompt, realisation) units, its interval a bootstrap over prompts, each with its
sums over its realisations (`clustered_ratio`: a prompt's realisations share its tokens, so they are not independent
units); comparisons are paired on the prompts and on the realisations both methods have. The clock is the
paper's (tau_SLM = 24.6 ms, tau_LLM = 104.6 ms, a block's LLM pass flat up to 16 tokens, u beside the forward pass)
both while decoding and in the summaries, so the decisions and the figures use the same clock. Writes
docs/wireless/speed_throughput.png and docs/wireless/speed_sweep.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from uhlm_ray.config import ChannelConfig, load_config  # noqa: E402
from uhlm_ray.experiments.calibration import machine_name  # noqa: E402
from uhlm_ray.experiments.datasets import load_examples  # noqa: E402
from uhlm_ray.experiments.evaluate import run_method  # noqa: E402
from uhlm_ray.link.fading import doppler_hz  # noqa: E402
from uhlm_ray.link.reprice import reprice_results  # noqa: E402
from uhlm_ray.measures.clock import ModelledClock  # noqa: E402
from uhlm_ray.measures.intervals import clustered_ratio, clustered_ratio_vs, prompt_parts  # noqa: E402
from uhlm_ray.measures.metrics import rewalked  # noqa: E402
from uhlm_ray.models import load_pair  # noqa: E402
from uhlm_ray.records import PromptResult  # noqa: E402
from uhlm_ray.snr import mean_snr  # noqa: E402

PAPER_CLOCK = ["clock.tau_slm_ms=24.6", "clock.tau_llm_ms=104.6", "clock.llm_pass=flat"]
ROWS = [  # (label, method, overrides, decoded again at each speed)
    ("LLM alone", "llm", [], False),
    ("U-HLM, fixed u_th", "u_hlm", [], False),
    ("U-HLM, channel-aware u_th", "u_hlm", ["policy.channel_aware=true"], True),
    ("Block, uncertainty stop", "block_hlm", ["block.stop=uncertainty", "block.stop_u_th=0.2"], False),
    ("Block, fixed n = 3", "block_hlm", ["block.stop=fixed", "block.fixed_drafts=3"], False),
    ("Block, channel-aware stop", "block_hlm", ["block.stop=channel_aware"], True),
]
COMPARISONS = [  # (method, reference): each channel-aware rule against those it would replace, blocks vs the LLM
    ("U-HLM, channel-aware u_th", "U-HLM, fixed u_th"),
    ("Block, channel-aware stop", "Block, uncertainty stop"),
    ("Block, channel-aware stop", "Block, fixed n = 3"),
    ("Block, uncertainty stop", "LLM alone"),
]
OUT = Path(__file__).resolve().parents[1] / "docs" / "wireless"
Units = tuple[np.ndarray, np.ndarray]  # tokens and modelled seconds [prompt, realisation]


def prompt_units(*, results: list[PromptResult], clock: ModelledClock) -> Units:
    """Tokens and modelled seconds of each prompt [P], in prompt order, so that methods line up prompt by prompt."""
    ordered = sorted(results, key=lambda res: (res.device_index, res.prompt_index))
    parts = np.array([prompt_parts(res=res, clock=clock)["throughput_modelled"] for res in ordered], dtype=float)
    return parts[:, 0], parts[:, 1]


def stack_realisations(units: list[Units]) -> Units:
    """Per-realisation (tokens, seconds) [P] stacked into [P, R]."""
    return np.stack([u[0] for u in units], axis=1), np.stack([u[1] for u in units], axis=1)


def first_realisations(units: Units, count: int) -> Units:
    """The units of realisations 0 .. count - 1 (those two methods share)."""
    return units[0][:, :count], units[1][:, :count]


def stuck_units(units: Units) -> int:
    """(prompt, realisation) units with an upload that never ends (a static fade below ARQ's rate)."""
    return int(np.isinf(units[1]).sum())


def cell(value: float, low: float, high: float) -> str:
    if not math.isfinite(value):  # a ratio over a reference whose every prompt has an upload that never ends
        return "n/a"
    return f"{value:.3g} [{low:.3g}, {high:.3g}]" if math.isfinite(low) else f"{value:.3g} [n/a]"


def main(argv: list[str]) -> int:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--speeds", default="0,1,3,10,30,60,120", help="km/h, comma-separated")
    parser.add_argument("--realisations", type=int, default=8, help="fading realisations the repriced methods see")
    parser.add_argument("--decoded-realisations", type=int, default=2,
                        help="of those, how many the channel-aware methods are decoded on at each speed (at most)")
    parser.add_argument("--budget-min", type=float, default=None,
                        help="decode another realisation of the channel-aware methods only if, at the pace of the "
                             "last one, the run stays within this many minutes")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    if not 1 <= args.decoded_realisations <= args.realisations:
        parser.error("--decoded-realisations must be between 1 and --realisations")
    speeds = [float(s) for s in args.speeds.split(",")]
    base = [f"data.n_prompts={args.prompts}", f"decode.max_new_tokens={args.tokens}", "decode.evaluation_methods=[]",
            "runtime.share_prefixes=false", *PAPER_CLOCK, *args.overrides]
    cfg0 = load_config(overrides=base)
    pair = load_pair(cfg0.model)
    examples = load_examples(cfg0.data)
    # realisation r: the fading keyed by seed decode.seed + r (realisation 0 is the run's own)
    seeds = [cfg0.decode.seed + r for r in range(args.realisations)]
    # u priced as the paper does temperature perturbation (beside the forward pass), as the decoders' clock has it
    clock = ModelledClock(tau_slm=0.0246, tau_llm=0.1046, llm_pass="flat", flat_pass_tokens=16,
                          tau_measure={method: 0.0 for _, method, _, _ in ROWS})

    def decode(method: str, overrides: list[str]) -> list[PromptResult]:
        cfg = load_config(overrides=[*base, *overrides])
        start = time.perf_counter()
        results = run_method(pair=pair, examples=examples, method=method, cfg=cfg, encoder=None, store=None)
        print(f"[speed] decoded {method} {' '.join(overrides)} in {time.perf_counter() - start:.0f} s", flush=True)
        return results

    def link_at(overrides: list[str], speed: float) -> tuple[list[str], ChannelConfig]:
        at_speed = [*overrides, f"channel.speed_kmh={speed:g}"]
        return at_speed, load_config(overrides=[*base, *at_speed]).channel

    # label -> speed -> realisation -> (tokens, seconds) [P]
    found: dict[str, list[list[Units]]] = {label: [[] for _ in speeds] for label, *_ in ROWS}
    for label, method, overrides, again in ROWS:
        if again:
            continue
        decoded = decode(method, overrides)
        for i, speed in enumerate(speeds):
            _, link = link_at(overrides, speed)
            for seed in seeds:  # the same decisions, re-walked on this speed's fading, realisation `seed`
                results = reprice_results(results=decoded, channel=link, mean_snr=mean_snr(link), seed=seed,
                                          clock=clock)
                found[label][i].append(prompt_units(results=results, clock=clock))
    # realisation by realisation, so that a budget stops between whole realisations (every speed, both methods)
    for r, seed in enumerate(seeds[:args.decoded_realisations]):
        began = time.perf_counter()
        for label, method, overrides, again in ROWS:
            for i, speed in enumerate(speeds if again else []):
                at_speed, link = link_at(overrides, speed)
                # its decisions read this realisation's h(t): decoded on it, then put on the run's clock
                results = rewalked(results=decode(method, [*at_speed, f"decode.seed={seed}"]), clock=clock,
                                   channel=link, seed=seed)
                found[label][i].append(prompt_units(results=results, clock=clock))
        now = time.perf_counter()
        last = r + 1 == args.decoded_realisations
        if not last and args.budget_min is not None and now - started + (now - began) > 60 * args.budget_min:
            print(f"[speed] budget: stopping after {r + 1} decoded realisation(s)", flush=True)
            break
    units = {label: [stack_realisations(per_seed) for per_seed in per_speed] for label, per_speed in found.items()}

    estimates = {label: [clustered_ratio(num=num, den=den) for num, den in per_speed]
                 for label, per_speed in units.items()}
    comparisons = {}
    for mine, ref in COMPARISONS:
        pairs = []
        for a, b in zip(units[mine], units[ref], strict=True):
            shared = min(a[0].shape[1], b[0].shape[1])  # the realisations both have
            (num, den), (ref_num, ref_den) = first_realisations(a, shared), first_realisations(b, shared)
            pairs.append(clustered_ratio_vs(num=num, den=den, ref_num=ref_num, ref_den=ref_den))
        comparisons[(mine, ref)] = pairs
    wall = time.perf_counter() - started

    channel = cfg0.channel

    def fd(speed: float) -> float:
        return doppler_hz(speed_kmh=speed, carrier_ghz=channel.carrier_ghz)

    args.out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (label, values) in enumerate(estimates.items()):
        # methods spread a little around each speed (on the log axis) so that their bars do not hide each other
        shift = i - (len(estimates) - 1) / 2
        xs = [s * 10 ** (0.025 * shift) if s > 0 else 0.04 * shift for s in speeds]
        mid = np.array([v for v, _, _ in values])
        low = np.array([lo if math.isfinite(lo) else v for v, lo, _ in values])
        high = np.array([hi if math.isfinite(hi) else v for v, _, hi in values])
        ax.errorbar(xs, mid, yerr=[np.maximum(mid - low, 0), np.maximum(high - mid, 0)], marker="o", capsize=3,
                    label=label, linestyle="--" if "channel-aware" in label else "-")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("speed (km/h)")
    ax.set_ylabel("modelled throughput (tokens/s), 95% interval")
    ax.set_title(f"{channel.model} uplink, {channel.process} fading at {channel.carrier_ghz:g} GHz, "
                 f"{10 * math.log10(mean_snr(channel)):.1f} dB; {args.prompts} prompts x {args.realisations} "
                 f"fadings", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "speed_throughput.png", dpi=120)

    params = next(pair.slm.model.parameters())
    decoded_count = min(units[label][0][0].shape[1] for label, *_, again in ROWS if again)
    header = "| method | realisations | " + " | ".join(f"{s:g} km/h (f_D {fd(s):.0f} Hz)" for s in speeds) + " |"
    rule = "|---|---:|" + "---:|" * len(speeds)
    lines = [f"# Modelled throughput against speed ({channel.model}, {channel.process}, "
             f"{channel.carrier_ghz:g} GHz)", "",
             f"`.venv/bin/python bench/speed_sweep.py {' '.join(argv)}`: {len(examples)} built-in prompts x up to "
             f"{args.tokens} tokens, the paper's clock, average SNR {10 * math.log10(mean_snr(channel)):.1f} dB; "
             f"{machine_name(torch.device('cpu'))}, {params.dtype}; {wall / 60:.1f} min wall.", "",
             "Tokens per second on the modelled clock, total tokens over total seconds of the (prompt, realisation) "
             "units, with its 95% interval by bootstrap over prompts (each with its sums over its realisations). "
             f"Repriced methods: {args.realisations} fading realisations per prompt; channel-aware methods: "
             f"the first {decoded_count} of them, decoded on each"
             + (f" (of {args.decoded_realisations} asked; --budget-min ran out)"
                if decoded_count < args.decoded_realisations else "") + ".", "",
             header, rule]
    lines += [f"| {label} | {units[label][0][0].shape[1]} | " + " | ".join(cell(*v) for v in values) + " |"
              for label, values in estimates.items()]
    lines += ["", "Paired on the same prompts and the realisations both methods have: throughput of the first over "
              "the second, 95% interval (an interval that contains 1 does not tell them apart).", "",
              header.replace("| method | realisations |", "| comparison | realisations |"), rule]
    lines += [f"| {mine} / {ref} | {min(units[mine][0][0].shape[1], units[ref][0][0].shape[1])} | "
              + " | ".join(cell(*v) for v in values) + " |" for (mine, ref), values in comparisons.items()]
    stuck = {label: [stuck_units(u) for u in per_speed] for label, per_speed in units.items()}
    if any(any(counts) for counts in stuck.values()):
        lines += ["", "(Prompt, realisation) units with an upload that never ends (a static channel's fade below "
                  "ARQ's fixed rate never lifts), out of prompts x realisations:", "",
                  "| method | " + " | ".join(f"{s:g} km/h" for s in speeds) + " |", "|---|" + "---:|" * len(speeds)]
        lines += [f"| {label} | " + " | ".join(f"{c}/{u[0].size}" for c, u in zip(counts, units[label], strict=True))
                  + " |" for label, counts in stuck.items()]
    (args.out / "speed_sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
