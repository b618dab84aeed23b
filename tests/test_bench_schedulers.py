"""bench/schedulers.py prices every scheduler the code has, whatever the space's grid lists."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from uhlm_ray.config import SCHEDULERS

BENCH = Path(__file__).resolve().parents[1] / "bench" / "schedulers.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_schedulers", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a forked worker finds `_price` by the module's name
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


def test_forked_workers_price_the_figures_of_one_process(tmp_path):
    """--workers 2 prices every (cell, realisation) in forked processes: the same figures, bit for bit, as one
    process (tiny pair, the default process in time, equal and multi_spin cells of 4 devices, 2 realisations)."""
    import numpy as np

    from uhlm_ray.experiments.datasets import load_examples
    from uhlm_ray.experiments.evaluate import run_method
    from uhlm_ray.experiments.sweep import load_space, trial_config
    from uhlm_ray.models import load_pair

    bench = _bench()
    overrides = [*bench.tiny_overrides(tmp_path), "decode.evaluation_methods=[]", "data.n_prompts=2",
                 "decode.max_new_tokens=8"]
    space = load_space(str(bench.ROOT / "tune_spaces" / "schedulers.yaml"), overrides=overrides)
    configs = [trial_config(base_overrides=overrides, space=space, params={"cell.scheduler": s, "cell.n_devices": 4})
               for s in ("equal", "multi_spin")]
    results = run_method(pair=load_pair(configs[0].model), examples=load_examples(configs[0].data), method="u_hlm",
                         cfg=configs[0], encoder=None, store=None)
    one, two = (bench.price_cells(configs=configs, results=results, method="u_hlm", realisations=2, workers=w)
                for w in (1, 2))
    assert one.keys() == two.keys() == {("equal", 4), ("multi_spin", 4)}
    for key, figures in one.items():
        assert figures.keys() == two[key].keys()
        for name, values in figures.items():
            np.testing.assert_array_equal(values, two[key][name], err_msg=f"{key} {name}")
