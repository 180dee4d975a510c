"""The wait's decisions (hooks/waiting.py), driven by hand: what ends a wait and what is retried."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from airflow_sm_pytorch.exceptions import JobFailed, JobTimeout, RequestRejected
from airflow_sm_pytorch.hooks.errors import is_transient
from airflow_sm_pytorch.hooks.waiting import DESCRIBE, answered, waiting
from airflow_sm_pytorch.operators.common import fail_fast


def _error(status, code):
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "DescribeTrainingJob")


def _job(status, **extra):
    return {"TrainingJobName": "j", "TrainingJobStatus": status, "SecondaryStatus": "Training", **extra}


@pytest.mark.parametrize("exc", [
    _error(400, "ThrottlingException"), _error(500, "InternalFailure"), _error(503, "ServiceUnavailable"),
    _error(504, "GatewayTimeout"), EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
    RequestRejected("DescribeTrainingJob", "ThrottlingException", "m"),  # ours, caused by a ClientError below
])
def test_botocore_classifies_throttling_5xx_and_connection_errors_as_transient(exc):
    if isinstance(exc, RequestRejected):
        exc.__cause__ = _error(400, "ThrottlingException")
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [_error(400, "ValidationException"), _error(400, "AccessDeniedException"),
                                 ValueError("x"), RequestRejected("X", "ValidationException", "m")])
def test_invalid_requests_and_our_own_bugs_are_not_transient(exc):
    assert not is_transient(exc)


def test_transient_errors_back_off_with_jitter_and_never_end_the_wait():
    warnings = []
    step = waiting("TrainingJob", "j", poll_interval=2.0, warn=warnings.append)
    assert next(step) == DESCRIBE
    delays = []
    for _ in range(12):
        delays.append(step.send(EndpointConnectionError(endpoint_url="http://127.0.0.1:1")))
        assert step.send(None) == DESCRIBE
    assert 1.0 <= delays[0] <= 2.0 and 2.0 <= delays[1] <= 4.0  # 2 s doubled, jittered down to half
    assert max(delays) <= 60.0 and delays[-1] >= 30.0  # capped at a minute
    assert len(warnings) == 12 and "is unaffected" in warnings[0]
    assert step.send(_job("InProgress")) == 2.0  # a good answer resets the backoff to the interval


def test_one_answer_through_hiccups_is_any_description_or_none():
    """What a resumed task asks: any status (or no such job) is an answer; only errors are retried."""
    for final in (_job("Failed"), None):
        step = answered("TrainingJob", "j", poll_interval=1.0)
        assert next(step) == DESCRIBE
        assert 0.5 <= step.send(EndpointConnectionError(endpoint_url="http://127.0.0.1:1")) <= 1.0
        assert step.send(None) == DESCRIBE
        with pytest.raises(StopIteration) as done:
            step.send(final)
        assert done.value.value == final
    step = answered("TrainingJob", "j", poll_interval=1.0)
    next(step)
    with pytest.raises(RequestRejected):
        step.send(RequestRejected("DescribeTrainingJob", "AccessDeniedException", "m"))


def test_only_the_jobs_own_outcome_ends_the_wait():
    step = waiting("TrainingJob", "j", poll_interval=1.0)
    next(step)
    assert step.send(_job("InProgress")) == 1.0
    step.send(None)
    with pytest.raises(JobFailed, match="MaxRuntimeExceeded"):
        step.send(_job("Stopped", FailureReason="MaxRuntimeExceeded"))
    done = waiting("TrainingJob", "j", poll_interval=1.0)
    next(done)
    with pytest.raises(StopIteration) as stop:
        done.send(_job("Completed"))
    assert stop.value.value["TrainingJobStatus"] == "Completed"


def test_a_vanished_resource_and_a_fatal_error_end_the_wait_at_once():
    step = waiting("TrainingJob", "gone", poll_interval=1.0)
    next(step)
    with pytest.raises(RequestRejected, match="gone does not exist"):
        step.send(None)
    step = waiting("Endpoint", "e", poll_interval=1.0)
    next(step)
    with pytest.raises(ClientError):
        step.send(_error(400, "AccessDeniedException"))


def test_the_deadline_gives_up_waiting_but_says_the_job_runs_on():
    step = waiting("TrainingJob", "j", poll_interval=1.0, deadline=time.time() - 1)
    next(step)
    with pytest.raises(JobTimeout, match="keeps running"):
        step.send(_job("InProgress"))


def test_bad_input_and_invalid_requests_fail_without_retry_but_a_failed_job_may_be_retried():
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_sm_pytorch.exceptions import SpecError

    def raising(exc):
        @fail_fast
        def execute():
            raise exc
        return execute

    for exc in (SpecError("role", "x", "give an ARN"), RequestRejected("CreateTrainingJob", "ValidationException",
                                                                       "bad")):
        with pytest.raises(AirflowFailException, match="not retried"):
            raising(exc)()
    for exc in (JobFailed("j", "Failed", "oom"), RequestRejected("X", "ThrottlingException", "slow down"),
                JobTimeout("late")):
        with pytest.raises(type(exc)):
            raising(exc)()
