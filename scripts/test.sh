#!/usr/bin/env bash
# The test suite: unit, integration (moto and the local runtime on loopback) and system (the example
# DAGs through `airflow dags test`). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
