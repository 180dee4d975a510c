"""Run DAGs for real: ``airflow dags test`` in a throwaway AIRFLOW_HOME on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "PYTHONUNBUFFERED": "1",
    })
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return env


def dags_test(env: dict[str, str], dag_id: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``airflow dags test DAG_ID [ARGS]``; returns the finished process (output in .stdout)."""
    return subprocess.run([AIRFLOW, "dags", "test", dag_id, *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def succeeded(proc: subprocess.CompletedProcess) -> bool:
    out = proc.stdout + proc.stderr
    return proc.returncode == 0 and "state=success" in out and "state=failed" not in out

