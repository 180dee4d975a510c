"""PyTorchTrainOperator and the hook against the local runtime: wait, live logs, failure, kill, XCom."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

from airflow_sm_pytorch.exceptions import JobFailed
from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook
from airflow_sm_pytorch.operators.train import PyTorchTrainOperator

ROLE = "arn:aws:iam::000000000000:role/local"


def _operator(conn_id, source_dir, **kwargs):
    return PyTorchTrainOperator(
        task_id="train", aws_conn_id=conn_id, entry_point="train.py", source_dir=str(source_dir), role=ROLE,
        instance_type="local", instance_count=1, framework_version="2.6.0", py_version="py312", poll_interval=0.2, **kwargs)


def _context(run_id="manual__1", try_number=1):
    return {"ti": SimpleNamespace(dag_id="d", task_id="train", run_id=run_id, map_index=-1, try_number=try_number)}


def _script(tmp_path, body):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "train.py").write_text(body)
    return src


class Lines:
    def __init__(self):
        self.lines = []

    def __call__(self, msg, *args):
        self.lines.append(msg % args if args else msg)


def test_wait_streams_every_line_once_and_returns_a_json_safe_xcom(local_conn, local_runtime, tmp_path,
                                                                  monkeypatch):
    src = _script(tmp_path, "import sys, time\nfor i in range(120):\n    print(f'line {i}', flush=True)\n"
                            "    time.sleep(0.005)\nprint('loss=0.25')\n"
                            "import os; open(os.path.join(os.environ['SM_MODEL_DIR'], 'm.txt'), 'w').write('x')\n")
    op = _operator(local_conn, src, hyperparameters={"api_token": "s3cr3t-value", "epochs": 1},
                   metric_definitions=[{"Name": "loss", "Regex": r"loss=([0-9.]+)"}])
    sink, job_lines = Lines(), Lines()
    monkeypatch.setattr(op.log, "info", sink)
    from airflow_sm_pytorch.operators.train import JOB_LOG

    monkeypatch.setattr(JOB_LOG, "info", job_lines)  # the job's own lines: a logger of their own
    result = op.execute(_context())
    assert json.loads(json.dumps(result)) == result
    assert result["TrainingJobStatus"] == "Completed" and result["Created"] is True
    assert result["FinalMetrics"] == {"loss": 0.25}
    assert result["S3ModelArtifacts"].startswith("file://") and result["S3ModelArtifacts"].endswith(
        f"/{result['TrainingJobName']}/output/model.tar.gz")
    assert result["HyperParameters"]["api_token"] == "***"
    assert [line for line in job_lines.lines if line.startswith("line ")] == [f"line {i}" for i in range(120)]
    assert not [line for line in sink.lines if line.startswith("line ")]
    assert "s3cr3t-value" not in "\n".join(sink.lines + job_lines.lines)
    assert sink.lines[sink.lines.index(next(x for x in sink.lines if x.startswith("::group::"))) + 2] == "::endgroup::"

    from airflow_sm_pytorch.local.store import Store

    sent = Store(local_runtime.root).get_job(result["TrainingJobName"])["request"]["Tags"]
    assert {t["Key"]: t["Value"] for t in sent} == {"airflow:dag_id": "d", "airflow:task_id": "train",
                                                    "airflow:run_id": "manual__1", "airflow:try_number": "1"}
    again = _operator(local_conn, src, hyperparameters={"api_token": "s3cr3t-value", "epochs": 1})
    assert again.execute(_context())["Created"] is False  # the retry re-attached


def test_failed_job_fails_the_task_with_the_scripts_error(local_conn, tmp_path):
    src = _script(tmp_path, "raise ValueError('bad learning rate: -1')\n")
    op = _operator(local_conn, src)
    with pytest.raises(JobFailed) as err:
        op.execute(_context())
    assert err.value.status == "Failed"
    assert "ValueError: bad learning rate: -1" in err.value.reason
    hook = SageMakerPyTorchHook(aws_conn_id=local_conn)
    desc = hook.describe_training_job(op.job_name)
    assert desc["ModelArtifacts"]["S3ModelArtifacts"].endswith("model.tar.gz")  # outputs kept


def test_on_kill_stops_the_job(local_conn, tmp_path):
    src = _script(tmp_path, "import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    op = _operator(local_conn, src)
    errors = []

    def run():
        try:
            op.execute(_context())
        except Exception as exc:  # noqa: BLE001 - the thread reports it
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    hook = SageMakerPyTorchHook(aws_conn_id=local_conn)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if op.job_name and (job := hook.find_training_job(op.job_name)) and job["SecondaryStatus"] == "Training":
            break
        time.sleep(0.1)
    op.on_kill()  # what Airflow calls when the task is killed
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert isinstance(errors[0], JobFailed) and errors[0].status == "Stopped"
    assert hook.describe_training_job(op.job_name)["TrainingJobStatus"] == "Stopped"


def test_logs_are_readable_by_stock_boto3(local_runtime, local_conn, tmp_path):
    src = _script(tmp_path, "print('hello from the job')\n")
    op = _operator(local_conn, src, logs=False)
    name = op.execute(_context("run-logs"))["TrainingJobName"]
    logs = local_runtime.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                        logStreamNamePrefix=f"{name}/")["logStreams"]
    assert len(streams) == 1 and streams[0]["logStreamName"].startswith(f"{name}/algo-1-")
    events = logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                 logStreamName=streams[0]["logStreamName"], startFromHead=True)["events"]
    assert "hello from the job" in [e["message"] for e in events]


# -- the connection and the runtime's keys ---------------------------------------------------------
def _conn(monkeypatch, runtime, conn_id, **top):
    conn = {"conn_type": "aws", **top,
            "extra": {"endpoint_url": runtime.url, "region_name": "us-east-1",
                      "sm_pytorch": {"local_runtime": {"root": str(runtime.root), "autostart": False}}}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return SageMakerPyTorchHook(aws_conn_id=conn_id)


def test_a_runtime_that_refuses_the_keys_says_where_its_keys_are(local_runtime, monkeypatch):
    from airflow_sm_pytorch.exceptions import RequestRejected

    hook = _conn(monkeypatch, local_runtime, "sm_wrong", login="someone", password="else")
    with pytest.raises(RequestRejected) as info:
        hook.find_training_job("any")
    message = str(info.value)
    assert "UnrecognizedClientException" in message
    assert str(local_runtime.root / "credentials") in message and "SM_PYTORCH_LOCAL_ACCESS_KEY_ID" in message


def test_a_connection_without_keys_signs_with_the_runtimes_key_file(tmp_path_factory, monkeypatch):
    from tests.conftest import LocalRuntime

    runtime = LocalRuntime(tmp_path_factory.mktemp("root"), tmp_path_factory.mktemp("logs"))
    runtime.KEYS = {}  # the runtime generates <root>/credentials
    runtime.start()
    try:
        monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
        hook = _conn(monkeypatch, runtime, "sm_keyless")
        assert hook.find_training_job("nothing-here") is None
        assert hook.conn_config.aws_access_key_id.startswith("LKIA")
    finally:
        runtime.cleanup()


def test_an_undefined_connection_names_the_readme_connection(monkeypatch):
    from airflow_sm_pytorch.exceptions import SpecError

    monkeypatch.delenv("AIRFLOW_CONN_SM_PYTORCH", raising=False)
    with pytest.raises(SpecError) as info:
        SageMakerPyTorchHook(aws_conn_id="sm_pytorch").conn_config
    message = str(info.value)
    assert "aws_conn_id" in message and "'sm_pytorch'" in message and "AIRFLOW_CONN_SM_PYTORCH" in message


def test_retries_retrain_after_a_failed_job_and_never_start_two_jobs_for_one_try(local_conn, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    src = _script(tmp_path, "raise ValueError('bad data')\n")
    with pytest.raises(JobFailed):
        _operator(local_conn, src).execute(_context())  # try 1: the job fails
    (src / "train.py").write_text("print('fixed')\n")
    retried = _operator(local_conn, src).execute(_context(try_number=2))  # the retry trains again
    assert retried["TrainingJobName"].endswith("-t2") and retried["Created"] is True
    assert retried["TrainingJobStatus"] == "Completed"
    same_try = _operator(local_conn, src).execute(_context(try_number=2))  # try 2 run again (killed mid-wait)
    assert (same_try["TrainingJobName"], same_try["Created"]) == (retried["TrainingJobName"], False)
    cleared = _operator(local_conn, src).execute(_context(try_number=3))  # a clear after success re-attaches
    assert (cleared["TrainingJobName"], cleared["Created"]) == (retried["TrainingJobName"], False)
    fresh = _operator(local_conn, src, if_job_exists="new").execute(_context(try_number=4))
    assert fresh["TrainingJobName"].endswith("-t4") and fresh["Created"] is True
    with pytest.raises(AirflowFailException, match="if_job_exists='fail'"):
        _operator(local_conn, src, if_job_exists="fail").execute(_context(try_number=5))
