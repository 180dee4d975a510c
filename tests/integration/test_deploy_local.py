"""DeployOperator, DeleteEndpointOperator and PyTorchPredictor against the local runtime: a trained job's
model and a bring-your-own model.tar.gz really served, updated when they change, torn down."""

from __future__ import annotations

import io
import json
import tarfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from airflow.sdk.exceptions import AirflowFailException

from airflow_sm_pytorch.exceptions import JobFailed
from airflow_sm_pytorch.operators.deploy import DeleteEndpointOperator, DeployOperator
from airflow_sm_pytorch.operators.train import PyTorchTrainOperator
from airflow_sm_pytorch.predictor import (CSVDeserializer, CSVSerializer, JSONDeserializer, JSONSerializer,
                                          PyTorchPredictor)

pytestmark = pytest.mark.integration
ROLE = "arn:aws:iam::000000000000:role/local"
COMMON = dict(framework_version="2.6.0", py_version="py312", role=ROLE, instance_type="local",
              initial_instance_count=1, poll_interval=0.3)
INFERENCE = """\
import os
import torch

SCALE = {scale}

def model_fn(model_dir):
    return torch.jit.load(os.path.join(model_dir, "model.pt"))

def predict_fn(data, model):
    with torch.no_grad():
        return model(data) * SCALE
"""
TRAIN = """\
import os
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, x):
        return self.linear(x)

def model_fn(model_dir):  # the seed's pattern: inference functions live in the training script
    return torch.jit.load(os.path.join(model_dir, "model.pt"))

if __name__ == "__main__":
    torch.manual_seed(0)
    net = Net()
    torch.jit.script(net).save(os.path.join(os.environ["SM_MODEL_DIR"], "model.pt"))
    print("saved", flush=True)
"""


def _context(task_id: str, run_id: str = "manual__1"):
    return {"ti": SimpleNamespace(dag_id="d", task_id=task_id, run_id=run_id, map_index=-1, try_number=1)}


def _model(tmp_path):
    torch.manual_seed(1)
    net = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 2)))
    buffer = io.BytesIO()
    torch.jit.save(net, buffer)
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("model.pt")
        info.size = len(buffer.getvalue())
        tar.addfile(info, io.BytesIO(buffer.getvalue()))
    return net, archive


def _source(tmp_path, scale):
    src = tmp_path / f"src-{scale}"
    src.mkdir(exist_ok=True)
    (src / "inference.py").write_text(INFERENCE.format(scale=scale))
    return src


