#!/usr/bin/env bash
# The test suite: unit, integration (moto and the local runtime on loopback), system (the example DAGs
# through `airflow dags test`) and, where Chromium is installed, the browser check. Extra arguments go
# to pytest.
#   bash scripts/test.sh              everything, in parallel (pytest-xdist: cores + 1 workers, or $TEST_WORKERS)
#   bash scripts/test.sh -m fast      the fast lane: pure-Python tests, serial, under 10 s
#   bash scripts/test.sh -n 0 ...     serially
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
args=(-q -p no:cacheprovider -n auto --dist worksteal --durations=25)
prev=
for arg in "$@"; do
  # the fast lane starts no workers and skips hypothesis's plugin (seconds of start-up, none of its tests)
  if [ "$prev $arg" = "-m fast" ] || [ "$arg" = -mfast ]; then
    args=(-q -p no:cacheprovider -p no:hypothesispytest)
  fi
  prev=$arg
done
exec .venv/bin/python -m pytest "${args[@]}" "$@"
