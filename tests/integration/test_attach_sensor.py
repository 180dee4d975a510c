"""AttachSensor against the local runtime: poke and deferrable modes, what attach recovers, bad names."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_sm_pytorch.exceptions import JobFailed
from airflow_sm_pytorch.operators.train import JOB_LOG
from airflow_sm_pytorch.sensors.attach import AttachSensor
from tests.integration.test_deferrable import _first_event, _round_trip
from tests.integration.test_operator_local import _context, _operator, _script

SCRIPT = ("import os, sys, time\nfor i in range(40):\n    print(f'step {i}', flush=True)\n    time.sleep(0.03)\n"
          "open(os.path.join(os.environ['SM_MODEL_DIR'], 'model.pth'), 'w').write('w')\n")


def _start(local_conn, tmp_path, body=SCRIPT, **kwargs):
    """A job started elsewhere: the training operator with wait=False."""
    op = _operator(local_conn, _script(tmp_path, body), wait=False,
                   hyperparameters={"epochs": 3, "lr": 0.1, "api_token": "t0ps3cret"}, **kwargs)
    return op.execute(_context(run_id=f"elsewhere__{tmp_path.name}"))["TrainingJobName"]


def _lines(monkeypatch):
    lines = []
    monkeypatch.setattr(JOB_LOG, "info", lambda msg, *a: lines.append(msg % a if a else msg))
    return lines


def test_poke_mode_streams_the_log_once_and_returns_what_attach_recovers(local_conn, tmp_path, monkeypatch):
    name = _start(local_conn, tmp_path)
    lines = _lines(monkeypatch)
    sensor = AttachSensor(task_id="attach", training_job_name=name, aws_conn_id=local_conn, poke_interval=0.1)
    result = sensor.execute(_context())
    assert json.loads(json.dumps(result)) == result
    assert result["TrainingJobName"] == name and result["TrainingJobStatus"] == "Completed"
    assert result["S3ModelArtifacts"].endswith("model.tar.gz")
    assert (result["FrameworkVersion"], result["PyVersion"]) == ("2.6.0", "py312")
    assert result["EntryPoint"] == "train.py" and result["SourceDir"].endswith("sourcedir.tar.gz")
    hps = result["HyperParameters"]
    assert hps["epochs"] == 3 and hps["lr"] == 0.1 and hps["api_token"] == "***"  # decoded, secrets masked
    assert [line for line in lines if line.startswith("step ")] == [f"step {i}" for i in range(40)]


def test_deferrable_mode_resumes_with_the_rest_of_the_log(local_conn, tmp_path, monkeypatch):
    name = _start(local_conn, tmp_path)
    lines = _lines(monkeypatch)
    sensor = AttachSensor(task_id="attach", training_job_name=name, aws_conn_id=local_conn, poke_interval=0.1,
                          deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(_context())
    trigger = _round_trip(deferred.value.trigger)
    assert trigger.stop_on_kill is False  # the sensor did not start the job: killing it leaves the job alone
    event = _first_event(trigger)
    resumed = AttachSensor(task_id="attach", training_job_name=name, aws_conn_id=local_conn, deferrable=True)
    result = resumed.execute_complete(_context(), event)
    assert result["TrainingJobStatus"] == "Completed" and result["EntryPoint"] == "train.py"
    assert [line for line in lines if line.startswith("step ")] == [f"step {i}" for i in range(40)]


def test_a_failed_job_fails_the_sensor_with_its_reason_and_last_lines(local_conn, tmp_path):
    name = _start(local_conn, tmp_path, body="print('loading data', flush=True)\nraise RuntimeError('CUDA oom')\n")
    sensor = AttachSensor(task_id="attach", training_job_name=name, aws_conn_id=local_conn, poke_interval=0.1)
    with pytest.raises(JobFailed) as err:
        sensor.execute(_context())
    assert err.value.status == "Failed" and "RuntimeError: CUDA oom" in str(err.value)
    assert "loading data" in str(err.value)  # the lines around the error


@pytest.mark.parametrize("deferrable", [False, True])
def test_an_unknown_job_fails_at_once_without_retries(local_conn, deferrable):
    sensor = AttachSensor(task_id="attach", training_job_name="no-such-job", aws_conn_id=local_conn,
                          poke_interval=0.1, deferrable=deferrable)
    with pytest.raises(AirflowFailException, match="no-such-job does not exist"):
        sensor.execute(_context())


@pytest.mark.parametrize("name", ["", "   ", None])
def test_a_name_that_renders_empty_is_refused_naming_the_field(local_conn, name):
    sensor = AttachSensor(task_id="attach", training_job_name=name, aws_conn_id=local_conn)
    with pytest.raises(AirflowFailException, match="training_job_name=.* is empty"):
        sensor.execute(_context())


def test_the_default_timeout_is_the_longest_job_not_a_hidden_week():
    assert AttachSensor(task_id="a", training_job_name="j").timeout == 56 * 24 * 3600
    assert AttachSensor(task_id="a", training_job_name="j", timeout=60).timeout == 60


def test_an_attached_jobs_model_deploys_deferred_from_the_sensors_xcom(local_conn, tmp_path):
    import numpy as np

    from airflow_sm_pytorch.operators.deploy import DeleteEndpointOperator, DeployOperator
    from airflow_sm_pytorch.predictor import PyTorchPredictor
    from tests.integration.test_deploy_local import TRAIN

    name = _start(local_conn, tmp_path, body=TRAIN)
    sensor = AttachSensor(task_id="attach", training_job_name=name, aws_conn_id=local_conn, poke_interval=0.1,
                          deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(_context())
    attached = sensor.execute_complete(_context(), _first_event(deferred.value.trigger))
    deploy = DeployOperator(task_id="deploy", aws_conn_id=local_conn, training_job=attached, instance_type="local",
                            initial_instance_count=1, poll_interval=0.3, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        deploy.execute(_context())
    trigger = _round_trip(deferred.value.trigger)
    assert (trigger.kind, trigger.stop_on_kill) == ("Endpoint", False)
    result = deploy.execute_complete(_context(), _first_event(trigger))
    assert result["EndpointStatus"] == "InService" and result["Image"].endswith("pytorch-inference:2.6.0-cpu-py312")
    got = PyTorchPredictor(result["EndpointName"], aws_conn_id=local_conn).predict(np.ones((1, 2), np.float32))
    assert got.shape == (1, 1)
    DeleteEndpointOperator(task_id="teardown", aws_conn_id=local_conn, endpoint=result).execute(_context())
