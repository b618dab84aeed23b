"""How much a sweep saves by sharing decoded work between trials (uhlm_ray.sweep), on the embedded pair.

    .venv/bin/python bench/sweep_sharing.py [--thresholds 0.1,0.3,0.431,0.6,0.8] [overrides...]

Runs the same threshold sweep's trials in one process twice: each trial with its own empty store (no sharing, what
ten independent evaluate runs cost) and all trials on one shared store. Prints the wall time of each, the (method,
prompt) decodes each did, and the ratio, measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from uhlm_ray.datasets import load_examples
from uhlm_ray.models import load_pair
from uhlm_ray.models.session import PrefillStore
from uhlm_ray.similarity import timing_only_encoder
from uhlm_ray.sweep import SearchSpace, evaluate_trial, trial_config


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--thresholds", default="0.1,0.3,0.431,0.6,0.8")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    space = SearchSpace(name="bench", objectives=[], params={}, base={"data.n_prompts": 2,
                                                                       "decode.max_new_tokens": 16})
    cfgs = [trial_config(base_overrides=args.overrides, space=space, params={"policy.u_th": t}) for t in thresholds]
    pair = load_pair(cfgs[0].model)
    examples = load_examples(cfgs[0].data)
    rows = {}
    for mode in ("independent", "shared"):
        with tempfile.TemporaryDirectory() as tmp:
            start, decoded = time.perf_counter(), 0
            for i, cfg in enumerate(cfgs):
                shared_dir = Path(tmp) / (f"trial{i}" if mode == "independent" else "shared")
                # prompt prefills are not shared between independent runs either
                prefills = PrefillStore()
                outcome = evaluate_trial(pair=pair, examples=examples, cfg=cfg, encoder=timing_only_encoder,
                                         shared_dir=shared_dir, prefills=prefills)
                decoded += outcome.decoded_prompts
            rows[mode] = (time.perf_counter() - start, decoded)
        print(f"[bench] {mode}: {rows[mode][0]:.1f} s", flush=True)
    print(f"\n{len(thresholds)} thresholds x {len(cfgs[0].methods)} methods, {len(examples)} prompts x "
          f"{cfgs[0].decode.max_new_tokens} tokens")
    print("| trials run | wall s | (method, prompt) decodes | wall vs independent |")
    print("|---|---:|---:|---:|")
    for mode, (seconds, decoded) in rows.items():
        print(f"| {mode} | {seconds:.1f} | {decoded} | {seconds / rows['independent'][0]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
