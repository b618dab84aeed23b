"""The reproduction job end to end on the tiny pair and two public sets: its report puts each of the paper's numbers
beside ours with an interval, it shows progress, and a rerun resumes from the store without decoding again."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"public data folder {SHARED_DATA} not present")


def test_reproduction_reports_intervals_and_resumes(tiny_pair_dirs, tmp_path):
    slm, llm = tiny_pair_dirs
    overrides = [
        "model.pair=custom", f"model.slm={slm}", f"model.llm={llm}", "model.dtype=float32",
        f"data.path={SHARED_DATA}", "reproduce.datasets=[alpaca,qed]", "reproduce.n_prompts=4",
        "reproduce.thresholds=[0.3,0.6]", "reproduce.measures=[temperature,mc_dropout]", "decode.max_new_tokens=6",
        "uncertainty.k=4", f"output_dir={tmp_path / 'out'}",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "tracking.experiment=test-reproduce",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, str(ROOT / "jobs" / "reproduce.py"), *overrides]

    first = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    # progress over every (run, method, prompt): 4 x (2 sets x 7 methods + 2 measures + 2 thresholds), of which
    # Fig. 3's temperature run is Table I's HLM, found in the store
    assert _last_progress(first.stdout) == (68, 68, 4)
    (report_path,) = (tmp_path / "out" / "reproduce").glob("*/reproduction.md")
    report = report_path.read_text()
    assert "python jobs/reproduce.py " in report and "wall time" in report
    u_hlm = next(line for line in report.splitlines() if line.startswith("| U-HLM |"))
    cells = [c.strip() for c in u_hlm.strip("|").split("|")][1:]
    assert len(cells) == 4  # alpaca ours, paper, qed ours, paper
    assert re.fullmatch(r"-?\d\.\d{4} \[-?\d\.\d{4}, -?\d\.\d{4}\]", cells[0]), cells[0]  # ours, with its interval
    assert cells[1] == "0.5585"  # the paper's
    tr = next(line for line in report.splitlines() if line.startswith("| tr_reduction |"))
    value, interval, paper = [c.strip() for c in tr.strip("|").split("|")][1:]
    low, high = (float(v) for v in interval.strip("[]").split(","))
    assert low <= float(value) <= high and paper == "0.4593"

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    decoded = re.findall(r"(\d+) decoded, (\d+) reused", again.stdout)
    assert decoded and all(d == "0" for d, _ in decoded)  # everything came back from the store
    decoded_now, to_decode, found = _last_progress(again.stdout)
    assert decoded_now == 0 and to_decode + found == 72 and found >= 71  # the bar's last frame may lag one

    # other figures' settings make another report folder but share the store: a subset of the runs decodes nothing
    subset = [o for o in cmd if not o.startswith(("reproduce.thresholds=", "reproduce.measures="))]
    third = subprocess.run([*subset, "reproduce.thresholds=[0.6]", "reproduce.measures=[temperature]"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert third.returncode == 0, third.stderr[-3000:]
    decoded = re.findall(r"(\d+) decoded, (\d+) reused", third.stdout)
    assert decoded and all(d == "0" for d, _ in decoded)
    assert len(list((tmp_path / "out" / "reproduce").glob("*/reproduction.md"))) == 2


def test_stores_kept_per_run_key_move_into_the_shared_store(tmp_path):
    from jobs.reproduce import adopt_run_stores

    old = tmp_path / "0123456789ab" / "shared" / "llm-aaaa"
    old.mkdir(parents=True)
    (old / "llm.jsonl").write_text("{}\n")
    kept = tmp_path / "shared" / "slm-bbbb"
    kept.mkdir(parents=True)
    clash = tmp_path / "ba9876543210" / "shared" / "slm-bbbb"
    clash.mkdir(parents=True)
    adopt_run_stores(tmp_path)
    assert (tmp_path / "shared" / "llm-aaaa" / "llm.jsonl").read_text() == "{}\n" and not old.exists()
    assert clash.exists()  # a method key the shared store already holds is left where it was


def _last_progress(out: str) -> tuple[int, ...]:
    """(decoded, to decode, reused) from the last state of the progress bar."""
    states = re.findall(r"(\d+)/(\d+) \[[^]\[]*?(\d+) reused", out)  # "68/68 [00:10<00:00, 6.5prompt/s, 4 reused"
    return tuple(int(v) for v in states[-1])
