"""What the operators and the sensor share: failing without retry when a retry cannot help, deadlines,
deferral into :class:`SageMakerPyTorchTrigger`, and printing a job's log since the last position.

Cheap to import (no boto3): the hook, the trigger and the log tailer are imported where used.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from airflow_sm_pytorch.exceptions import RequestRejected, SpecError

F = TypeVar("F", bound=Callable[..., Any])

#: Codes with which the service refuses a request as invalid, or says the resource is gone: asking again
#: with the same input gives the same answer, so the task fails without using its retries.
INVALID_REQUEST_CODES = frozenset({
    "ValidationException", "ValidationError", "InvalidParameterValue", "InvalidParameterCombination",
    "MissingParameter", "SerializationException", "ResourceNotFound", "ResourceNotFoundException",
})


def fail_fast(method: F) -> F:
    """Bad input (:class:`SpecError`) and requests the service refuses as invalid raise Airflow's
    fail-without-retry exception, so ``retries=3`` does not produce three identical failures. A Failed
    job, a timeout, throttling or a connection error stay ordinary failures: a retry may succeed."""

    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except SpecError as err:
            raise _no_retry(err) from err
        except RequestRejected as err:
            if err.code in INVALID_REQUEST_CODES:
                raise _no_retry(err) from err
            raise

    return wrapped  # type: ignore[return-value]


def _no_retry(err: Exception) -> Exception:
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(f"{err} (not retried: the same input would fail the same way)")


def check_limit(field: str, seconds: float | None) -> float | None:
    """A wait limit is None (wait as long as the resource takes) or a positive number of seconds."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise SpecError(field, seconds, "give a positive number of seconds, or None to wait as long as the "
                        "job takes")
    return float(seconds)


def deadline(limit: float | None) -> float | None:
    """Epoch seconds at which a wait of ``limit`` seconds starting now gives up."""
    return None if limit is None else time.time() + limit


def default_deferrable() -> bool:
    """Airflow's ``[operators] default_deferrable``, as the Amazon provider's operators read it."""
    from airflow.configuration import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


def defer(operator: Any, kind: str, name: str, *, limit: float | None, stop_on_kill: bool,
          carry: dict[str, Any]) -> None:
    """Hand the wait to :class:`SageMakerPyTorchTrigger`; the task resumes in ``execute_complete(context,
    event)`` with ``carry`` back in ``event["carry"]``."""
    from airflow_sm_pytorch.triggers.sagemaker_pytorch import SageMakerPyTorchTrigger

    trigger = SageMakerPyTorchTrigger(kind=kind, name=name, aws_conn_id=operator.aws_conn_id,
                                      region_name=operator.region_name, poll_interval=operator.poll_interval,
                                      deadline=deadline(limit), stop_on_kill=stop_on_kill, carry=carry)
    operator.defer(trigger=trigger, method_name="execute_complete")


def raise_for_event(event: Mapping[str, Any], failure: Callable[[], Exception]) -> None:
    """Turn a trigger's event into the task's outcome: nothing for success, else the matching error."""
    from airflow_sm_pytorch.exceptions import JobTimeout

    status = event.get("status")
    if status == "success":
        return
    if status == "failure":
        raise failure()
    if status == "timeout":
        raise JobTimeout(event.get("message", "the wait timed out"))
    raise RequestRejected("Wait", event.get("code") or "WaitFailed", str(event.get("message")))
