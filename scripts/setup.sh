#!/usr/bin/env bash
# Creates .venv (python3.11) and installs uhlm_ray with the embedded model pair and the test tools.
# Idempotent: a second run only checks. torch is pinned by constraints.txt to the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
fi
stamp=.venv/.uhlm_ray_installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  .venv/bin/pip install --quiet -c constraints.txt -e '.[embedded,test]'
  touch "$stamp"
fi
