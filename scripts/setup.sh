#!/usr/bin/env bash
# Create .venv/ at the repository root and install the project with what the local runtime and the
# tests need. Idempotent: a second run only checks. Used by example.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch is pinned exactly in pyproject.toml (the CPU wheel); numpy is declared, torch does not pull it.
  .venv/bin/python -m pip install -q -e ".[local,test]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
