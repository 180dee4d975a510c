"""Every module of the package is pinned by a test (STYLE.md principle 10)."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.fast  # the quick lane: scripts/test.sh -m fast

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "airflow_sm_pytorch"
#: Modules exercised through their callers, and the tests that do it.
COVERED_BY = {
    "airflow_sm_pytorch.hooks.errors": "tests/integration/test_hook_throttling.py",
    "airflow_sm_pytorch.hooks.logs": "tests/integration/test_operator_local.py",
    "airflow_sm_pytorch.local.api": "tests/integration/test_local_server.py",
    "airflow_sm_pytorch.local.protocol": "tests/integration/test_local_server.py",
    "airflow_sm_pytorch.local.training_jobs": "tests/integration/test_local_faults.py",
    "airflow_sm_pytorch.local.cloudwatch_logs": "tests/integration/test_local_server.py",
    "airflow_sm_pytorch.local.endpoint": "tests/integration/test_local_endpoints.py",
    "airflow_sm_pytorch.local.serving.codecs": "tests/integration/test_model_server.py",
    "airflow_sm_pytorch.local.serving.handlers": "tests/integration/test_model_server.py",
    "airflow_sm_pytorch.local.serving.server": "tests/integration/test_model_server.py",
    "airflow_sm_pytorch.local.serving.worker": "tests/integration/test_model_server.py",
    "airflow_sm_pytorch.local.training.process": "tests/integration/test_runner.py",
    "airflow_sm_pytorch.local.training.staging": "tests/integration/test_runner.py",
    "airflow_sm_pytorch.local.training.venvs": "tests/integration/test_runner.py",
}


def test_every_module_has_a_test():
    tests_text = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if module in COVERED_BY:
            assert (ROOT / COVERED_BY[module]).exists(), module
            continue
        if module not in tests_text and f"import {path.stem}" not in tests_text:
            missing.append(module)
    assert missing == [], "modules without a test (add one, or name the covering test in COVERED_BY)"
