"""The package is an Airflow provider: ``airflow providers list`` shows it, and its public names resolve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import airflow_sm_pytorch


def test_airflow_lists_the_provider(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    airflow = Path(sys.executable).with_name("airflow")
    out = subprocess.run([str(airflow), "providers", "list", "-o", "json"], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    providers = {p["package_name"]: p for p in json.loads(out.stdout[out.stdout.index("["):])}
    assert providers["airflow-sm-pytorch"]["version"] == airflow_sm_pytorch.__version__


def test_every_public_name_resolves():
    for name in airflow_sm_pytorch.__all__:
        assert getattr(airflow_sm_pytorch, name) is not None
