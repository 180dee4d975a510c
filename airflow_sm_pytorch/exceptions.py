"""Exceptions raised by airflow_sm_pytorch.

The tree (everything derives from :class:`SmPyTorchError`)::

    SmPyTorchError
    ├── SpecError (also ValueError)      bad user input, raised before anything is uploaded or sent;
    │                                    carries ``field``, ``value`` and ``fix``
    ├── RequestRejected                  the SageMaker API (AWS or the local runtime) refused a request;
    │                                    carries ``operation``, ``code`` and ``message``
    ├── JobFailed                        a job ended Failed or Stopped; carries ``job_name``, ``status``,
    │                                    ``reason``
    └── JobTimeout                       we stopped waiting (the job may still be running)

Botocore's ``ClientError`` is translated into these at one boundary, the hook, so that callers never
see AWS error dicts and both backends (AWS and the local runtime) read the same.
"""

from __future__ import annotations

from typing import Any


class SmPyTorchError(Exception):
    """Base class of every error this package raises on purpose."""


class SpecError(SmPyTorchError, ValueError):
    """Bad input: names the field, the value it had and how to fix it.

    >>> str(SpecError("instance_count", 0, "use 1 or more"))
    'instance_count=0 is invalid: use 1 or more'
    """

    def __init__(self, field: str, value: Any, fix: str, *, problem: str = "is invalid") -> None:
        self.field = field
        self.value = value
        self.fix = fix
        self.problem = problem
        super().__init__(f"{field}={_short_repr(value)} {problem}: {fix}")


class RequestRejected(SmPyTorchError):
    """The service refused a request (``ValidationException``, ``ResourceInUse``, ``AccessDenied`` …)."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        self.operation = operation
        self.code = code
        self.message = message
        super().__init__(f"{operation} was rejected ({code}): {message}")


class JobFailed(SmPyTorchError):
    """A job (or another resource: an endpoint) reached a failure state (Failed, Stopped, OutOfService)."""

    def __init__(self, job_name: str, status: str, reason: str | None, *, hint: str = "",
                 what: str = "Training job") -> None:
        self.job_name = job_name
        self.status = status
        self.reason = reason or ""
        self.hint = hint
        self.what = what
        msg = f"{what} {job_name} ended {status}"
        if reason:
            msg += f": {reason}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class JobTimeout(SmPyTorchError):
    """Waiting for a job took longer than allowed."""


def _short_repr(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
