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
# WordNet for prompt-perturbation uncertainty (read by nltk): Debian's wordnet-base, when this machine can install
# it; otherwise the measure says how to get it (`python -m nltk.downloader wordnet` works too).
if [ ! -f /usr/share/wordnet/data.noun ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo
  else SUDO=none; fi
  if [ "$SUDO" != none ]; then
    ($SUDO apt-get install -y -q wordnet-base >/dev/null 2>&1 ||
      { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q wordnet-base >/dev/null 2>&1; }) ||
      echo "setup: could not install wordnet-base; prompt perturbation will need WordNet" >&2
  fi
fi
