"""bench/schedulers.py prices every scheduler the code has, whatever the space's grid lists."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from uhlm_ray.config import SCHEDULERS

BENCH = Path(__file__).resolve().parents[1] / "bench" / "schedulers.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_schedulers", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_scheduler_fills_in_what_the_grid_lacks():
    every_scheduler = _bench().every_scheduler
    grid = [{"cell.scheduler": "round_robin", "cell.n_devices": n} for n in (1, 4)]
    points = every_scheduler(grid)
    assert points[:2] == grid  # the space's own first, in its order
    assert [p["cell.scheduler"] for p in points[::2]] == ["round_robin", *[s for s in SCHEDULERS if s != "round_robin"]]
    assert [p["cell.n_devices"] for p in points] == [1, 4] * len(SCHEDULERS)
    full = [{"cell.scheduler": s, "cell.n_devices": 2} for s in SCHEDULERS]
    assert every_scheduler(full) == full  # a complete grid is left as it is
    assert every_scheduler([{"cell.n_devices": 2}]) == [{"cell.n_devices": 2}]  # no scheduler axis: nothing added


def test_rows_are_means_over_realisations_with_paired_ratios_to_the_equal_split():
    import numpy as np

    summarise = _bench().summarise
    rng = np.random.default_rng(0)
    equal = {"cell_goodput": rng.uniform(0.1, 0.3, 8), "cell_jain_index": rng.uniform(0.5, 1.0, 8)}
    twice = {**equal, "cell_goodput": 2 * equal["cell_goodput"]}
    priced = {("equal", 4): equal, ("multi_spin", 4): twice, ("round_robin", 8): dict(equal)}
    row = summarise(priced=priced, key=("equal", 4))
    value, low, high = row["cell_goodput"]
    assert value == np.mean(equal["cell_goodput"]) and low < value < high
    assert row["goodput_vs_equal"][0] == 1.0
    # paired on the same realisations: twice the equal split's goodput in every one is 2x, with no spread
    assert summarise(priced=priced, key=("multi_spin", 4))["goodput_vs_equal"] == (2.0, 2.0, 2.0)
    assert all(np.isnan(summarise(priced=priced, key=("round_robin", 8))["goodput_vs_equal"]))  # no equal row at 8
