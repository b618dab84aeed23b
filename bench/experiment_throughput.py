"""Experiment throughput: generated tokens per second of trial time at several lockstep batch sizes, measured in one
run on the embedded pair (or any pair: pass model.* overrides), with the paper-scale reproduction's projected time.

    .venv/bin/python bench/experiment_throughput.py [--batches 1,4,8,16,32] [--prompts 16] [--tokens 16] \
        [--repeats 1] [overrides...]

Every batch size decodes the same prompts with the same methods (the config's, all seven by default) as a trial
does: the methods share forward passes through a prefix cache of their own (a new one for each batch size, so
nothing is replayed from another batch size), no result store. A prompt's prefill is computed once and replayed for
the other methods; at batch 1 the methods also share their SLM passes while they draft the same tokens, which a
padded batch cannot. Trial time is what `run_method` spends, prefill, verification and evaluation scoring included,
the similarity encoder excluded (it is the same at any batch size). Each method first decodes one prompt untimed,
so that one-off costs (lazy imports, kernel set-up) land in no batch size's time.
The tokens and records are the same at every batch size (every draw is keyed, and the passes are batch-invariant:
`model.batch_invariant`, uhlm_ray/models/batch_invariance.py); the table checks both, against the first batch size.
Batch invariance runs a solo one-token step through the matrix-matrix kernel, which slows batch 1; so where it is on,
a last row decodes at batch 1 with it off ("1, fast kernel", the fastest single stream, whose tokens may differ
where two candidates nearly tie), and the ratios are also given against that row. Printed: tok/s per method and
over all methods, the ratios to batch 1 of the same run (median of --repeats), and the time the paper's scale (4
data sets x 100 prompts x 128 tokens x 7 methods) would take at each batch size, at these tokens per second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext

from uhlm_ray.config import load_config
from uhlm_ray.experiments.datasets import load_examples
from uhlm_ray.experiments.evaluate import METHOD_LABELS, matched_send_prob, ordered_methods, run_method
from uhlm_ray.models.batch_invariance import single_stream
from uhlm_ray.models.loading import load_pair
from uhlm_ray.models.prefix_cache import prefix_cache
from uhlm_ray.records import drawn_outcome

PAPER_SCALE_TOKENS = 4 * 100 * 128 * 7


def agreement(differs: dict[str, str]) -> str:
    """The last column: "yes", or which methods drew other tokens and which only rounded a record otherwise."""
    parts = [f"{what}: " + ", ".join(sorted(m for m, kind in differs.items() if kind == key))
             for key, what in (("tokens", "other tokens"), ("records", "same tokens, other records"))
             if key in differs.values()]
    return "; ".join(parts) or "yes"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,4,8,16,32")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    base = [f"data.n_prompts={args.prompts}", f"decode.max_new_tokens={args.tokens}", *args.overrides]
    cfg = load_config(overrides=base)
    pair = load_pair(cfg.model)
    examples = load_examples(cfg.data)
    dtype = next(pair.slm.model.parameters()).dtype
    print(f"[bench] {len(examples)} prompts x {args.tokens} tokens, methods {cfg.methods}, {dtype}, "
          f"batches {batches}, {args.repeats} repeat(s)", flush=True)

    fast = pair.slm.batch_invariant or pair.llm.batch_invariant
    runs = [str(b) for b in batches] + (["1, fast kernel"] if fast else [])
    rates: dict[str, dict[str, list[float]]] = {run: {} for run in runs}
    reference: dict[str, list] = {}
    # per run, method -> "tokens" (another sample) or "records" (the same tokens, a record field rounded otherwise)
    mismatched: dict[str, dict[str, str]] = {run: {} for run in runs}
    # untimed: the first pass of each method pays one-off costs (lazy imports, kernel set-up) that batch 1, timed
    # first, would otherwise carry alone; its own prefix cache, so nothing is replayed into the timed runs
    warm_cfg = load_config(overrides=[*base, "runtime.batch_size=1"])
    warm: dict = {}
    for method in ordered_methods(warm_cfg.methods):
        warm[method] = run_method(pair=pair, examples=examples[:1], method=method, cfg=warm_cfg, encoder=None,
                                  store=None, prefixes=prefix_cache(warm_cfg.runtime),
                                  send_prob=matched_send_prob(method=method, cfg=warm_cfg, results=warm))
    for _ in range(args.repeats):
        for run in runs:
            b = int(run.split(",")[0])
            run_cfg = load_config(overrides=[*base, f"runtime.batch_size={b}"])
            results: dict = {}
            prefixes = prefix_cache(run_cfg.runtime)  # this batch size's own: as evaluate_methods shares passes
            total_tokens = total_s = 0.0
            with single_stream(pair.slm.model, pair.llm.model) if run.endswith("fast kernel") else nullcontext():
                for method in ordered_methods(run_cfg.methods):
                    start = time.perf_counter()
                    results[method] = run_method(
                        pair=pair, examples=examples, method=method, cfg=run_cfg, encoder=None, store=None,
                        prefixes=prefixes, send_prob=matched_send_prob(method=method, cfg=run_cfg, results=results))
                    seconds = time.perf_counter() - start
                    tokens = sum(len(r.tokens) for r in results[method])
                    rates[run].setdefault(method, []).append(tokens / seconds)
                    total_tokens, total_s = total_tokens + tokens, total_s + seconds
                    outcome = drawn_outcome(results[method])
                    first = reference.setdefault(method, outcome)
                    if first != outcome:
                        same_tokens = [o[0] for o in first] == [o[0] for o in outcome]
                        mismatched[run][method] = "records" if same_tokens else "tokens"
            rates[run].setdefault("all", []).append(total_tokens / total_s)
            print(f"[bench] batch {run}: {total_tokens:.0f} tokens in {total_s:.1f} s", flush=True)

    columns = [*ordered_methods(cfg.methods), "all"]
    one = statistics.median(rates[runs[0]]["all"])
    base_fast = statistics.median(rates[runs[-1]]["all"]) if fast else one
    print(f"\n| batch | {' | '.join(METHOD_LABELS.get(m, 'all methods') for m in columns)} | x batch {runs[0]} "
          f"| x batch 1, fast kernel | paper scale | same tokens and records as batch {runs[0]} |")
    print("|---:|" + "---:|" * (len(columns) + 4))
    for run in runs:
        med = {m: statistics.median(rates[run][m]) for m in columns}
        same = agreement(mismatched[run])
        hours = PAPER_SCALE_TOKENS / med["all"] / 3600
        print(f"| {run} | " + " | ".join(f"{med[m]:.2f}" for m in columns) +
              f" | {med['all'] / one:.2f} | {med['all'] / base_fast:.2f} | {hours:.1f} h | {same} |")
    print("\ntok/s: generated tokens per second of trial time (median of the repeats); paper scale: "
          f"{PAPER_SCALE_TOKENS:,} tokens at the all-methods rate (an upper bound on tokens: prompts that stop early "
          "take less).")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
