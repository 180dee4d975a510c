"""Throttling and 5xx answers while waiting are retried with backoff, never a task failure.

The peer is a real HTTP server on loopback speaking SageMaker's JSON protocol that throttles on purpose
(neither moto nor the local runtime throttles). botocore's own retries are turned off through the
connection's ``config_kwargs`` so that the hook's poll loop is what is tested.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_sm_pytorch.exceptions import JobFailed, RequestRejected
from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook

ERRORS = [(400, "ThrottlingException", "Rate exceeded"), (500, "InternalFailure", "oops"),
          (503, "ServiceUnavailable", "busy"), (400, "ThrottlingException", "Rate exceeded")]


class ScriptedSageMaker(BaseHTTPRequestHandler):
    answers: list = []
    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        target = self.headers["X-Amz-Target"].split(".")[-1]
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append(target)
        if target == "DescribeLogStreams":
            status, body = 400, {"__type": "ResourceNotFoundException", "message": "no group"}
        else:
            status, body = type(self).answers.pop(0)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedSageMaker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    conn = {"conn_type": "aws", "login": "x", "password": "x",
            "extra": {"endpoint_url": url, "region_name": "us-east-1",
                      "config_kwargs": {"retries": {"mode": "standard", "max_attempts": 1}}}}
    monkeypatch.setenv("AIRFLOW_CONN_SCRIPTED", json.dumps(conn))
    ScriptedSageMaker.seen = []
    yield ScriptedSageMaker
    server.shutdown()


def _description(status, **extra):
    return (200, {"TrainingJobName": "j", "TrainingJobArn": "arn:aws:sagemaker:us-east-1:1:training-job/j",
                  "TrainingJobStatus": status, "SecondaryStatus": status, "CreationTime": 1.0,
                  "AlgorithmSpecification": {"TrainingInputMode": "File"}, **extra})


def _errors():
    return [(status, {"__type": code, "message": msg}) for status, code, msg in ERRORS]


def test_throttling_and_5xx_while_waiting_are_retried(scripted):
    scripted.answers = [_description("InProgress"), *_errors(), _description("Completed")]
    hook = SageMakerPyTorchHook(aws_conn_id="scripted")
    desc = hook.wait_for_training_job("j", poll_interval=0.01)
    assert desc["TrainingJobStatus"] == "Completed"
    assert scripted.seen.count("DescribeTrainingJob") == 6


def test_a_real_rejection_is_not_retried(scripted):
    scripted.answers = [(400, {"__type": "AccessDeniedException", "message": "not allowed"})]
    with pytest.raises(RequestRejected) as err:
        SageMakerPyTorchHook(aws_conn_id="scripted").wait_for_training_job("j", poll_interval=0.01)
    assert err.value.code == "AccessDeniedException"


def test_stopped_is_a_failure(scripted):
    scripted.answers = [*_errors(), _description("Stopped")]
    with pytest.raises(JobFailed, match="ended Stopped"):
        SageMakerPyTorchHook(aws_conn_id="scripted").wait_for_training_job("j", poll_interval=0.01)
