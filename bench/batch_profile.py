"""Where a batched trial's time goes: one method decoded in lockstep batches under cProfile, its time split into
the models' matrix products, attention, the uncertainty measure, moving KV caches and the rest.

    .venv/bin/python bench/batch_profile.py [--method u_hlm] [--batch 8] [--prompts 8] [--tokens 32] [overrides...]

The prompts' prefills are computed before the profile (a trial shares them between methods through its prefix
cache) and replayed inside it, so the table is the decoding rounds. Printed: seconds and shares of the run per part,
with tokens per second of the profiled run (cProfile adds its own overhead to Python calls, not to the torch kernels
that dominate). A batch that is compute-bound spends nearly all its time in `linear`: then a larger batch cannot
help much, only fewer rows (tokens the models process per generated token) can.
Then the forward passes each model ran in the profiled run: how many, alone or batched, the token rows they held
and the rows they computed once padded to the pass's longest catch-up, their seconds and rows per generated token
(a lossy method's senders carry catch-ups of unequal length, so its batched LLM passes compute padding, or split).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from collections import Counter, defaultdict

from uhlm_ray.config import load_config
from uhlm_ray.experiments.datasets import load_examples
from uhlm_ray.experiments.evaluate import run_method
from uhlm_ray.models import session as session_module
from uhlm_ray.models.loading import load_pair
from uhlm_ray.models.prefix_cache import prefix_cache

# part -> (how, file suffix, function name) patterns, "" matching any name: "own" adds the own time (tottime) of
# every matching profiled function, "total" the cumulative time of entry points that never call each other nor the
# models (so no second of the run counts twice; MC-dropout and paraphrase passes count as products)
PARTS = {
    # torch's product, or oneDNN's through OneDnnLinear.forward (model.linear_backend)
    "matrix products (linear)": [("own", "~", "<built-in method torch._C._nn.linear>"),
                                 ("total", "linear_backend.py", "forward")],
    "attention (sdpa)": [("own", "~", "<built-in method torch._C._nn.scaled_dot_product_attention>")],
    "uncertainty measure (its arithmetic)": [
        ("total", "uncertainty.py", name) for name in ("temperature_perturbation", "entropy_uncertainty",
                                                       "confidence_uncertainty", "sample_disagreement")],
    # padding into a batch (ours), then transformers' cache code and the concatenations it appends with
    "KV caches: pad, append (torch.cat), crop": [("total", "session.py", "_left_pad"), ("own", "cache_utils.py", ""),
                                                 ("own", "~", "<built-in method torch.cat>")],
}


def _part_seconds(stats: pstats.Stats) -> dict[str, float]:
    out = dict.fromkeys(PARTS, 0.0)
    for (filename, _, name), (_, _, own, total, _) in stats.stats.items():  # type: ignore[attr-defined]
        match = next(((part, how) for part, patterns in PARTS.items() for how, suffix, fn in patterns
                      if filename.endswith(suffix) and (not fn or name == fn)), None)
        if match is not None:
            out[match[0]] += own if match[1] == "own" else total
    return out


def count_passes(names: dict[int, str]) -> dict[tuple[str, str], Counter]:
    """Wraps the step API's one forward pass so that each pass is counted. Returns (model name, kind) -> passes,
    rows (new tokens), padded rows (sessions x the longest) and seconds, where kind is "alone", "batched" or
    "replayed" (a prefill taken from the prefix cache). `names`: id(model) -> its name."""
    tally: dict[tuple[str, str], Counter] = defaultdict(Counter)
    forward = session_module._forward_batch

    def counted(todo, *, score):
        lengths = [s.pending for s in todo]
        start = time.perf_counter()
        forward(todo, score=score)
        kind = "batched" if len(todo) > 1 else "replayed" if todo[0].timing.replayed_s > 0 else "alone"
        entry = tally[(names[id(todo[0]._model)], kind)]
        entry.update(passes=1, rows=sum(lengths), padded=len(todo) * max(lengths))
        entry["seconds"] += time.perf_counter() - start

    session_module._forward_batch = counted
    return tally


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="u_hlm")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    base = [f"data.n_prompts={args.prompts}", f"runtime.batch_size={args.batch}", *args.overrides]
    cfg = load_config(overrides=[*base, f"decode.max_new_tokens={args.tokens}"])
    pair = load_pair(cfg.model)
    examples = load_examples(cfg.data)
    prefixes = prefix_cache(cfg.runtime)
    one_token = load_config(overrides=[*base, "decode.max_new_tokens=1"])
    for warm in ("slm", "llm"):  # both models' prompt prefills into the prefix cache, outside the profile
        run_method(pair=pair, examples=examples, method=warm, cfg=one_token, encoder=None, store=None,
                   prefixes=prefixes)
    tally = count_passes({id(pair.slm.model): "SLM", id(pair.llm.model): "LLM"})
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    results = run_method(pair=pair, examples=examples, method=args.method, cfg=cfg, encoder=None, store=None,
                         prefixes=prefixes)
    profile.disable()
    total = time.perf_counter() - start
    tokens = sum(len(r.tokens) for r in results)
    parts = _part_seconds(pstats.Stats(profile))
    parts["the rest (sampling, verification arithmetic, Python)"] = total - sum(parts.values())
    print(f"\n{args.method}, {len(examples)} prompts x up to {args.tokens} tokens, lockstep batch {args.batch}, "
          f"{next(pair.slm.model.parameters()).dtype}: {tokens} tokens in {total:.1f} s ({tokens / total:.2f} tok/s "
          "under the profiler)")
    print("| part | seconds | share |\n|---|---:|---:|")
    for part, seconds in parts.items():
        print(f"| {part} | {seconds:.1f} | {seconds / total:.1%} |")
    print("\n| model | passes | count | rows | padded rows | seconds | ms a pass | rows a token |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|")
    for (model, kind), c in sorted(tally.items()):
        print(f"| {model} | {kind} | {c['passes']} | {c['rows']} | {c['padded']} | {c['seconds']:.1f} | "
              f"{1000 * c['seconds'] / c['passes']:.0f} | {c['rows'] / tokens:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