def test_bring_your_own_model_deploys_predicts_updates_and_tears_down(local_conn, tmp_path):
    net, archive = _model(tmp_path)
    deploy = DeployOperator(task_id="deploy", aws_conn_id=local_conn, model_data=archive.as_uri(),
                            entry_point="inference.py", source_dir=str(_source(tmp_path, 1)),
                            endpoint_name="byom", **COMMON)
    result = deploy.execute(_context("deploy"))
    assert json.loads(json.dumps(result)) == result
    assert result["EndpointStatus"] == "InService" and result["EndpointName"] == "byom"
    assert result["ModelDataUrl"].endswith(f"/{result['ModelName']}/model.tar.gz")  # the repacked copy
    assert result["Image"].endswith("pytorch-inference:2.6.0-cpu-py312")

    x = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    expected = net(torch.from_numpy(x)).detach().numpy()
    predictor = PyTorchPredictor("byom", aws_conn_id=local_conn)
    got = predictor.predict(x)  # NPY in, NPY out
    assert isinstance(got, np.ndarray) and got.shape == (2, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    as_json = PyTorchPredictor("byom", aws_conn_id=local_conn, serializer=JSONSerializer(),
                               deserializer=JSONDeserializer()).predict(x.tolist())
    np.testing.assert_allclose(np.array(as_json), expected, rtol=1e-5)
    as_csv = PyTorchPredictor("byom", aws_conn_id=local_conn, serializer=CSVSerializer(),
                              deserializer=CSVDeserializer()).predict(x)
    np.testing.assert_allclose(np.array(as_csv, dtype=float), expected, rtol=1e-5)

    again = DeployOperator(task_id="deploy", aws_conn_id=local_conn, model_data=archive.as_uri(),
                           entry_point="inference.py", source_dir=str(_source(tmp_path, 1)),
                           endpoint_name="byom", **COMMON).execute(_context("deploy"))
    assert (again["ModelName"], again["Changed"]) == (result["ModelName"], False)  # a retry attaches

    changed = DeployOperator(task_id="deploy", aws_conn_id=local_conn, model_data=archive.as_uri(),
                             entry_point="inference.py", source_dir=str(_source(tmp_path, 10)),
                             endpoint_name="byom", **COMMON).execute(_context("deploy"))
    assert changed["ModelName"] != result["ModelName"] and changed["Changed"] is True
    np.testing.assert_allclose(predictor.predict(x), expected * 10, rtol=1e-5)

    deleted = DeleteEndpointOperator(task_id="teardown", aws_conn_id=local_conn,
                                     endpoint=changed).execute(_context("teardown"))
    assert deleted == ["endpoint byom", f"EndpointConfig {changed['ModelName']}", f"Model {changed['ModelName']}"]
    assert DeleteEndpointOperator(task_id="teardown", aws_conn_id=local_conn, endpoint="byom").execute(
        _context("teardown")) == []


def test_a_trained_jobs_model_deploys_from_its_xcom(local_conn, tmp_path):
    src = tmp_path / "train-src"
    src.mkdir()
    (src / "train.py").write_text(TRAIN)
    trained = PyTorchTrainOperator(task_id="train", aws_conn_id=local_conn, entry_point="train.py",
                                   source_dir=str(src), role=ROLE, instance_type="local", instance_count=1,
                                   framework_version="2.6.0", py_version="py312",
                                   poll_interval=0.2).execute(_context("train"))
    result = DeployOperator(task_id="deploy", aws_conn_id=local_conn, training_job=trained, instance_type="local",
                            initial_instance_count=1, poll_interval=0.3).execute(_context("deploy"))
    assert result["EndpointStatus"] == "InService"
    got = PyTorchPredictor(result["EndpointName"], aws_conn_id=local_conn).predict(np.ones((1, 2), np.float32))
    assert got.shape == (1, 1)
    DeleteEndpointOperator(task_id="teardown", aws_conn_id=local_conn, endpoint=result).execute(_context("t"))


def test_bad_deployments_fail_clearly_and_create_nothing(local_conn, local_runtime, tmp_path):
    _, archive = _model(tmp_path)
    with pytest.raises(AirflowFailException, match="initial_instance_count"):
        DeployOperator(task_id="d", aws_conn_id=local_conn, model_data=archive.as_uri(), entry_point="inference.py",
                       source_dir=str(_source(tmp_path, 1)), **{**COMMON, "initial_instance_count": 0}
                       ).execute(_context("d"))
    with pytest.raises(AirflowFailException, match="endpoint_name"):
        DeployOperator(task_id="d", aws_conn_id=local_conn, model_data=archive.as_uri(), entry_point="inference.py",
                       source_dir=str(_source(tmp_path, 1)), endpoint_name="bad_name!", **COMMON
                       ).execute(_context("d"))
    with pytest.raises(AirflowFailException, match="training_job"):
        DeployOperator(task_id="d", aws_conn_id=local_conn, training_job="no-such-job", **{
            k: v for k, v in COMMON.items() if k in ("instance_type", "initial_instance_count")}
                       ).execute(_context("d"))
    with pytest.raises(AirflowFailException, match="does not exist"):
        DeployOperator(task_id="d", aws_conn_id=local_conn, model_data=(tmp_path / "nope.tar.gz").as_uri(),
                       entry_point="inference.py", source_dir=str(_source(tmp_path, 1)), **COMMON
                       ).execute(_context("d"))
    code_only = tmp_path / "code-only.tar.gz"  # a Common Mistake: no model file at all
    with tarfile.open(code_only, "w:gz") as tar:
        tar.add(_source(tmp_path, 1) / "inference.py", arcname="code/inference.py")
    with pytest.raises(AirflowFailException, match="model_data"):
        DeployOperator(task_id="d", aws_conn_id=local_conn, model_data=code_only.as_uri(), entry_point="inference.py",
                       source_dir=str(_source(tmp_path, 1)), **COMMON).execute(_context("d"))
    assert local_runtime.client("sagemaker").list_models()["Models"] == []  # nothing half-created
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "inference.py").write_text("def model_fn(model_dir):\n    raise RuntimeError('weights missing')\n")
    with pytest.raises(JobFailed, match="Endpoint broken ended Failed.*weights missing"):
        DeployOperator(task_id="d", aws_conn_id=local_conn, model_data=archive.as_uri(), entry_point="inference.py",
                       source_dir=str(broken), endpoint_name="broken", **COMMON).execute(_context("d"))
    sm = local_runtime.client("sagemaker")
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["broken"]  # Failed, kept for its logs
