"""A real Airflow (API server, scheduler, DAG processor in a throwaway AIRFLOW_HOME) and a real Chromium
driven by Playwright.

Skips, saying why, when Chromium or Playwright is not installed (``apt-get install chromium``;
``pip install -e '.[browser]'``, which scripts/setup.sh does where Chromium is found).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    explicit = os.environ.get("SM_PYTORCH_TEST_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def pytest_collection_modifyitems(config, items):
    reason = None
    if chromium_path() is None:
        reason = "no Chromium on this machine (apt-get install chromium; or SM_PYTORCH_TEST_CHROMIUM=PATH)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            reason = ("Playwright is not installed (pip install -e '.[browser]'; scripts/setup.sh does it "
                      "where Chromium is found)")
    for item in items:
        if reason and "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.skip(reason=reason))


class Airflow:
    """Airflow's API server (and UI), scheduler and DAG processor over one throwaway AIRFLOW_HOME, each in a
    session of its own (``airflow standalone`` minus the triggerer, which nothing here needs)."""

    COMPONENTS = ("api-server", "scheduler", "dag-processor")

    def __init__(self, home: Path, conn: dict) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
        self.env = {
            **keep,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # only the run the test triggers: no scheduled runs of the example DAGs
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW_CONN_SM_PYTORCH": json.dumps(conn),
            "PYTHONUNBUFFERED": "1",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), keep.get("PATH", "")]),
        }

    def start(self, timeout: float) -> None:
        airflow = str(Path(sys.executable).with_name("airflow"))
        deadline = time.monotonic() + timeout
        subprocess.run([airflow, "db", "migrate"], env=self.env, check=True, capture_output=True,
                       timeout=timeout, cwd=self.home)
        for name in self.COMPONENTS:
            with open(self.home / f"{name}.log", "wb") as out:
                self.procs.append(subprocess.Popen([airflow, name], env=self.env, stdout=out,
                                                   stderr=subprocess.STDOUT, start_new_session=True,
                                                   cwd=self.home))
        while time.monotonic() < deadline:
            for name, proc in zip(self.COMPONENTS, self.procs):
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited {proc.returncode}:\n{self.tail(name)}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=2) as resp:
                    health = json.loads(resp.read())
                if all((health.get(part) or {}).get("status") == "healthy"
                       for part in ("metadatabase", "scheduler", "dag_processor")):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(1)
        raise TimeoutError(f"Airflow was not healthy after {timeout:.0f}s:\n"
                           + "\n".join(self.tail(name, 1500) for name in self.COMPONENTS))

    def has_run(self, dag_id: str, run_id: str) -> bool:
        """Whether Airflow's database (SQLite in this home) holds that DAG run."""
        import sqlite3
        from contextlib import closing

        try:
            with closing(sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True, timeout=5)) as db:
                row = db.execute("SELECT 1 FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
                return row.fetchone() is not None
        except sqlite3.Error:
            return False

    def task_logs(self, run_id: str, chars: int = 1500) -> str:
        """The end of every task log of ``run_id`` (why a task upstream failed, when one did)."""
        parts = []
        for path in sorted((self.home / "logs").glob(f"dag_id=*/run_id={run_id}/task_id=*/attempt=*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.parent.name}/{path.name}\n{text[-chars:]}")
        return "\n".join(parts) or f"(no task logs of {run_id} under {self.home / 'logs'})"

    def tail(self, name: str, chars: int = 4000) -> str:
        try:
            return f"--- {name}\n" + (self.home / f"{name}.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            alive = [p for p in self.procs if p.poll() is None]
            for proc in alive:
                try:
                    os.killpg(proc.pid, sig)
                except OSError:
                    pass
            end = time.monotonic() + wait
            while any(p.poll() is None for p in alive) and time.monotonic() < end:
                time.sleep(0.2)
        # task runners the executor started, in sessions of their own: whatever still runs for this home
        import psutil

        for proc in psutil.process_iter(["environ"]):
            try:
                if (proc.info.get("environ") or {}).get("AIRFLOW_HOME") == str(self.home):
                    proc.kill()
            except (psutil.Error, OSError):
                continue


@pytest.fixture
def airflow_ui(tmp_path_factory):
    """A running Airflow whose ``sm_pytorch`` connection is the README's (no keys: it signs with the
    runtime's key file), served by a local runtime started here on that connection's root and port (so a
    slow machine does not race the hook's 30 s autostart wait). Everything is stopped afterwards, the
    runtime's jobs included."""
    from tests.conftest import LocalRuntime

    home = tmp_path_factory.mktemp("airflow-ui")
    runtime = LocalRuntime(tmp_path_factory.mktemp("sm-local"), tmp_path_factory.mktemp("sm-local-logs"),
                           allow=[tmp_path_factory.getbasetemp()])
    runtime.KEYS = {}  # the runtime's own key file, as an autostarted one
    runtime.start()
    conn = {"conn_type": "aws",
            "extra": {"endpoint_url": runtime.url, "region_name": "us-east-1",
                      "sm_pytorch": {"local_runtime": {"root": str(runtime.root), "autostart": True}}}}
    airflow = Airflow(home, conn)
    try:
        airflow.start(timeout=float(os.environ.get("SM_PYTORCH_TEST_AIRFLOW_START_S", "150")))
        yield airflow
    finally:
        airflow.stop()
        runtime.cleanup()
