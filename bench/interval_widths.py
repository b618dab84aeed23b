"""How wide the 95% intervals are at a given number of prompts, from a finished evaluate run's stored results.

    .venv/bin/python bench/interval_widths.py OUTPUT_DIR/RUN_KEY [--sizes 5,20,100] [overrides...]

Reads every `<method>.jsonl` of the run folder (jobs/evaluate.py writes them), takes the first n prompts for each
size n, and prints the width (high - low) of each method's interval on accuracy, accuracy relative to the LLM alone
(paired on prompts), transmission rate and modelled throughput. The modelled clock is the paper's tau values unless
overrides say otherwise, so the widths need no models. Sizes beyond the run's prompts are projected from the largest
measured one by 1/sqrt(n), and marked so.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from uhlm_ray.config import load_config
from uhlm_ray.experiments.evaluate import METHOD_LABELS, ResultStore, ordered_methods, summarize_methods

METRICS = (("accuracy", "{:.3f}"), ("accuracy_vs_llm", "{:.1%}"), ("transmission_rate", "{:.1%}"),
           ("throughput_modelled", "{:.3g}"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--sizes", default="5,20,100")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    store = ResultStore(Path(args.run))
    methods = ordered_methods([p.stem for p in Path(args.run).glob("*.jsonl")])
    stored = {m: [r for _, r in sorted(store.load(m).items())] for m in methods}
    available = min(len(v) for v in stored.values())
    cfg = load_config(overrides=["clock.tau_slm_ms=24.6", "clock.tau_llm_ms=104.6", "clock.tau_measure_ms=1",
                                 "clock.snr_sweep_db=[]", f"methods=[{','.join(methods)}]", *args.overrides])
    sizes = [int(s) for s in args.sizes.split(",")]
    widths: dict[int, dict[str, dict[str, float]]] = {}
    for n in sorted({min(s, available) for s in sizes}):
        summaries = summarize_methods(results={m: rs[:n] for m, rs in stored.items()}, cfg=cfg)
        widths[n] = {m: {k: s.get(f"{k}_ci_high", math.nan) - s.get(f"{k}_ci_low", math.nan) for k, _ in METRICS}
                     for m, s in summaries.items()}
    largest = max(widths)
    print(f"{available} prompts stored per method in {args.run}; widths of 95% bootstrap intervals:")
    print("| prompts | method | " + " | ".join(k for k, _ in METRICS) + " |")
    print("|---:|---|" + "---:|" * len(METRICS))
    for n in sizes:
        measured = n <= available
        row = widths[n] if measured else {m: {k: w * math.sqrt(largest / n) for k, w in v.items()}
                                          for m, v in widths[largest].items()}
        for m in methods:
            cells = ["-" if math.isnan(row[m][k]) else fmt.format(row[m][k]) for k, fmt in METRICS]
            label = f"{n}" if measured else f"{n} (projected)"
            print(f"| {label} | {METHOD_LABELS[m]} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
