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
