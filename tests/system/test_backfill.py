"""Two logical dates of one DAG get two training jobs; clearing one task and running it again re-attaches to
its job instead of training again (issue 10 point 4), through the real Airflow CLI on the local runtime."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_operator_local import ROLE
from tests.system.conftest import AIRFLOW, dags_test, succeeded

pytestmark = pytest.mark.system

DAG = '''
import pendulum
from airflow.sdk import DAG

from airflow_sm_pytorch import PyTorchTrainOperator

with DAG("backfill_train", schedule="@daily", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         catchup=False):
    PyTorchTrainOperator(task_id="train", aws_conn_id="sm_local", entry_point="train.py", source_dir={src!r},
                         role={role!r}, instance_type="local", instance_count=1, framework_version="2.6.0",
                         py_version="py312", poll_interval=0.5, deferrable=True)
'''
DATES = ("2026-01-01", "2026-01-02")


def _jobs(runtime) -> list[dict]:
    return runtime.client("sagemaker").list_training_jobs(MaxResults=100)["TrainingJobSummaries"]


@pytest.mark.timeout(600)
def test_two_logical_dates_two_jobs_and_a_cleared_task_reattaches(airflow_env, local_runtime, local_conn,
                                                                  tmp_path):
    dags, src = tmp_path / "dags", tmp_path / "code"
    dags.mkdir()
    src.mkdir()
    (src / "train.py").write_text("import time\nprint('training', flush=True)\ntime.sleep(1)\n")
    (dags / "backfill_train.py").write_text(DAG.format(src=str(src), role=ROLE))
    env = {**airflow_env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW_CONN_SM_LOCAL": os.environ["AIRFLOW_CONN_SM_LOCAL"]}

    for date in DATES:
        proc = dags_test(env, "backfill_train", date, timeout=300)
        assert succeeded(proc), (proc.stdout + proc.stderr)[-5000:]
    jobs = _jobs(local_runtime)
    assert len(jobs) == 2 and all(j["TrainingJobStatus"] == "Completed" for j in jobs), jobs

    with contextlib.closing(sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db")) as db:
        runs = db.execute("SELECT run_id, logical_date FROM dag_run WHERE dag_id = 'backfill_train' "
                          "ORDER BY logical_date").fetchall()
    assert [str(date)[:10] for _, date in runs] == list(DATES), runs
    run_ids = [run_id for run_id, _ in runs]
    # clear + run again: the same task instance of the first date, through the CLI
    proc = subprocess.run([AIRFLOW, "tasks", "test", "backfill_train", "train", run_ids[0]], check=False,
                          env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    again = _jobs(local_runtime)
    assert sorted(j["TrainingJobName"] for j in again) == sorted(j["TrainingJobName"] for j in jobs), again
    print(*[line for line in output.splitlines() if "attach" in line.lower()][:3], sep="\n")
    attached = [j["TrainingJobName"] for j in jobs if f"Attached to training job {j['TrainingJobName']}" in output
                or f"re-attaches to {j['TrainingJobName']}" in output]
    assert len(attached) == 1, output[-5000:]
    print(f"jobs {sorted(j['TrainingJobName'] for j in jobs)}; runs {run_ids}; {run_ids[0]} cleared and run "
          f"again re-attached to {attached[0]}")
