"""The modelled clock at the paper's operating point, for each link model: where exact hybrid inference sits.

    .venv/bin/python bench/modelled_clock.py [--prompts 4] [--tokens 32] [overrides...]

Decodes the prompts (the built-in ones unless data.* overrides say otherwise) once per method (the LLM alone, HLM,
U-HLM, CU-HLM and the lossless block method with each payload and stopping rule) on the embedded pair, then prices
every round on the modelled clock at the paper's average SNR (-8.92 dB) under each link model of
uhlm_ray/link/channel.py, with the same keyed fading draws for all:

- `shannon`: the paper's eq. 3, no per-upload overhead (its mean upload time is infinite under Rayleigh fading);
- `arq`: fixed-rate ARQ at the latency-optimal rate, 10 ms per-upload overhead;
- `inversion`: truncated channel inversion at the rate-optimal cut-off, 10 ms per-upload overhead.

Two clocks: the paper's tau_SLM = 24.6 ms and tau_LLM = 104.6 ms with a block's LLM pass priced flat (tau_LLM for up
to 16 tokens, a memory-bound GPU), and the taus measured in this run with each pass priced as measured for its
length. The uncertainty measure is priced like tau, never by the run's own timing of it: at `--tau-measure-ms` per
measurement on the paper's clock (default 0: the paper counts temperature perturbation as running beside the forward
pass), and at the median of this run's measurements on the measured clock, so the paper's-clock figures of two runs
of the same command are identical. Rows decoded with the channel-aware stop are decoded again for each link model
(their block lengths depend on it). Prints tok/s with the ratios to the LLM alone and to HLM, then each method's
mean / median / p95 upload time, then eq. 3's sample mean and median against the number of fading draws (one gain
per upload, as in the paper).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

from uhlm_ray.config import EvaluateConfig, load_config
from uhlm_ray.experiments.datasets import load_examples
from uhlm_ray.experiments.evaluate import run_method
from uhlm_ray.link.channel import upload
from uhlm_ray.link.payload import full_payload_bits
from uhlm_ray.link.reprice import reprice_results
from uhlm_ray.measures.clock import ModelledClock, measured_clock
from uhlm_ray.measures.metrics import summarize
from uhlm_ray.models import load_pair
from uhlm_ray.snr import mean_snr

CHANNELS = {
    "shannon (eq. 3)": ["channel.model=shannon", "channel.upload_overhead_ms=0"],
    "arq": ["channel.model=arq", "channel.upload_overhead_ms=10"],
    "inversion": ["channel.model=inversion", "channel.upload_overhead_ms=10"],
}
COUPLED = "decode.sampling=coupled"
PAPER_CLOCK = ["clock.tau_slm_ms=24.6", "clock.tau_llm_ms=104.6", "clock.llm_pass=flat"]
ROWS = [  # (label, method, overrides)
    ("LLM alone", "llm", []),
    ("HLM", "hlm", []),
    ("U-HLM", "u_hlm", []),
    ("CU-HLM", "cu_hlm", []),
    *[(f"Block-HLM {payload}, {label}", "block_hlm", [f"block.payload={payload}", *stop])
      for payload in ("full", "truncated", "ids")
      for label, stop in (("uncertainty stop u <= 0.2", ["block.stop=uncertainty", "block.stop_u_th=0.2"]),
                          ("fixed n = 3", ["block.stop=fixed", "block.fixed_drafts=3"]),
                          ("fixed n = 5", ["block.stop=fixed", "block.fixed_drafts=5"]))],
    *[(f"Block-HLM {payload}, channel-aware stop", "block_hlm",
       [f"block.payload={payload}", "block.stop=channel_aware", *PAPER_CLOCK]) for payload in ("truncated", "ids")],
    # shared-noise sampling (decode.sampling=coupled): ids only, a draft kept iff it is the LLM's race winner
    ("HLM coupled", "hlm", [COUPLED, "block.payload=ids"]),
    *[(f"Block-HLM coupled ids, {label}", "block_hlm", [COUPLED, "block.payload=ids", *stop])
      for label, stop in (("uncertainty stop u <= 0.2", ["block.stop=uncertainty", "block.stop_u_th=0.2"]),
                          ("fixed n = 3", ["block.stop=fixed", "block.fixed_drafts=3"]),
                          ("fixed n = 5", ["block.stop=fixed", "block.fixed_drafts=5"]),
                          ("confidence stop 0.4", ["block.stop=confidence", "block.confidence_threshold=0.4"]),
                          ("channel-aware stop", ["block.stop=channel_aware", *PAPER_CLOCK]))],
]


class Decoder:
    """Decodes each (method, settings) once and keeps the results."""

    def __init__(self, *, pair, base: list[str]) -> None:
        self.pair, self.base, self.done = pair, base, {}
        self.examples = load_examples(load_config(overrides=base).data)

    def results(self, *, method: str, overrides: list[str]):
        cfg = load_config(overrides=[*self.base, *overrides])
        key = (method, tuple(overrides))
        if key not in self.done:
            start = time.perf_counter()
            self.done[key] = run_method(pair=self.pair, examples=self.examples, method=method, cfg=cfg,
                                        encoder=None, store=None)
            print(f"[clock] decoded {method} {' '.join(overrides)} in {time.perf_counter() - start:.0f} s",
                  flush=True)
        return cfg, self.done[key]


def channel_aware(overrides: list[str]) -> bool:
    return "block.stop=channel_aware" in overrides


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--only", default="", help="'|'-separated substrings (labels hold commas): decode only the "
                        "rows whose label contains one (the LLM alone and HLM are always kept: the ratios need them)")
    parser.add_argument("--tau-measure-ms", type=float, default=0.0,
                        help="one uncertainty measurement on the paper's clock (default 0, as the paper)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    wanted = [w for w in args.only.split("|") if w]
    rows = [row for row in ROWS if not wanted or row[0] in ("LLM alone", "HLM") or any(w in row[0] for w in wanted)]
    base = [f"data.n_prompts={args.prompts}", f"decode.max_new_tokens={args.tokens}", "decode.evaluation_methods=[]",
            "runtime.share_prefixes=false", "runtime.batch_size=1", *args.overrides]  # measured tau: solo
    base_cfg = load_config(overrides=base)
    pair = load_pair(base_cfg.model)
    decoder = Decoder(pair=pair, base=base)

    # every (row, link model): its results priced on that link
    priced: dict[tuple[str, str], tuple[EvaluateConfig, list]] = {}
    for label, method, overrides in rows:
        for name, channel in CHANNELS.items():
            decode_with = [*overrides, *channel] if channel_aware(overrides) else overrides
            cfg, results = decoder.results(method=method, overrides=decode_with)
            link = load_config(overrides=[*base, *channel]).channel
            priced[label, name] = (cfg, reprice_results(results=results, channel=link, mean_snr=mean_snr(link),
                                                        seed=cfg.decode.seed))
    records = [r for _, rs in priced.values() for res in rs for r in res.records]
    methods = {method for _, method, _ in rows}
    per_measure = [r.tau_uncertainty_s / (len(r.drafts) if hasattr(r, "drafts") else 1)
                   for r in records if r.tau_uncertainty_s > 0]
    measure_s = float(np.median(per_measure)) if per_measure else 0.0
    measured = dataclasses.replace(measured_clock(records), tau_measure={m: measure_s for m in methods})
    paper = ModelledClock(tau_slm=0.0246, tau_llm=0.1046, llm_pass="flat", flat_pass_tokens=16,
                          tau_measure={m: args.tau_measure_ms / 1e3 for m in methods})
    clocks = {
        f"paper's taus (24.6 / 104.6 ms, measure {args.tau_measure_ms:g} ms), LLM pass flat up to 16 tokens": paper,
        f"measured taus ({measured.tau_slm * 1e3:.1f} / {measured.tau_llm * 1e3:.1f} ms, measure "
        f"{measure_s * 1e3:.1f} ms), LLM pass as measured": measured,
    }
    llm_tokens = sum(len(res.tokens) for res in priced["LLM alone", next(iter(CHANNELS))][1])
    print(f"\n{args.prompts} prompts of data set {base_cfg.data.name!r} x up to {args.tokens} "
          f"tokens (the LLM alone generated {llm_tokens}); average SNR "
          f"{10 * np.log10(mean_snr(base_cfg.channel)):.2f} dB; exact = every token verified")
    summaries = {}
    for clock_name, clock in clocks.items():
        print(f"\nModelled throughput, {clock_name}:")
        print("| method | exact | " + " | ".join(f"{c} tok/s | x LLM | x HLM" for c in CHANNELS) + " |")
        print("|---|---:|" + "---:|---:|---:|" * len(CHANNELS))
        for label, _, _ in rows:
            cells, exact = [], "-"
            for name in CHANNELS:
                cfg, results = priced[label, name]
                link = load_config(overrides=[*base, *CHANNELS[name]]).channel
                s = summarize(results=results, clock=clock, channel=link, seed=cfg.decode.seed, snr_sweep_db=[])
                summaries[clock_name, label, name] = s
                llm = summaries[clock_name, "LLM alone", name]["throughput_modelled"]
                hlm = summaries.get((clock_name, "HLM", name), {}).get("throughput_modelled", np.nan)
                cells.append(f"{s['throughput_modelled']:.3g} | {s['throughput_modelled'] / llm:.3g} | "
                             f"{s['throughput_modelled'] / hlm:.3g}")
                exact = "yes" if s.get("exact", 0.0) == 1.0 else "no"
            print(f"| {label} | {exact} | " + " | ".join(cells) + " |")

    print("\nUpload time per sent round (ms): mean / median / p95, uploads and bits per generated token, acceptance")
    print("| method | " + " | ".join(CHANNELS) + " | uploads/token | bits/token | acceptance | mean accepted |")
    print("|---|" + "---:|" * (len(CHANNELS) + 4))
    first_clock = next(iter(clocks))
    for label, method, _ in rows:
        if method == "llm":
            continue
        cells = []
        for name in CHANNELS:
            s = summaries[first_clock, label, name]
            cells.append(f"{s['mean_uplink_ms']:.4g} / {s['median_uplink_ms']:.4g} / {s['p95_uplink_ms']:.4g}")
        s = summaries[first_clock, label, "arq"]
        print(f"| {label} | " + " | ".join(cells) + f" | {s['uploads_per_token']:.3f} | {s['bits_per_token']:.4g} | "
              f"{s['acceptance_rate']:.3f} | {s.get('mean_accepted_length', float('nan')):.3g} |")

    # eq. 3 under Rayleigh fading, one h per upload as in the paper: the sample mean of the upload time grows with
    # the number of draws (on a process in time an upload averages many fades, and its mean is finite)
    cfg = load_config(overrides=[*base, *CHANNELS["shannon (eq. 3)"], "channel.process=per_round"])
    bits = full_payload_bits(vocab_size=pair.vocab_size, cfg=cfg.payload, support=pair.slm.draft_support)
    rng = np.random.default_rng(0)
    snr = mean_snr(cfg.channel)
    print(f"\nEq. 3, one full upload ({bits / 1e6:.2f} Mbit) at {10 * np.log10(snr):.2f} dB, one fading gain per "
          "upload (channel.process=per_round): sample mean and median of the upload time (s) against the number "
          "of fading draws")
    print("| draws | mean | median | max |")
    print("|---:|---:|---:|---:|")
    times = np.array([upload(bits=bits, channel=cfg.channel, mean_snr=snr, rng=rng).seconds
                      for _ in range(1_000_000)])
    for n in (100, 1_000, 10_000, 100_000, 1_000_000):
        print(f"| {n} | {times[:n].mean():.4g} | {np.median(times[:n]):.4g} | {times[:n].max():.4g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
