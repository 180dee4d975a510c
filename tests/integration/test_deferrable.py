"""Deferrable mode against the local runtime: the operator defers, the real trigger waits with aiobotocore
in an event loop (as the triggerer runs it), the task resumes with the log since its last position."""

from __future__ import annotations

import asyncio
import importlib
import time

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_sm_pytorch.exceptions import JobFailed, JobTimeout, SpecError
from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook
from airflow_sm_pytorch.operators.train import JOB_LOG, PyTorchTrainOperator
from airflow_sm_pytorch.triggers.sagemaker_pytorch import SageMakerPyTorchTrigger
from tests.integration.test_operator_local import _context, _script
from tests.integration.test_operator_local import _operator as train_operator


def _operator(conn_id, source_dir, **kwargs):
    return train_operator(conn_id, source_dir, deferrable=True, **kwargs)


def _first_event(trigger):
    async def first():
        async for event in trigger.run():
            return event.payload
    return asyncio.run(first())


def _defer(op, context):
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    return deferred.value


def _round_trip(trigger):
    path, kwargs = trigger.serialize()
    module, name = path.rsplit(".", 1)
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (path, kwargs)
    return again


def test_trigger_serializes_to_plain_data_and_back():
    trigger = SageMakerPyTorchTrigger(kind="TrainingJob", name="j", aws_conn_id="c", region_name="eu-west-1",
                                      poll_interval=7, deadline=123.5, stop_on_kill=True,
                                      carry={"log_tokens": {"j/algo-1-1": "f/123"}, "created": True})
    path, kwargs = trigger.serialize()
    assert path == "airflow_sm_pytorch.triggers.sagemaker_pytorch.SageMakerPyTorchTrigger"
    assert kwargs == {"kind": "TrainingJob", "name": "j", "aws_conn_id": "c", "region_name": "eu-west-1",
                      "poll_interval": 7.0, "deadline": 123.5, "stop_on_kill": True,
                      "carry": {"log_tokens": {"j/algo-1-1": "f/123"}, "created": True}}
    _round_trip(trigger)
    from airflow.serialization.serialized_objects import BaseSerialization

    assert BaseSerialization.deserialize(BaseSerialization.serialize(kwargs)) == kwargs


def test_deferred_training_resumes_with_every_log_line_once(local_conn, tmp_path, monkeypatch):
    src = _script(tmp_path, "import os, time\nfor i in range(60):\n    print(f'line {i}', flush=True)\n"
                            "    time.sleep(0.02)\n"
                            "open(os.path.join(os.environ['SM_MODEL_DIR'], 'm.txt'), 'w').write('x')\n")
    lines = []
    monkeypatch.setattr(JOB_LOG, "info", lambda msg, *a: lines.append(msg % a if a else msg))
    op = _operator(local_conn, src)
    deferred = _defer(op, _context())
    assert deferred.method_name == "execute_complete"
    assert deferred.trigger.carry["job_name"] == op.job_name and deferred.trigger.carry["created"] is True
    event = _first_event(_round_trip(deferred.trigger))
    assert event["status"] == "success", event
    resumed = _operator(local_conn, src)  # a resumed task is a fresh operator object
    result = resumed.execute_complete(_context(), event)
    assert result["TrainingJobStatus"] == "Completed" and result["Created"] is True
    printed = [line for line in lines if line.startswith("line ")]
    assert printed == [f"line {i}" for i in range(60)]  # before deferral + on resume: none lost, none twice


def test_deferred_failure_fails_with_the_reason_and_the_lines_around_the_error(local_conn, tmp_path):
    src = _script(tmp_path, "print('preparing', flush=True)\nraise ValueError('bad learning rate: -1')\n")
    op = _operator(local_conn, src)
    deferred = _defer(op, _context())
    event = _first_event(deferred.trigger)
    assert event["status"] == "failure" and "bad learning rate" in event["message"]
    with pytest.raises(JobFailed) as err:  # an ordinary failure: a retry may train again
        _operator(local_conn, src).execute_complete(_context(), event)
    assert err.value.status == "Failed"
    assert "ValueError: bad learning rate: -1" in str(err.value) and "log lines around the error" in str(err.value)


