"""Our own calls raise no deprecation warning from transformers, torch, Ray or MLflow: the evaluate job (models,
torch, MLflow) and a sweep (Ray, Tune, MLflow) run with every DeprecationWarning, PendingDeprecationWarning and
FutureWarning caught, and each one that our code caused is an error (tests/our_deprecations.py says which are
ours). Warnings that a library causes inside another (MLflow's SQLAlchemy options) are not ours to fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from our_deprecations import ROOT, ours  # noqa: E402

LIBRARY = "/venv/lib/python3.11/site-packages/{}/api.py"


def _stack_of_warning(source: dict[str, str], entry: str) -> list[traceback.FrameSummary]:
    """Run `entry` from code compiled under the given file names; the stack at the moment it warns."""
    namespace: dict = {"warnings": warnings}
    for filename, code in source.items():
        exec(compile(code, filename, "exec"), namespace)  # noqa: S102 - test code with chosen file names
    seen: list = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        previous = warnings.showwarning
        warnings.showwarning = lambda *a, **k: seen.append(traceback.extract_stack()[:-1])
        try:
            namespace[entry]()
        finally:
            warnings.showwarning = previous
    (stack,) = seen
    return stack


def test_a_warning_is_ours_when_our_code_called_the_package_that_issued_it():
    lib, other, mine = LIBRARY.format("somelib"), LIBRARY.format("otherlib"), str(ROOT / "uhlm_ray" / "fake.py")
    old_api = "def old_api():\n    warnings.warn('use new_api', DeprecationWarning, stacklevel=2)\n"
    assert ours(stack=_stack_of_warning({lib: old_api, mine: "def ours_calls():\n    old_api()\n"}, "ours_calls"))
    # our code calls otherlib, which calls the deprecated API itself: otherlib's warning, not ours
    inside = {lib: old_api, other: "def wrapper():\n    old_api()\n", mine: "def ours_calls():\n    wrapper()\n"}
    assert not ours(stack=_stack_of_warning(inside, "ours_calls"))
    own = {mine: "def ours_warns():\n    warnings.warn('ours', FutureWarning)\n"}
    assert ours(stack=_stack_of_warning(own, "ours_warns"))


def _run(job: str, *args: str, cwd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "our_deprecations.py"), job, *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _tiny(tiny_pair_dirs, tmp_path) -> list[str]:
    slm, llm = tiny_pair_dirs
    return ["model.pair=custom", f"model.slm={slm}", f"model.llm={llm}", "model.dtype=float32",
            "data.n_prompts=2", "decode.max_new_tokens=6", f"output_dir={tmp_path / 'out'}",
            f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"]


@pytest.mark.parametrize("job", ["evaluate", "sweep"])
def test_our_calls_raise_no_deprecation_warning(job, tiny_pair_dirs, tmp_path):
    args = _tiny(tiny_pair_dirs, tmp_path)
    if job == "sweep":
        space = tmp_path / "two.yaml"
        space.write_text("name: two\nobjectives:\n  - {metric: u_hlm.accuracy, mode: max}\nsearch: grid\n"
                         "methods: [llm, u_hlm]\nparams:\n  policy.u_th: {grid: [0.2, 0.6]}\n")
        args = [str(space), *args]
    result = _run(job, *args, cwd=tmp_path)
    assert result["exit"] == 0
    assert result["ours"] == [], "\n".join(f"{w['category']} at {w['where']}: {w['message']}" for w in result["ours"])
