"""Where a round's wall time goes, per method, on the embedded pair (or any pair: pass model.* overrides).

    .venv/bin/python bench/round_breakdown.py [overrides...]      # e.g. data.n_prompts=4 decode.max_new_tokens=32

Prints, per method, median milliseconds per round of the SLM forward, the uncertainty measure, the LLM forward
(incl. catch-up) and the rest (sampling, verification, bookkeeping); the LLM forward on sent rounds alone with the
mean catch-up length; the share of round time outside model forward passes; and each method's wall time per token as
a ratio to the LLM alone, measured in the same run.
"""

from __future__ import annotations

import statistics
import sys

from uhlm_ray.config import load_config
from uhlm_ray.experiments.datasets import load_examples
from uhlm_ray.experiments.evaluate import METHOD_LABELS, evaluate_methods
from uhlm_ray.measures.clock import overhead_share
from uhlm_ray.measures.similarity import timing_only_encoder
from uhlm_ray.models import load_pair


def main(argv: list[str]) -> int:
    # one stream: round times are its own, on the fast one-row kernel (batch invariance buys nothing at batch 1)
    cfg = load_config(overrides=["data.n_prompts=3", "decode.max_new_tokens=32", "runtime.batch_size=1",
                                "model.batch_invariant=false", *argv])
    pair = load_pair(cfg.model)
    examples = load_examples(cfg.data)
    # timing only: a constant encoder keeps the similarity metric out of the measurement
    results = evaluate_methods(pair=pair, examples=examples, cfg=cfg, encoder=timing_only_encoder,
                               store=None)
    rows = {}
    for method, method_results in results.items():
        records = [r for res in method_results for r in res.records if r.round > 1]
        ms = lambda values: 1e3 * statistics.median(values)  # noqa: E731
        wall = sum(r.wall_s for r in records)
        rows[method] = {
            "rounds": len(records),
            "slm": ms([r.tau_slm_s for r in records]),
            "uncert": ms([r.tau_uncertainty_s for r in records]),
            "llm": ms([r.tau_llm_s for r in records]),
            "rest": ms([r.wall_s - r.tau_slm_s - r.tau_llm_s - r.tau_uncertainty_s for r in records]),
            "round": ms([r.wall_s for r in records]),
            "llm_per_sent": ms([r.tau_llm_s for r in records if r.sent]) if any(r.sent for r in records) else 0.0,
            "catch_up": statistics.mean([r.catch_up_tokens for r in records if r.sent] or [0]),
            "non_forward_share": overhead_share(records),
            "wall_per_token": wall / len(records),
        }
    base = rows["llm"]["wall_per_token"] if "llm" in rows else None
    print(f"median ms per round (round 1 excluded), {len(examples)} prompts, "
          f"max_new_tokens={cfg.decode.max_new_tokens}")
    print("| method | rounds | SLM fwd | uncertainty | LLM fwd | LLM fwd, sent rounds | catch-up tokens (mean) "
          "| rest | round | not forward (share of wall) | wall/token vs LLM |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method, r in rows.items():
        ratio = f"{r['wall_per_token'] / base:.2f}" if base else "-"
        print(f"| {METHOD_LABELS[method]} | {r['rounds']} | {r['slm']:.1f} | {r['uncert']:.1f} | {r['llm']:.1f} | "
              f"{r['llm_per_sent']:.1f} | {r['catch_up']:.2f} | {r['rest']:.2f} | {r['round']:.1f} | "
              f"{r['non_forward_share']:.1%} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
