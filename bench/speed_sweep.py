"""Modelled throughput against the device's speed: the fading process in time under the fixed and the channel-aware
thresholds and the block stopping rules.

    .venv/bin/python bench/speed_sweep.py [--prompts 2] [--tokens 24] [--speeds 0,1,3,10,30,60,120] [overrides...]

Decodes the built-in prompts on the embedded pair, then prices every round on the modelled clock at each speed
(`channel.speed_kmh`; the Doppler frequency f_D = v f_c / c sets how fast h(t) changes, uhlm_ray/link/fading.py).
Methods whose tokens do not depend on the channel (U-HLM's fixed threshold, the block method's uncertainty and fixed
stops, the LLM alone) are decoded once and re-walked at each speed with the same fading realisation
(uhlm_ray/link/reprice.py); those that read the channel while decoding (the channel-aware threshold, the
channel-aware stop) are decoded again at each speed. The clock is the paper's (tau_SLM = 24.6 ms, tau_LLM = 104.6 ms,
a block's LLM pass flat up to 16 tokens, u beside the forward pass) both while decoding and in the summaries, so the
decisions and the figures use the same clock. Writes docs/wireless/speed_throughput.png and
docs/wireless/speed_sweep.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from uhlm_ray.config import load_config  # noqa: E402
from uhlm_ray.experiments.datasets import load_examples  # noqa: E402
from uhlm_ray.experiments.evaluate import run_method  # noqa: E402
from uhlm_ray.link.fading import doppler_hz  # noqa: E402
from uhlm_ray.link.reprice import reprice_results  # noqa: E402
from uhlm_ray.measures.clock import ModelledClock  # noqa: E402
from uhlm_ray.measures.metrics import summarize  # noqa: E402
from uhlm_ray.models import load_pair  # noqa: E402
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
OUT = Path(__file__).resolve().parents[1] / "docs" / "wireless"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--speeds", default="0,1,3,10,30,60,120", help="km/h, comma-separated")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    speeds = [float(s) for s in args.speeds.split(",")]
    base = [f"data.n_prompts={args.prompts}", f"decode.max_new_tokens={args.tokens}", "decode.evaluation_methods=[]",
            "runtime.share_prefixes=false", *PAPER_CLOCK, *args.overrides]
    cfg0 = load_config(overrides=base)
    pair = load_pair(cfg0.model)
    examples = load_examples(cfg0.data)
    # u priced as the paper does temperature perturbation (beside the forward pass), as the decoders' clock has it
    clock = ModelledClock(tau_slm=0.0246, tau_llm=0.1046, llm_pass="flat", flat_pass_tokens=16,
                          tau_measure={method: 0.0 for _, method, _, _ in ROWS})

    def decode(method: str, overrides: list[str]):
        cfg = load_config(overrides=[*base, *overrides])
        start = time.perf_counter()
        results = run_method(pair=pair, examples=examples, method=method, cfg=cfg, encoder=None, store=None)
        print(f"[speed] decoded {method} {' '.join(overrides)} in {time.perf_counter() - start:.0f} s", flush=True)
        return cfg, results

    throughput: dict[str, list[float]] = {}
    once = {label: decode(method, overrides) for label, method, overrides, again in ROWS if not again}
    for label, method, overrides, again in ROWS:
        throughput[label] = []
        for speed in speeds:
            at_speed = [*overrides, f"channel.speed_kmh={speed:g}"]
            cfg, results = decode(method, at_speed) if again else once[label]
            link = load_config(overrides=[*base, *at_speed]).channel
            if not again:  # the same decisions, re-walked on this speed's fading
                results = reprice_results(results=results, channel=link, mean_snr=mean_snr(link),
                                          seed=cfg.decode.seed, clock=clock)
            s = summarize(results=results, clock=clock, channel=link, seed=cfg.decode.seed, snr_sweep_db=[])
            throughput[label].append(s["throughput_modelled"])

    channel = cfg0.channel

    def fd(speed: float) -> float:
        return doppler_hz(speed_kmh=speed, carrier_ghz=channel.carrier_ghz)

    args.out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, values in throughput.items():
        ax.plot(speeds, values, marker="o", label=label, linestyle="--" if "channel-aware" in label else "-")
    ax.set_xlabel("speed (km/h)")
    ax.set_ylabel("modelled throughput (tokens/s)")
    ax.set_title(f"{channel.model} uplink, {channel.process} fading at {channel.carrier_ghz:g} GHz, "
                 f"{10 * math.log10(mean_snr(channel)):.1f} dB")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "speed_throughput.png", dpi=120)
    lines = [f"# Modelled throughput against speed ({channel.model}, {channel.process}, "
             f"{channel.carrier_ghz:g} GHz)", "",
             f"`.venv/bin/python bench/speed_sweep.py {' '.join(argv)}`: {args.prompts} built-in prompts x up to "
             f"{args.tokens} tokens, the paper's clock. Tokens per second on the modelled clock.", "",
             "| method | " + " | ".join(f"{s:g} km/h (f_D {fd(s):.0f} Hz)" for s in speeds) + " |",
             "|---|" + "---:|" * len(speeds)]
    lines += [f"| {label} | " + " | ".join(f"{v:.3g}" for v in values) + " |" for label, values in throughput.items()]
    (args.out / "speed_sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
