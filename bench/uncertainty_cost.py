"""What each uncertainty measure costs per round, on the embedded pair (or any pair: model.* overrides).

    .venv/bin/python bench/uncertainty_cost.py [overrides...]      # e.g. data.n_prompts=2 decode.max_new_tokens=16

U-HLM with each measure (its policy uses u, so the measure is on both clocks). Printed per measure: median ms per
round of the SLM forward and of the measure, the measure's cost as a ratio to the SLM forward measured in the same
run, the median round on the wall clock, the modelled per-token time (eq. 4 plus the measure), and the transmission
rate the same u_th gives. Temperature perturbation is the baseline: it reuses the draft's logits. The modelled
column uses the paper's tau_SLM = 24.6 ms and tau_LLM = 104.6 ms plus the measure's time measured here.
"""

from __future__ import annotations

import statistics
import sys

from uhlm_ray.config import UNCERTAINTY_MEASURES, load_config
from uhlm_ray.experiments.datasets import load_examples
from uhlm_ray.experiments.evaluate import run_clock, run_method
from uhlm_ray.measures.clock import modelled_seconds
from uhlm_ray.measures.similarity import timing_only_encoder
from uhlm_ray.models import load_pair


def main(argv: list[str]) -> int:
    # the modelled column uses the paper's tau_SLM / tau_LLM plus each measure's own measured time
    base = ["data.n_prompts=2", "decode.max_new_tokens=16", "methods=[u_hlm]", "decode.evaluation_methods=[]",
            "clock.tau_slm_ms=24.6", "clock.tau_llm_ms=104.6", "runtime.batch_size=1", *argv]
    cfg = load_config(overrides=base)
    pair = load_pair(cfg.model)
    examples = load_examples(cfg.data)
    rows = []
    for measure in UNCERTAINTY_MEASURES:
        cfg = load_config(overrides=[*base, f"uncertainty.measure={measure}"])
        results = run_method(pair=pair, examples=examples, method="u_hlm", cfg=cfg, store=None,
                             encoder=timing_only_encoder)
        records = [r for res in results for r in res.records if r.round > 1]
        clock = run_clock(results={"u_hlm": results}, cfg=cfg)
        rows.append({
            "measure": measure,
            "slm_ms": 1e3 * statistics.median(r.tau_slm_s for r in records),
            "u_ms": 1e3 * statistics.median(r.tau_uncertainty_s for r in records),
            "round_ms": 1e3 * statistics.median(r.wall_s for r in records),
            "modelled_ms": 1e3 * statistics.mean(modelled_seconds(record=r, clock=clock) - r.tau_up_s
                                                  for r in records),
            "tr": sum(r.sent for r in records) / len(records),
            "prefill_s": statistics.mean(res.prefill_s for res in results),
        })
        print(f"[bench] {measure} done", flush=True)
    print(f"\nK={cfg.uncertainty.k}; {len(examples)} prompts x {cfg.decode.max_new_tokens} tokens; "
          f"u_th={cfg.policy.u_th}")
    print("| measure | SLM fwd ms | measure ms | measure / SLM fwd | round wall ms | modelled ms/token (no uplink) "
          "| TR | prefill s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['measure']} | {r['slm_ms']:.0f} | {r['u_ms']:.1f} | {r['u_ms'] / r['slm_ms']:.2f} | "
              f"{r['round_ms']:.0f} | {r['modelled_ms']:.0f} | {r['tr']:.1%} | {r['prefill_s']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
