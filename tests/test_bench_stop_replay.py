"""bench/stop_replay.py: the replay of a stopping rule on a response's matches, and the oracle stop's ceiling."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from uhlm_ray.config import load_config
from uhlm_ray.device.stopping import make_stop_rule
from uhlm_ray.link.fading import DecodeClock

BENCH = Path(__file__).resolve().parents[1] / "bench" / "stop_replay.py"
CLOCK = ["clock.tau_slm_ms=24.6", "clock.tau_llm_ms=104.6", "clock.llm_pass=flat"]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_stop_replay", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def _setup(*overrides: str):
    cfg = load_config(overrides=[*CLOCK, "decode.sampling=coupled", "block.payload=ids", *overrides])
    return cfg, DecodeClock.for_run(cfg, measure=cfg.uncertainty.measure, vocab_size=1000)


def _upload(k: int) -> float:
    return 0.010 + 0.001 * k


def test_fixed_blocks_are_counted_round_by_round():
    """Matches 1 1 0 | 1 1 1 | 1: n = 3 gives rounds of 3 (2 kept, then recovered), 3 (all kept, then the bonus)
    and the last token's round, its one draft capped by the budget."""
    bench = _bench()
    cfg, clock = _setup("block.stop=fixed", "block.fixed_drafts=3")
    seen = [bench.Position(match=m, x_d=0.5, uncertainty=0.1) for m in (1, 1, 0, 1, 1, 1, 1, 1)]
    tokens, seconds, drafts, accepted, rounds = bench.replay(
        seen=seen, rule=make_stop_rule(cfg=cfg, vocab_size=1000), cfg=cfg, clock=clock, upload_s=_upload)
    # round 1: positions 1-3, 2 kept + recovered (3 tokens); round 2: positions 4-6 all kept + bonus (4 tokens);
    # round 3: position 8 alone (1 draft, the budget), kept, and the response ends
    assert (tokens, drafts, accepted, rounds) == (8, 7, 6, 3)
    per_round = [k * clock.tau_slm_s + _upload(k) + clock.tau_llm_s + clock.block_answer_seconds(k) for k in (3, 3, 1)]
    assert np.isclose(seconds, sum(per_round))


def test_oracle_beats_every_rule_on_random_matches():
    """The oracle never wastes a draft: on 50 random match sequences it is at least as fast as every rule."""
    bench = _bench()
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.uniform(0.3, 0.95)
        seen = [bench.Position(match=bool(rng.random() < p), x_d=float(rng.random()), uncertainty=float(rng.random()))
                for _ in range(int(rng.integers(5, 60)))]
        cfg, clock = _setup("block.max_drafts=20")
        best = bench.replay(seen=seen, rule=None, cfg=cfg, clock=clock, upload_s=_upload)
        assert best[0] == len(seen)
        for stop in (["block.stop=fixed", "block.fixed_drafts=1"], ["block.stop=fixed", "block.fixed_drafts=4"],
                     ["block.stop=uncertainty", "block.stop_u_th=0.5"], ["block.stop=confidence"],
                     ["block.stop=channel_aware"]):
            rule_cfg, _ = _setup(*stop)
            got = bench.replay(seen=seen, rule=make_stop_rule(cfg=rule_cfg, vocab_size=1000), cfg=rule_cfg,
                               clock=clock, upload_s=_upload)
            assert got[0] == len(seen)  # every rule emits the same response
            assert best[1] <= got[1] + 1e-12, stop
