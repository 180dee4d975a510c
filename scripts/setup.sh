#!/usr/bin/env bash
# Create .venv/ at the repository root and install the project with what the local runtime and the
# tests need. Idempotent: a second run only checks. Used by example.sh and test.sh.
# Installs with uv (pip-installed into .venv first; resolving where pip would, see scripts/uv_install.py):
# about 4x faster than pip from nothing. SETUP_INSTALLER=pip, or uv failing, installs with pip instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extras=local,test
# the browser check's driver only where there is a browser for it (tests/browser skips, saying why, elsewhere)
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; then
  extras=$extras,browser
fi
stamp=.venv/.installed-$( (cat pyproject.toml scripts/uv_install.py; echo "$extras") | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  # torch is pinned exactly in pyproject.toml (the CPU wheel); numpy is declared, torch does not pull it.
  if [ "${SETUP_INSTALLER:-uv}" = uv ] && .venv/bin/python scripts/uv_install.py -q pip -e ".[$extras]"; then
    :
  else
    [ "${SETUP_INSTALLER:-uv}" = uv ] && echo "setup.sh: installing with uv failed; installing with pip" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[$extras]"
  fi
  rm -f .venv/.installed-*
  touch "$stamp"
fi
