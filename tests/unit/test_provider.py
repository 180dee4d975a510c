"""The package is an Airflow provider: ``airflow providers list`` shows it, and its public names resolve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


# -- the provider's metadata is true (issue 12 point 6) ---------------------------------------------
ROOT = Path(__file__).resolve().parents[2]
CONNECTION_DOC = ROOT / "docs" / "connection.md"


def test_documentation_url_leads_to_a_page_that_exists():
    info = airflow_sm_pytorch.get_provider_info()
    url = info["documentation-url"]  # present in a checkout (setup.sh installs editable)
    assert url == (ROOT / "README.md").as_uri()
    assert "docs/connection.md" in (ROOT / "README.md").read_text()  # the README links the connection page


def test_the_description_names_only_what_exists():
    import re

    info = airflow_sm_pytorch.get_provider_info()
    named = set(re.findall(r"\b[A-Z][A-Za-z]+(?:Operator|Sensor|Predictor|Hook)\b", info["description"]))
    assert {"PyTorchTrainOperator", "DeployOperator", "DeleteEndpointOperator"} <= named
    for name in named:
        assert getattr(airflow_sm_pytorch, name) is not None, name
    import importlib

    for group in info["operators"] + info["hooks"]:
        for module in group["python-modules"]:
            importlib.import_module(module)
    for path in info["extra-links"]:
        module, _, cls = path.rpartition(".")
        assert getattr(importlib.import_module(module), cls) is not None, path


def _keys_the_hook_reads() -> set[str]:
    """String keys read (``x.get("k")``, ``x["k"]``) from the connection's ``sm_pytorch`` object and its
    ``local_runtime`` object in the hook's source: expressions named settings / local_runtime / out."""
    import ast

    source = (ROOT / "airflow_sm_pytorch" / "hooks" / "sagemaker_pytorch.py").read_text()
    holders = ("settings", "local_runtime", "out")
    keys = set()
    for node in ast.walk(ast.parse(source)):
        target = key = None
        if isinstance(node, ast.Subscript):
            target, key = node.value, node.slice
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args):
            target, key = node.func.value, node.args[0]
        if target is None or not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            continue
        name = ast.unparse(target).rsplit(".", 1)[-1]
        if name.split("(")[0].lstrip("_") in holders:
            keys.add(key.value)
    return keys


@pytest.mark.fast
def test_every_connection_key_the_hook_reads_is_documented():
    keys = _keys_the_hook_reads()
    assert {"default_bucket", "default_bucket_prefix", "local_runtime", "root", "autostart",
            "allow_paths"} <= keys  # the probe still finds what it should
    doc = CONNECTION_DOC.read_text()
    table = {line.split("|")[1].strip().strip("`").rsplit(".", 1)[-1]
             for line in doc.splitlines() if line.startswith("| `")}
    assert keys - table == set(), f"document these sm_pytorch keys in {CONNECTION_DOC.name}"
    assert "docs/connection.md" in (ROOT / "README.md").read_text()
