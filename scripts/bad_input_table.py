"""The bad-input table: every case of tests/bad_inputs.py run as its job's `main` would run it from the command
line, with the exit status, the one-line message and the seconds to the refusal (imports excluded; a command adds
about 5 s of importing ray, torch and transformers).

    .venv/bin/python scripts/bad_input_table.py > bad_inputs.md
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from tests.bad_inputs import CASES, fill, write_fixtures  # noqa: E402
from uhlm_ray.models.tiny import WORDS, save_tiny_model  # noqa: E402


def _job(name: str):
    spec = importlib.util.spec_from_file_location(f"job_{name}", ROOT / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    import ray

    root = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    slm = save_tiny_model(root / "slm", words=WORDS, layers=2, hidden=32, seed=1)
    llm = save_tiny_model(root / "llm", words=WORDS, layers=3, hidden=48, seed=2)
    values = write_fixtures(root, tiny_slm=str(slm), tiny_llm=str(llm))
    jobs = {name: _job(name) for name in ("evaluate", "reproduce", "cell", "sweep")}
    os.chdir(root)
    rows = []
    for job, argv, _ in CASES:
        err = io.StringIO()
        start = time.perf_counter()
        code = None
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                jobs[job].main(fill(argv, values))
            except SystemExit as exit_:
                code = exit_.code
            finally:
                if ray.is_initialized():
                    ray.shutdown()
        seconds = time.perf_counter() - start
        message = next((line for line in err.getvalue().splitlines() if line.startswith("error:")), "(none)")
        shown = " ".join(argv).replace(str(root), "<tmp>").replace("|", "\\|")
        rows.append(f"| `{job}` | `{shown}` | {code} | {message.replace(str(root), '<tmp>').replace('|', '/')} | "
                    f"{seconds:.2f} |")
    print(f"{len(rows)} mistakes, each refused before any model loads or Tune starts:\n")
    print("| job | input | exit | message | s to refusal |")
    print("|---|---|---:|---|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
