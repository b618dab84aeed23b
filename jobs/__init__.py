"""Entry points for `ray job submit -- python jobs/<job>.py ...`, installed as console scripts with the same
arguments: `uhlm-evaluate`, `uhlm-sweep`, `uhlm-cell`, `uhlm-reproduce` (pyproject.toml)."""

from __future__ import annotations

import importlib
import sys


def _run(job: str) -> int:
    return importlib.import_module(f"jobs.{job}").main(sys.argv[1:])


def evaluate() -> int:
    return _run("evaluate")


def sweep() -> int:
    return _run("sweep")


def cell() -> int:
    return _run("cell")


def reproduce() -> int:
    return _run("reproduce")
