#!/usr/bin/env bash
# The main job: run the example DAG end to end on the local SageMaker-compatible runtime with
# `airflow dags test`, in a throwaway AIRFLOW_HOME. No AWS account, no Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
repo=$(pwd)
export AIRFLOW_HOME=$(mktemp -d -t airflow-home-XXXXXX)
export AIRFLOW__CORE__DAGS_FOLDER="$repo/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export SM_PYTORCH_LOCAL_ROOT=${SM_PYTORCH_LOCAL_ROOT:-$repo/.sm-local}
port=${SM_PYTORCH_LOCAL_PORT:-8787}
# The local runtime is just an AWS connection whose endpoint is the runtime (see README).
export AIRFLOW_CONN_SM_PYTORCH=$(cat <<JSON
{"conn_type": "aws",
 "extra": {"endpoint_url": "http://127.0.0.1:$port", "region_name": "us-east-1",
           "sm_pytorch": {"local_runtime": {"root": "$SM_PYTORCH_LOCAL_ROOT", "autostart": true}}}}
JSON
)
.venv/bin/airflow db migrate > "$AIRFLOW_HOME/db-migrate.log" 2>&1
# The hook starts the runtime on first use (autostart); stop it at the end unless it was already up.
was_running=no
if .venv/bin/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/ping', timeout=1)" 2>/dev/null; then
  was_running=yes
fi
stop_runtime() {
  if [ "$was_running" = no ] && [ -f "$SM_PYTORCH_LOCAL_ROOT/server.json" ]; then
    kill "$(.venv/bin/python -c "import json; print(json.load(open('$SM_PYTORCH_LOCAL_ROOT/server.json'))['pid'])")" 2>/dev/null || true
  fi
}
trap stop_runtime EXIT
echo "Running example_pytorch_train (AIRFLOW_HOME=$AIRFLOW_HOME, runtime root $SM_PYTORCH_LOCAL_ROOT)"
set +e
.venv/bin/airflow dags test example_pytorch_train 2>&1 | tee "$AIRFLOW_HOME/dags-test.log" \
  | grep -E "Created training job|Attached to training job|epoch=|test_accuracy=|landed at|members:|Endpoint .*InService|served accuracy=|Deleted:|DagRun Finished|ERROR|Traceback|JobFailed" \
  | grep -v '"Regex":' \
  | sed -E 's/^[0-9TZ:.-]+ \[[a-z ]+\] //; s/ +\[(airflow|sagemaker)[^]]*\].*$//' 
status=${PIPESTATUS[0]}
set -e
if grep -q "DagRun Finished.*state=success" "$AIRFLOW_HOME/dags-test.log"; then
  echo "example_pytorch_train: success. Full log: $AIRFLOW_HOME/dags-test.log"
  echo "Jobs, logs and models live under $SM_PYTORCH_LOCAL_ROOT; serve them again with"
  echo "  .venv/bin/airflow-sm-pytorch local serve --root $SM_PYTORCH_LOCAL_ROOT"
  exit 0
fi
echo "example_pytorch_train did not succeed (airflow exit $status); full log: $AIRFLOW_HOME/dags-test.log" >&2
exit 1
