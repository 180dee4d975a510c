"""Local endpoints through stock boto3: CreateModel/EndpointConfig/Endpoint, InvokeEndpoint, logs, update,
delete, failure and restart, on the same endpoint URL as training (the ``local_runtime`` fixture)."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

pytestmark = pytest.mark.integration

ROLE = "arn:aws:iam::000000000000:role/local"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"
INFERENCE = """\
import json, os
import torch

def model_fn(model_dir):
    scale = float(open(os.path.join(model_dir, "scale.txt")).read())
    print(f"model_fn loaded scale={scale}", flush=True)
    return scale

def predict_fn(data, model):
    return data * model
"""
BROKEN = "def model_fn(model_dir):\n    raise ValueError('no weights in ' + model_dir)\n"


def _archive(path: Path, files: dict[str, str]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.as_uri()


def _runtime_client(runtime):
    return boto3.client("sagemaker-runtime", endpoint_url=runtime.url, region_name="us-east-1",
                        aws_access_key_id="local", aws_secret_access_key="local",
                        config=Config(retries={"max_attempts": 2, "mode": "standard"}))


def _deploy(sm, name: str, model_data: str) -> None:
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE,
                    PrimaryContainer={"Image": IMAGE, "ModelDataUrl": model_data,
                                      "Environment": {"SAGEMAKER_PROGRAM": "inference.py"}})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "local",
        "InitialVariantWeight": 1}])


def _wait(sm, name: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        desc = sm.describe_endpoint(EndpointName=name)
        if desc["EndpointStatus"] not in ("Creating", "Updating"):
            return desc
        assert time.monotonic() < deadline, desc
        time.sleep(0.2)


def _predict(runtime, name: str, values) -> list:
    answer = _runtime_client(runtime).invoke_endpoint(EndpointName=name, Body=json.dumps(values),
                                                      ContentType="application/json", Accept="application/json")
    assert answer["InvokedProductionVariant"] == "AllTraffic"
    return json.loads(answer["Body"].read())


def test_deploy_invoke_update_and_delete(local_runtime, tmp_path):
    sm = local_runtime.client("sagemaker")
    _deploy(sm, "scale-2", _archive(tmp_path / "m2.tar.gz", {"scale.txt": "2", "code/inference.py": INFERENCE}))
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="scale-2")
    with pytest.raises(ClientError) as info:  # still Creating: refused, with what to do
        sm.delete_endpoint(EndpointName="ep")
    assert "wait until it is InService" in info.value.response["Error"]["Message"]
    desc = _wait(sm, "ep")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert desc["ProductionVariants"][0]["DeployedImages"][0]["SpecifiedImage"] == IMAGE
    assert _predict(local_runtime, "ep", [[1.0, 2.0]]) == [[2.0, 4.0]]

    logs = local_runtime.client("logs")
    group = "/aws/sagemaker/Endpoints/ep"
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert streams and streams[0]["logStreamName"].startswith("AllTraffic/")
    lines = [e["message"] for s in streams
             for e in logs.get_log_events(logGroupName=group, logStreamName=s["logStreamName"],
                                          startFromHead=True)["events"]]
    assert any("model_fn loaded scale=2.0" in line for line in lines)

    _deploy(sm, "scale-3", _archive(tmp_path / "m3.tar.gz", {"scale.txt": "3", "code/inference.py": INFERENCE}))
    sm.update_endpoint(EndpointName="ep", EndpointConfigName="scale-3")
    assert _predict(local_runtime, "ep", [[1.0]]) in ([[2.0]], [[3.0]])  # serving throughout the update
    desc = _wait(sm, "ep")
    assert (desc["EndpointStatus"], desc["EndpointConfigName"]) == ("InService", "scale-3")
    assert _predict(local_runtime, "ep", [[1.0]]) == [[3.0]]

    with pytest.raises(ClientError) as info:  # the model server's 415 comes back as SageMaker's ModelError
        _runtime_client(local_runtime).invoke_endpoint(EndpointName="ep", Body=b"x", ContentType="text/plain")
    assert info.value.response["Error"]["Code"] == "ModelError"
    assert info.value.response["OriginalStatusCode"] == 415
    assert _predict(local_runtime, "ep", [[2.0]]) == [[6.0]]  # still serving

    sm.delete_endpoint(EndpointName="ep")
    with pytest.raises(ClientError) as info:
        sm.describe_endpoint(EndpointName="ep")
    assert "Could not find endpoint" in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as info:
        _predict(local_runtime, "ep", [[1.0]])
    assert info.value.response["Error"]["Code"] == "ValidationError"
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["scale-3", "scale-2"]


def test_a_model_fn_that_raises_fails_the_endpoint_with_its_message(local_runtime, tmp_path):
    sm = local_runtime.client("sagemaker")
    _deploy(sm, "broken", _archive(tmp_path / "b.tar.gz", {"code/inference.py": BROKEN}))
    sm.create_endpoint(EndpointName="broken", EndpointConfigName="broken")
    desc = _wait(sm, "broken")
    assert desc["EndpointStatus"] == "Failed"
    assert "no weights in" in desc["FailureReason"], desc["FailureReason"]
    sm.delete_endpoint(EndpointName="broken")


def test_bad_requests_are_refused_with_sagemakers_words(local_runtime, tmp_path):
    sm = local_runtime.client("sagemaker")
    with pytest.raises(ClientError) as info:
        sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": "nope", "InitialInstanceCount": 1, "InstanceType": "local"}])
    assert "Could not find model" in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as info:
        sm.create_endpoint(EndpointName="e", EndpointConfigName="nope")
    assert "Could not find endpoint configuration" in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as info:
        sm.create_model(ModelName="m", ExecutionRoleArn=ROLE,
                        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": (tmp_path / "none.tar.gz").as_uri()})
    assert "does not exist" in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as info:  # botocore's pattern for endpoint names, server side
        sm.create_endpoint(EndpointName="bad_name!", EndpointConfigName="x")
    assert info.value.response["Error"]["Code"] == "ValidationException"


def test_an_endpoint_comes_back_when_the_runtime_restarts(local_runtime, tmp_path):
    sm = local_runtime.client("sagemaker")
    _deploy(sm, "back", _archive(tmp_path / "m.tar.gz", {"scale.txt": "5", "code/inference.py": INFERENCE}))
    sm.create_endpoint(EndpointName="back", EndpointConfigName="back")
    assert _wait(sm, "back")["EndpointStatus"] == "InService"
    from airflow_sm_pytorch.local.hosting import stop
    from airflow_sm_pytorch.local.store import Store

    local_runtime.terminate()
    store = Store(local_runtime.root)
    for proc in store.processes("Endpoint", "back"):  # as if the machine had restarted
        stop(proc)
    deadline = time.monotonic() + 30
    while store.processes("Endpoint", "back") and time.monotonic() < deadline:
        time.sleep(0.1)
    local_runtime.restart()
    sm = local_runtime.client("sagemaker")
    deadline = time.monotonic() + 120
    while True:
        try:
            assert _predict(local_runtime, "back", [[1.0]]) == [[5.0]]
            break
        except ClientError:
            assert time.monotonic() < deadline
            time.sleep(0.3)
    assert sm.describe_endpoint(EndpointName="back")["EndpointStatus"] == "InService"
    sm.delete_endpoint(EndpointName="back")
    np.testing.assert_equal(len(sm.list_endpoints()["Endpoints"]), 0)
