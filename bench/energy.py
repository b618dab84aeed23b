"""The energy table per method and the accuracy-energy figure, from a finished evaluate run.

    .venv/bin/python jobs/evaluate.py                       # writes OUTPUT_DIR/evaluate/RUN_KEY/summary.json
    .venv/bin/python bench/energy.py OUTPUT_DIR/evaluate/RUN_KEY [--png docs/wireless/accuracy_energy.png]

Reads the run's `summary.json` (summarize_methods' figures, energy included: uhlm_ray/link/energy.py), prints the
device's J per token with its parts, J per round and the base station's J per verified token, each with its 95%
bootstrap interval over prompts, and draws accuracy against the device's J/token (frontier dashed) beside where each
method's energy goes (uhlm_ray/experiments/figures.py accuracy_energy). The coefficients and their sources are in the
README, "Energy and the downlink".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from uhlm_ray.experiments.figures import accuracy_energy, energy_table


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="an evaluate run's folder (it holds summary.json)")
    parser.add_argument("--png", default="docs/wireless/accuracy_energy.png")
    args = parser.parse_args(argv)
    summary = Path(args.run) / "summary.json"
    if not summary.is_file():
        print(f"no summary.json in {args.run}: run jobs/evaluate.py first", file=sys.stderr)
        return 2
    summaries = json.loads(summary.read_text())
    print(energy_table(summaries))
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    accuracy_energy(summaries=summaries, path=Path(args.png))
    print(f"\nwrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
