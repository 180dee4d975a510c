"""docker-compose.yaml: no Docker engine here, so check its structure and that every command exists."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from airflow_sm_pytorch.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
AIRFLOW = [name for name, svc in SERVICES.items() if name.startswith("airflow-") and name != "airflow-init"]


def test_official_layout_plus_the_runtime_service():
    expected = {"postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                "airflow-worker", "airflow-triggerer", "airflow-init", "sm-local"}
    assert expected <= set(SERVICES)
    for name in AIRFLOW + ["sm-local"]:
        assert SERVICES[name]["build"] == "."
        assert "/opt/airflow/sm-local" in " ".join(SERVICES[name]["volumes"])


@pytest.mark.parametrize("service", AIRFLOW)
def test_every_airflow_command_exists(service):
    command = SERVICES[service]["command"].split()
    airflow = Path(sys.executable).with_name("airflow")
    result = subprocess.run([str(airflow), *command, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_runtime_service_runs_our_cli_and_is_what_the_connection_points_at():
    runtime = SERVICES["sm-local"]
    assert runtime["entrypoint"] == ["airflow-sm-pytorch"]
    assert shutil.which("airflow-sm-pytorch", path=str(Path(sys.executable).parent))
    args = build_parser().parse_args(runtime["command"])
    assert (args.command, args.local_command) == ("local", "serve")
    assert "ports" not in runtime, "the runtime must not be published on the host"
    conn = json.loads(SERVICES["airflow-scheduler"]["environment"]["AIRFLOW_CONN_SM_PYTORCH"])
    assert conn["extra"]["endpoint_url"] == f"http://sm-local:{args.port}"
    assert conn["extra"]["sm_pytorch"]["local_runtime"]["root"] == args.root
    # the workers reach it as http://sm-local:PORT: that Host must be served; no shared password needed
    assert "sm-local" in args.allowed_host
    assert "login" not in conn and "password" not in conn
    assert "/ping" in " ".join(runtime["healthcheck"]["test"])
    assert runtime["depends_on"] == {}


def test_dockerfile_installs_the_provider_with_the_pinned_torch():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "[local]" in dockerfile
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch==2.13.0"' in pyproject


def test_first_start_cannot_deadlock_and_the_runtime_can_write_its_volume():
    """sm-local runs as the airflow user on a fresh named volume: the image owns the mount point (a new
    volume takes its owner), and airflow-init (the only chown) neither waits for sm-local nor the reverse."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "chown 50000:0 /opt/airflow/sm-local" in dockerfile
    assert SERVICES["sm-local"]["user"].startswith("${AIRFLOW_UID:-50000}")
    assert "sm-local" not in SERVICES["airflow-init"]["depends_on"]
    assert SERVICES["sm-local"]["depends_on"] == {}
    assert "--index-url https://download.pytorch.org/whl/cpu" in dockerfile  # the CPU build, not CUDA


def test_the_build_context_leaves_out_the_venv_and_runtime_data():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv/", ".sm-local/", ".git/"} <= set(ignored)
