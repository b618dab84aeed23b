"""Run a job in this process and list the deprecation warnings that *our* calls caused, as JSON on the last line.

    python tests/our_deprecations.py evaluate <overrides...>

A warning is ours when the project's own code called, directly, into the package that issued it (or when it is
issued in our code): `past_key_values=` passed by our session to transformers is ours; a deprecated SQLAlchemy
option that MLflow uses inside its store is MLflow's, not ours, though our code is further up the stack.
"""

from __future__ import annotations

import json
import sys
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = tuple(str(ROOT / part) for part in ("uhlm_ray", "actors", "jobs"))
CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
# frames that only pass a call on (`model(...)` reaches the model's forward through torch's Module.__call__)
DISPATCH = ("torch/nn/modules/module.py", "torch/utils/_contextlib.py", "/functools.py", "/contextlib.py")


def _package(filename: str) -> str:
    """The top-level package a file belongs to (site-packages/<pkg>/...), or the file itself."""
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return parts[parts.index(marker) + 1].split(".")[0]
    return filename


def ours(*, stack: list[traceback.FrameSummary]) -> bool:
    """`stack`: outermost first, ending in the frame that called `warnings.warn` (the issuer, whatever stacklevel
    the warning is attributed to)."""
    frames = [f for f in stack if "/warnings.py" not in f.filename]
    if frames[-1].filename.startswith(OURS):
        return True
    innermost = max((i for i, f in enumerate(frames) if f.filename.startswith(OURS)), default=None)
    if innermost is None:
        return False
    below = [f.filename for f in frames[innermost + 1:] if not f.filename.endswith(DISPATCH)]
    # the first frame below our call, past torch's module call dispatch: the API we used
    return bool(below) and _package(below[0]) == _package(frames[-1].filename)


def main(job: str, argv: list[str]) -> None:
    found: list[dict] = []

    def record(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, CATEGORIES) and ours(stack=traceback.extract_stack()[:-1]):
            found.append({"category": category.__name__, "message": str(message)[:300],
                          "where": f"{filename}:{lineno}"})

    warnings.showwarning = record
    for category in CATEGORIES:
        warnings.simplefilter("always", category)
    sys.argv = [job, *argv]
    from importlib import import_module

    code = 0
    try:
        code = import_module(f"jobs.{job}").main(argv)
    finally:
        print(json.dumps({"exit": code, "ours": found}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
