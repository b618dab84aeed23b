"""Goodput and fairness against the number of devices, per cell scheduler: tune_spaces/schedulers.yaml in one process.

    .venv/bin/python bench/schedulers.py                          # embedded pair, the space's grid
    .venv/bin/python bench/schedulers.py --pair tiny              # the tiny random pair (mechanics only: |V| = 18)
    .venv/bin/python bench/schedulers.py --workers 2              # cells priced in two forked processes
    .venv/bin/python bench/schedulers.py cell.verify_deadline_ms=null channel.model=shannon   # any override

The schedulers are pure functions of the per-round records (uhlm_ray/cell.py), and no token depends on the scheduler
or on the number of devices, so the space's method is decoded once (the space's data and decode settings) and every
(scheduler, number of devices) point of the space's grid, with every scheduler of `uhlm_ray.config.SCHEDULERS` the
grid lacks added, makes those prompts into its cell (`virtual_cell`: device i's k-th prompt is prompt k N + i, modulo
the prompts decoded, its uplink priced under device i's own fading draws at its own distance) and prices it, exactly
as each trial of `jobs/sweep.py schedulers` does. Each cell is priced over `--realisations` R draws of placement and
fading (realisation r: `cell.placement_seed` and the fading key's seed moved by r; the tokens stay those decoded
once), so every figure is a mean over the R realisations with its 95% bootstrap interval, and each scheduler's goodput
is compared with the equal split's on the same realisations (paired). Writes docs/wireless/schedulers.png (goodput,
mean device throughput and Jain's index against the number of devices, a line per scheduler, error bars) and
docs/wireless/schedulers.md (the table), unless --no-write.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uhlm_ray.cell import CELL_FIGURES, device_channel, device_distances, virtual_cell_figures  # noqa: E402
from uhlm_ray.config import SCHEDULERS  # noqa: E402
from uhlm_ray.experiments.calibration import Calibration, run_calibration  # noqa: E402
from uhlm_ray.experiments.datasets import load_examples  # noqa: E402
from uhlm_ray.experiments.evaluate import ResultStore, run_clock, run_method  # noqa: E402
from uhlm_ray.experiments.sweep import load_space, method_key, trial_config  # noqa: E402
from uhlm_ray.link.channel import has_time_axis  # noqa: E402
from uhlm_ray.measures.intervals import clustered_ratio, clustered_ratio_vs  # noqa: E402
from uhlm_ray.models import load_pair  # noqa: E402
from uhlm_ray.snr import mean_snr_db  # noqa: E402

OUT = ROOT / "docs" / "wireless"


def tiny_overrides(folder: Path) -> list[str]:
    from uhlm_ray.models.tiny import WORDS, save_tiny_model

    slm = save_tiny_model(folder / "slm", words=WORDS, layers=2, hidden=32, seed=1)
    llm = save_tiny_model(folder / "llm", words=WORDS, layers=3, hidden=48, seed=2)
    return ["model.pair=custom", f"model.slm={slm}", f"model.llm={llm}", "model.dtype=float32"]


def grid_points(space) -> list[dict[str, object]]:
    keys = list(space.params)
    for key, spec in space.params.items():
        if set(spec) != {"grid"}:
            raise SystemExit(f"{key}: this bench prices grids only, got {spec}")
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(space.params[k]["grid"]
                                                                                  for k in keys))]


def every_scheduler(points: list[dict[str, object]]) -> list[dict[str, object]]:
    """The grid's points with every scheduler the code has (`uhlm_ray.config.SCHEDULERS`) at each of the grid's other
    settings, the space's own schedulers first: the table follows the code, not a copy of its list in the space."""
    key = "cell.scheduler"
    if not points or key not in points[0]:
        return points
    others = list(dict.fromkeys(tuple((k, v) for k, v in p.items() if k != key) for p in points))
    names = list(dict.fromkeys([*(p[key] for p in points), *SCHEDULERS]))
    return [{key: name, **dict(other)} for name in names for other in others]


