"""The Serve verifier under replicas x concurrent devices on the embedded pair (or any pair: model.* overrides).

    .venv/bin/python bench/verifier_scaling.py [--replicas 1,2] [--devices 1,2,4,8,16] [--tiny] [overrides...]

Each point is a real cell on a local Ray: one device actor holding the SLM for all N devices (lockstep, batched SLM
forwards), HLM so that every round is verified, R verifier replicas with session-affine routing, each batching with
@serve.batch. Printed per (R, N): verified tokens per second (wall), the mean verifier batch that actually formed,
p50/p99 of the verification round trip and of the whole round, the rounds each replica served, and the throughput
ratio to one device on one replica measured in the same run. `--tiny` runs the tiny random-weight pair (mechanics).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory, mkdtemp

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402

from actors.cell_runner import run_cell  # noqa: E402
from actors.verifier_deployment import APP_NAME, start_verifier  # noqa: E402
from uhlm_ray.config import load_config  # noqa: E402
from uhlm_ray.experiments.datasets import load_examples  # noqa: E402
from uhlm_ray.experiments.evaluate import ResultStore  # noqa: E402
from uhlm_ray.measures.similarity import timing_only_encoder  # noqa: E402
from uhlm_ray.models.tiny import WORDS, save_tiny_model  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="1,2,4,8,16")
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--tiny", action="store_true", help="serve a tiny random-weight pair")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.devices.split(",")]
    replica_counts = [int(n) for n in args.replicas.split(",")]
    model = []
    if args.tiny:
        folder = Path(mkdtemp(prefix="tiny-pair-"))
        save_tiny_model(folder / "slm", words=WORDS, layers=2, hidden=32, seed=1)
        save_tiny_model(folder / "llm", words=WORDS, layers=3, hidden=48, seed=2)
        model = ["model.pair=custom", f"model.slm={folder / 'slm'}", f"model.llm={folder / 'llm'}",
                 "model.dtype=float32"]
    base = ["cell.method=hlm", "cell.prompts_per_device=1", "decode.max_new_tokens=16", "data.n_prompts=16",
            "tracking.enabled=false", "resume=false", f"runtime.max_batch_size={max(counts)}",
            "runtime.device_actor_num_cpus=1"]
    # one logical CPU per replica and per device actor, so that every point is placed even on a small machine
    # (they then share its cores: compare points of one run, not machines)
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, max(replica_counts) + 1), log_to_driver=False,
             include_dashboard=False)
    rows = []
    for replicas, n in [(r, n) for r in replica_counts for n in counts]:
        cfg = load_config(overrides=[*base, *model, f"cell.n_devices={n}", f"cell.devices_per_actor={n}",
                                     f"runtime.verifier_replicas={replicas}", *args.overrides])
        examples = load_examples(cfg.data)
        start_verifier(cfg)
        with TemporaryDirectory() as tmp:
            start = time.perf_counter()
            results = run_cell(cfg=cfg, examples=examples, store=ResultStore(Path(tmp)), run=f"bench-{n}",
                               encoder=timing_only_encoder)
            elapsed = time.perf_counter() - start
        serve.delete(APP_NAME)
        records = [r for res in results for r in res.records if r.sent]
        # the decoding phase only: from each prompt's first round, without actor start-up and prefills
        decode_s = max(sum(r.wall_s for r in res.records) for res in results)
        rounds = [r.wall_s for res in results for r in res.records]
        rows.append({
            "replicas": replicas, "devices": n, "verified": len(records), "decode_s": decode_s, "elapsed_s": elapsed,
            "tok_s": len(records) / decode_s,
            "batch": float(np.mean([r.verify_batch_size for r in records])),
            "p50_verify_ms": 1e3 * float(np.percentile([r.verify_wall_s for r in records], 50)),
            "p99_verify_ms": 1e3 * float(np.percentile([r.verify_wall_s for r in records], 99)),
            "p50_round_ms": 1e3 * float(np.percentile(rounds, 50)),
            "p99_round_ms": 1e3 * float(np.percentile(rounds, 99)),
            "llm_ms": 1e3 * float(np.median([r.tau_llm_s for r in records if r.catch_up_tokens > 0])),
            "slm_ms": 1e3 * float(np.median([r.tau_slm_s for res in results for r in res.records if r.round > 1])),
            "per_replica": sorted(Counter(r.verify_replica for r in records).values(), reverse=True),
        })
        print(f"[bench] {replicas} replicas x {n} devices done in {elapsed:.1f} s", flush=True)
    ray.shutdown()

    one = rows[0]["tok_s"]
    print("\n| replicas | devices | verified tokens | tok/s (wall) | x 1 device | mean batch | verify p50 ms "
          "| verify p99 ms | round p50 ms | round p99 ms | LLM fwd ms | SLM fwd ms | rounds per replica |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['replicas']} | {r['devices']} | {r['verified']} | {r['tok_s']:.2f} | {r['tok_s'] / one:.2f} | "
              f"{r['batch']:.2f} | {r['p50_verify_ms']:.0f} | {r['p99_verify_ms']:.0f} | {r['p50_round_ms']:.0f} | "
              f"{r['p99_round_ms']:.0f} | {r['llm_ms']:.0f} | {r['slm_ms']:.0f} | "
              f"{', '.join(map(str, r['per_replica']))} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
