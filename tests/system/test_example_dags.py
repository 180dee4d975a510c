"""Every DAG in dags/ parses, and the example trains for real on the local runtime (autostarted)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from tests.conftest import free_port
from tests.system.conftest import ROOT, dags_test, succeeded


def test_dags_folder_has_no_import_errors(airflow_env):
    code = ("from airflow.dag_processing.dagbag import DagBag\n"
            f"bag = DagBag({str(ROOT / 'dags')!r})\n"
            "import json; print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()},"
            " 'dags': sorted(bag.dag_ids)}))")
    out = subprocess.run([sys.executable, "-c", code], env=airflow_env, capture_output=True, text=True,
                         check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert {"example_pytorch_train", "example_pytorch_byom"} <= set(report["dags"])


def run_example(airflow_env, root, dag_id, *args, deferrable=False):
    """``airflow dags test DAG_ID`` with the README's connection (no keys: the hook signs with the runtime's
    key file) autostarting a runtime on ``root``; the runtime is stopped afterwards. ``deferrable`` sets
    Airflow's ``[operators] default_deferrable``, which our operators follow (``dags test`` runs the
    triggers inline)."""
    conn = {"conn_type": "aws",
            "extra": {"endpoint_url": f"http://127.0.0.1:{free_port()}", "region_name": "us-east-1",
                      "sm_pytorch": {"local_runtime": {"root": str(root), "autostart": True}}}}
    try:
        env = {**airflow_env, "AIRFLOW_CONN_SM_PYTORCH": json.dumps(conn),
               "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": str(deferrable)}
        proc = dags_test(env, dag_id, *args)
    finally:
        server = root / "server.json"
        if server.exists():  # the hook started the runtime in the background; stop it
            os.kill(json.loads(server.read_text())["pid"], signal.SIGTERM)
    return proc, proc.stdout + proc.stderr


def test_example_dag_trains_deferred_on_the_local_runtime(airflow_env, tmp_path):
    """The plain (worker-held) wait is what scripts/example.sh runs; here every operator defers."""
    root = tmp_path / "sm-local"
    proc, output = run_example(airflow_env, root, "example_pytorch_train", "--conf",
                               json.dumps({"epochs": 15}), deferrable=True)
    assert succeeded(proc), output[-6000:]
    assert "state=deferred" in output or "DEFERRED" in output.upper(), output[-3000:]
    assert "'epochs': 15" in output  # the UI form's value reached the script as argv
    assert "test_accuracy=" in output  # streamed live from the job's log
    assert "The trained model landed at file://" in output
    models = list(root.glob("store/sagemaker-us-east-1/**/output/model.tar.gz"))
    assert len(models) == 1, models
    assert "served accuracy=" in output  # the endpoint answered the held-back points
    served = float(output.split("served accuracy=")[1].split()[0])
    assert served > 0.9, output[-4000:]
    assert "Deleted: endpoint" in output  # torn down


def test_bring_your_own_model_example_serves_and_tears_down(airflow_env, tmp_path):
    proc, output = run_example(airflow_env, tmp_path / "sm-local", "example_pytorch_byom")
    assert succeeded(proc), output[-6000:]
    assert "answered [[1.5], [-1.5]]" in output
    assert "Deleted: endpoint" in output


def test_distributed_example_trains_on_two_hosts_with_torchrun_mpi_and_pytorchddp(airflow_env, tmp_path):
    proc, output = run_example(airflow_env, tmp_path / "sm-local", "example_pytorch_distributed", "--conf",
                               json.dumps({"epochs": 3}))
    assert succeeded(proc), output[-6000:]
    assert output.count("world size 2, hosts ['algo-1', 'algo-2']") == 3, output[-4000:]
    assert "[algo-2-" in output and "rank 1/2 on algo-2" in output  # both hosts' logs reach the task log


def test_attach_example_deploys_the_attached_jobs_model(airflow_env, tmp_path):
    proc, output = run_example(airflow_env, tmp_path / "sm-local", "example_pytorch_attach")
    assert succeeded(proc), output[-6000:]
    assert "test_accuracy=" in output  # the attached job's log, printed by the sensor
    served = float(output.split("served accuracy=")[1].split()[0])
    assert served > 0.9 and "PyTorch 2.6.0, train.py" in output, output[-4000:]
    assert "Deleted: endpoint" in output