def draw(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schedulers = list(dict.fromkeys(r["scheduler"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for scheduler in schedulers:
        points = sorted((r["n_devices"], r) for r in rows if r["scheduler"] == scheduler)
        n = [p for p, _ in points]
        for ax, figure in zip(axes, ("cell_goodput", "cell_mean_device_throughput", "cell_jain_index"), strict=True):
            mean = np.array([r[figure][0] for _, r in points])
            bars = np.abs(np.array([[r[figure][1] for _, r in points], [r[figure][2] for _, r in points]]) - mean)
            ax.errorbar(n, mean, yerr=bars, marker="o", capsize=3, label=scheduler)
    labels = ("goodput (verified tok/s of the cell)", "mean per-device throughput (tok/s)",
              "Jain's fairness index (per-device throughput)")
    for ax, label in zip(axes, labels, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("devices in the cell")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].set_yscale("log")
    axes[2].set_ylim(0, 1.05)
    axes[0].legend()
    fig.suptitle("\n".join(textwrap.wrap(title, 200)), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=120)
    plt.close(fig)


_PRICING: dict = {}  # what a forked worker reads: the decoded prompts and their method


def _price(cfg, realisation: int) -> tuple[dict[str, float], float]:
    """One realisation of one cell: a new placement and new fades (`cell.placement_seed` and the fading key's seed
    moved by r), the same tokens; (its figures, seconds to price it)."""
    start = time.perf_counter()
    results, method = _PRICING["results"], _PRICING["method"]
    moved = replace(cfg, decode=replace(cfg.decode, seed=cfg.decode.seed + realisation),
                    cell=replace(cfg.cell, placement_seed=cfg.cell.placement_seed + realisation))
    clock = run_clock(results={method: results}, cfg=moved, calibration=_PRICING["calibration"])
    figures = virtual_cell_figures(results=results, cfg=moved, clock=clock)
    return figures, time.perf_counter() - start


def price_cells(*, configs: list, results: list, method: str, realisations: int, workers: int,
                calibration: Calibration | None = None) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """Every cell's figures over its realisations [R] each, priced in `workers` forked processes (1: in this one);
    the figures do not depend on which process prices them. `calibration` prices what the configuration leaves
    unset (the uncertainty measure's time, as the sweep's trials do); None: the records' own measured times, which
    differ from one decoding to the next."""
    _PRICING.update(results=results, method=method, calibration=calibration)
    jobs = [(cfg, r) for cfg in configs for r in range(realisations)]
    done: dict[int, tuple[dict[str, float], float]] = {}

    def report(j: int, outcome: tuple[dict[str, float], float]) -> None:
        done[j] = outcome
        cfg, r = jobs[j]
        print(f"[schedulers] {len(done)}/{len(jobs)}: {cfg.cell.scheduler} x {cfg.cell.n_devices}, realisation {r} "
              f"in {outcome[1]:.1f} s", flush=True)

    if workers == 1:
        for j, (cfg, r) in enumerate(jobs):
            report(j, _price(cfg, r))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            # the largest cells first, so that no worker is left with one long cell at the end
            order = sorted(range(len(jobs)), key=lambda j: -jobs[j][0].cell.n_devices)
            futures = {pool.submit(_price, *jobs[j]): j for j in order}
            for future in as_completed(futures):
                report(futures[future], future.result())
    priced = {}
    for i, cfg in enumerate(configs):
        draws = [done[i * realisations + r][0] for r in range(realisations)]
        priced[cfg.cell.scheduler, cfg.cell.n_devices] = {k: np.array([d[k] for d in draws]) for k in draws[0]}
    return priced


def summarise(*, priced: dict[tuple[str, int], dict[str, np.ndarray]], key: tuple[str, int]) -> dict:
    """One (scheduler, devices) row: every cell figure as (mean, low, high) over its realisations (bootstrap over
    them), and its goodput over the equal split's on the same realisations (paired; NaN without an equal row)."""
    draws = priced[key]
    ones = np.ones((len(draws["cell_goodput"]), 1))
    row: dict = {"scheduler": key[0], "n_devices": key[1]}
    for figure, values in draws.items():
        row[figure] = clustered_ratio(num=values[:, None], den=ones)
    equal = priced.get(("equal", key[1]))
    row["goodput_vs_equal"] = (clustered_ratio_vs(num=draws["cell_goodput"][:, None], den=ones,
                                                  ref_num=equal["cell_goodput"][:, None], ref_den=ones)
                               if equal is not None else (np.nan, np.nan, np.nan))
    return row


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default=str(ROOT / "tune_spaces" / "schedulers.yaml"))
    parser.add_argument("--pair", choices=("embedded", "tiny"), default="embedded")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--name", default="schedulers", help="docs/wireless/<name>.png and .md")
    parser.add_argument("--results", default=None, help="a folder keeping the decoded prompts: a later run with the "
                        "same decode settings reads them instead of decoding (e.g. to price another channel)")
    parser.add_argument("--realisations", type=int, default=8, help="draws of placement and fading per cell")
    parser.add_argument("--workers", type=int, default=1, help="processes pricing cells at once (forked after the "
                        "decoding; each holds its own reference bank, about 1.7 GB on the default process in time)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args(argv)
    if args.realisations < 1:
        raise SystemExit(f"--realisations must be >= 1, got {args.realisations}")
    if args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}")
    with tempfile.TemporaryDirectory() as tmp:
        # skipped rounds are not scored by the LLM: the cell's figures do not need it, and it is the slow part
        overrides = [*(tiny_overrides(Path(tmp)) if args.pair == "tiny" else []), "decode.evaluation_methods=[]",
                     *args.overrides]
        space = load_space(args.space, overrides=overrides)
        configs = [trial_config(base_overrides=overrides, space=space, params=p)
                   for p in every_scheduler(grid_points(space))]
        first = configs[0]
        method = first.cell.method
        if method not in space.methods:
            raise SystemExit(f"cell.method={method!r} is not among the space's methods {space.methods}")
        start = time.perf_counter()
        pair = load_pair(first.model)  # for the vocabulary size, also when every prompt is stored
        examples = load_examples(first.data)
        # keyed by what the method's tokens depend on (the channel only where they do), as a sweep's shared store
        store = ResultStore(Path(args.results) / method_key(cfg=first, method=method, send_prob=None)) \
            if args.results else None
        results = run_method(pair=pair, examples=examples, method=method, cfg=first, encoder=None, store=store)
        # the clock's solo passes, cached per model and machine: what the configuration leaves unset (the
        # uncertainty measure's time) is priced the same in every run, so a rerun gives the same figures
        calibration = run_calibration(pair=pair, prompt=examples[0].prompt, cfg=first)
        decode_s = time.perf_counter() - start
        tokens = sum(len(res.tokens) for res in results)
        print(f"[schedulers] decoded {len(results)} prompts of {method} ({tokens} tokens) once in {decode_s:.0f} s; "
              f"pricing {len(configs)} cells", flush=True)
        priced = price_cells(configs=configs, results=results, method=method, realisations=args.realisations,
                             workers=args.workers, calibration=calibration)
    rows = [summarise(priced=priced, key=key) for key in priced]
    distances = device_distances(configs[-1].cell)
    snrs = [mean_snr_db(device_channel(channel=first.channel, distance_m=d)) for d in distances]
    cell = first.cell
    setting = (f"{method}, {len(results)} prompts x <= {first.decode.max_new_tokens} tokens decoded once "
               f"({args.pair} pair, |V| = {pair.vocab_size}); channel.model={first.channel.model}, "
               f"channel.process={first.channel.process}"
               + (f" at {first.channel.speed_kmh:g} km/h" if has_time_axis(first.channel) else "")
               + f", W = {first.channel.bandwidth_hz / 1e6:g} MHz, devices over "
               f"{cell.min_distance_m:g}-{cell.radius_m:g} m "
               f"(average SNR {min(snrs):.1f} to {max(snrs):.1f} dB at 64 devices); verification "
               + ("priced alone" if cell.verify_deadline_ms is None else
                  f"batched per slot, deadline {cell.verify_deadline_ms:g} ms, at most {cell.verify_max_batch}")
               + f"; tau_SLM = {first.clock.tau_slm_ms} ms, tau_LLM = {first.clock.tau_llm_ms} ms")
    setting += (f"; {args.realisations} realisations of placement and fading per cell, means with 95% bootstrap "
                "intervals over them; x equal: goodput over the equal split's on the same realisations")
    lines = ["| scheduler | devices | goodput tok/s | x equal | cell tok/s | mean device tok/s | Jain's index | "
             "mean verify wait ms |", "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(figure: tuple[float, float, float], digits: int = 3) -> str:
        return f"{figure[0]:.{digits}f} [{figure[1]:.{digits}f}, {figure[2]:.{digits}f}]"

    for r in sorted(rows, key=lambda r: (r["scheduler"] != "equal", r["scheduler"], r["n_devices"])):
        lines.append(f"| {r['scheduler']} | {r['n_devices']} | {cell(r['cell_goodput'])} | "
                     f"{cell(r['goodput_vs_equal'], 2)} | {r['cell_throughput'][0]:.3f} | "
                     f"{cell(r['cell_mean_device_throughput'])} | {cell(r['cell_jain_index'])} | "
                     f"{r['cell_mean_verify_wait_ms'][0]:.1f} |")
    table = "\n".join(lines)
    command = "bench/schedulers.py " + " ".join(argv)
    print(f"\n{setting}\n\n{table}")
    assert set(CELL_FIGURES) <= set(rows[0])
    if not args.no_write:
        OUT.mkdir(parents=True, exist_ok=True)
        draw(rows, OUT / f"{args.name}.png", title=setting)
        (OUT / f"{args.name}.md").write_text(
            f"# Cell schedulers: goodput and fairness against the number of devices\n\n"
            f"`.venv/bin/python {command.strip()}` ({setting}).\n\n{table}\n\n"
            f"![goodput and fairness]({args.name}.png)\n")
        print(f"\n[schedulers] wrote {OUT / args.name}.png and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
