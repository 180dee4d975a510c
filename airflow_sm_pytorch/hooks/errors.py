"""Reading botocore errors: their code, message, and whether asking again may help.

Whether an error is transient is botocore's own decision (its *standard* retry mode's checkers:
transient status codes and error codes, throttling codes, errors the service model marks retryable,
connection and HTTP-client errors), not a list kept here.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError
from botocore.retries import standard

_CHECKER = standard.OrRetryChecker([
    standard.TransientRetryableChecker(),
    standard.ThrottledRetryableChecker(),
    standard.ModeledRetryableChecker(),
])


class _Status:
    """The one attribute of an HTTP response botocore's transient checker reads."""

    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


def is_transient(exc: BaseException, operation_model: Any = None) -> bool:
    """True when retrying the same call may succeed: throttling, 5xx, timeouts, a connection refused.

    ``exc`` may be a ``ClientError``, a botocore connection/HTTP error, or one of ours whose cause is one.
    """
    while not isinstance(exc, (ClientError, standard.ConnectionError, standard.HTTPClientError)):
        if exc.__cause__ is None:
            return False
        exc = exc.__cause__
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        context = standard.RetryContext(
            attempt_number=1, operation_model=operation_model, parsed_response=exc.response,
            http_response=_Status(status) if status else None)
    else:
        context = standard.RetryContext(attempt_number=1, caught_exception=exc)
    return bool(_CHECKER.is_retryable(context))


def is_retryable(err: ClientError) -> bool:
    """A ``ClientError`` that a later call may not repeat (kept for the log tailer's readers)."""
    return is_transient(err)


def code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", "Unknown"))


def message(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Message", err))