def test_a_task_resumed_while_the_runtime_is_away_waits_for_it(local_conn, local_runtime, tmp_path, capfd):
    """The trigger saw the job end, then the runtime went away: the resumed task's Describe (and its client,
    which checks that the runtime answers) retries as a wait does, and ends with the job's result."""
    import threading

    src = _script(tmp_path, "print('done', flush=True)\n")
    deferred = _defer(_operator(local_conn, src), _context())
    event = _first_event(deferred.trigger)
    assert event["status"] == "success", event
    local_runtime.kill()
    back = threading.Timer(4.0, local_runtime.restart)
    back.start()
    try:
        resumed = _operator(local_conn, src)
        result = resumed.execute_complete(_context(), event)
    finally:
        back.join()
    assert result["TrainingJobStatus"] == "Completed"
    printed = "".join(capfd.readouterr())  # Airflow's task log (structlog) writes to the terminal
    retried = [line for line in printed.splitlines() if "retrying in" in line]
    assert retried and "EndpointUnreachable" in retried[0] and "is unaffected" in retried[0], printed[-3000:]


def test_a_trigger_that_starts_while_the_runtime_is_away_waits_for_it(local_conn, local_runtime, tmp_path):
    """The triggerer picks the trigger up while nothing answers (its client cannot be made yet): that is
    a hiccup of the wait, not the task's failure."""
    import threading

    src = _script(tmp_path, "print('done', flush=True)\n")
    deferred = _defer(_operator(local_conn, src), _context())
    assert _first_event(deferred.trigger)["status"] == "success"
    local_runtime.kill()
    back = threading.Timer(4.0, local_runtime.restart)
    back.start()
    try:
        event = _first_event(_round_trip(deferred.trigger))
    finally:
        back.join()
    assert event["status"] == "success", event


def test_a_killed_deferred_task_stops_its_job(local_conn, tmp_path):
    src = _script(tmp_path, "import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    op = _operator(local_conn, src)
    deferred = _defer(op, _context())
    trigger = deferred.trigger
    hook = SageMakerPyTorchHook(aws_conn_id=local_conn)

    async def wait_then_kill():
        task = asyncio.ensure_future(_first_async(trigger))
        deadline = time.monotonic() + 60
        while hook.describe("TrainingJob", op.job_name)["SecondaryStatus"] != "Training":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        task.cancel("__airflow_user_action__")  # what Airflow >= 3.3 does on mark-failed / clear ...
        with pytest.raises(asyncio.CancelledError):
            await task
        await trigger.on_kill()  # ... then it calls on_kill
        return time.monotonic()

    killed = asyncio.run(wait_then_kill())
    while hook.describe("TrainingJob", op.job_name)["TrainingJobStatus"] != "Stopped":
        assert time.monotonic() - killed < 30
        time.sleep(0.1)


async def _first_async(trigger):
    async for event in trigger.run():
        return event.payload


def test_a_trigger_for_a_job_that_no_longer_exists_fails_without_retry(local_conn, tmp_path):
    trigger = SageMakerPyTorchTrigger(kind="TrainingJob", name="deleted-meanwhile", aws_conn_id=local_conn,
                                      poll_interval=0.1)
    event = _first_event(trigger)
    assert event["status"] == "error" and event["code"] == "ResourceNotFound"
    op = _operator(local_conn, _script(tmp_path, "print(1)\n"))
    with pytest.raises(AirflowFailException, match="deleted-meanwhile does not exist"):
        op.execute_complete(_context(), event)


def test_the_deadline_is_explicit_and_ends_the_wait_not_the_job(local_conn, tmp_path):
    src = _script(tmp_path, "import time\ntime.sleep(600)\n")
    op = _operator(local_conn, src, max_ingestion_time=1)
    deferred = _defer(op, _context())
    event = _first_event(deferred.trigger)
    assert event["status"] == "timeout" and "keeps running" in event["message"]
    with pytest.raises(JobTimeout):
        _operator(local_conn, src, max_ingestion_time=1).execute_complete(_context(), event)
    hook = SageMakerPyTorchHook(aws_conn_id=local_conn)
    assert hook.describe("TrainingJob", op.job_name)["TrainingJobStatus"] == "InProgress"
    hook.stop_training_job(op.job_name)


@pytest.mark.parametrize("limit", [0, -5, "10"])
def test_a_limit_that_is_not_a_positive_number_is_refused(limit):
    with pytest.raises(SpecError, match="max_ingestion_time"):
        PyTorchTrainOperator(task_id="t", entry_point="train.py", max_ingestion_time=limit)


def test_deferrable_without_wait_says_what_happens(capsys):
    op = PyTorchTrainOperator(task_id="t", entry_point="train.py", deferrable=True, wait=False)
    assert op.deferrable and not op.wait
    out = capsys.readouterr()
    assert "the task ends once the job is created" in out.out + out.err


@pytest.mark.parametrize("limit", [0, -1.5, True])
def test_deploys_max_wait_must_be_positive_too(limit):
    from airflow_sm_pytorch.operators.deploy import DeployOperator

    with pytest.raises(SpecError, match="max_wait"):
        DeployOperator(task_id="d", training_job="j", instance_type="local", max_wait=limit)
