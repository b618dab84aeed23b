"""How much a sweep saves by sharing work between trials (experiments/sweep.py, models/prefix_cache.py), embedded
pair.

    .venv/bin/python bench/sweep_sharing.py [--thresholds 0.1,0.3,0.431,0.6,0.8] [overrides...]

Runs the same threshold sweep's trials in one process three times, measured in the same run:

- independent: each trial with its own result store and its own prefix cache (what separate evaluate runs cost;
  within a run the methods still share their passes, as the evaluate job does),
- shared store: (method, prompt) results shared by trials whose settings make them identical
  (uhlm_ray.experiments.sweep),
- shared store + prefixes: also every forward pass that trials share (same model, tokens and chunks), through a
  prefix cache in a folder as the sweep's worker processes use it.

Prints the wall time, the (method, prompt) decodes, the forward passes computed and replayed, and the ratio to the
independent run; the three must produce the same tokens, which is checked.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from uhlm_ray.experiments.datasets import load_examples
from uhlm_ray.experiments.sweep import SearchSpace, evaluate_trial, local_store, trial_config
from uhlm_ray.measures.similarity import timing_only_encoder
from uhlm_ray.models import load_pair
from uhlm_ray.models.prefix_cache import PrefixCache

MODES = ("independent", "shared store", "shared store + prefixes")


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
    rows, tokens = {}, {}
    for mode in MODES:
        with tempfile.TemporaryDirectory() as tmp:
            start, decoded, computed, replayed, outputs = time.perf_counter(), 0, 0, 0, []
            shared_cache = PrefixCache(directory=Path(tmp) / "prefixes")
            for i, cfg in enumerate(cfgs):
                shared_dir = Path(tmp) / (f"trial{i}" if mode == "independent" else "shared")
                prefixes = shared_cache if mode == "shared store + prefixes" else PrefixCache()
                before = (prefixes.misses, prefixes.hits)
                outcome = evaluate_trial(pair=pair, examples=examples, cfg=cfg, encoder=timing_only_encoder,
                                         store_for=local_store(shared_dir), prefixes=prefixes)
                decoded += outcome.decoded_prompts
                computed += prefixes.misses - before[0]
                replayed += prefixes.hits - before[1]
                outputs.append({m: [r.tokens for r in rs] for m, rs in outcome.results.items()})
            disk_mb = sum(f.stat().st_size for f in (Path(tmp) / "prefixes").glob("*")) / 2**20
            rows[mode] = (time.perf_counter() - start, decoded, computed, replayed, disk_mb)
            tokens[mode] = outputs
        print(f"[bench] {mode}: {rows[mode][0]:.1f} s", flush=True)
    same = all(tokens[m] == tokens["independent"] for m in MODES)
    print(f"\n{len(thresholds)} thresholds x {len(cfgs[0].methods)} methods, {len(examples)} prompts x "
          f"{cfgs[0].decode.max_new_tokens} tokens; same tokens in every mode: {same}")
    print("| trials run | wall s | (method, prompt) decodes | passes computed | passes replayed | cache on disk MiB "
          "| wall vs independent |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = rows["independent"][0]
    for mode, (seconds, decoded, computed, replayed, disk_mb) in rows.items():
        print(f"| {mode} | {seconds:.1f} | {decoded} | {computed} | {replayed} | {disk_mb:.0f} "
              f"| {seconds / base:.2f} |")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
