"""Following a training job's CloudWatch log streams, as ``sagemaker.logs`` does, without loss or repeats."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from airflow_sm_pytorch.exceptions import RequestRejected
from airflow_sm_pytorch.hooks.errors import code as _code
from airflow_sm_pytorch.hooks.errors import is_retryable as _is_retryable
from airflow_sm_pytorch.hooks.errors import message as _message

if TYPE_CHECKING:
    from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook

LOG_GROUP = "/aws/sagemaker/TrainingJobs"


class LogTailer:
    """Follows every ``<job>/algo-N-*`` stream of a job; no line is lost or repeated.

    Its position (``tokens``) is plain JSON, so a deferred task can carry it across a trigger.
    """

    def __init__(self, hook: "SageMakerPyTorchHook", job_name: str, tokens: dict[str, str] | None = None):
        self.hook = hook
        self.job_name = job_name
        self.tokens: dict[str, str | None] = dict(tokens or {})

    def _streams(self) -> list[str]:
        names: list[str] = []
        params: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{self.job_name}/"}
        logs = self.hook.client("logs")
        while True:
            try:
                page = logs.describe_log_streams(**params)
            except ClientError as err:
                if _code(err) == "ResourceNotFoundException" or _is_retryable(err):
                    return names
                raise RequestRejected("DescribeLogStreams", _code(err), _message(err)) from err
            names += [s["logStreamName"] for s in page.get("logStreams", [])]
            if not page.get("nextToken"):
                return sorted(names)
            params["nextToken"] = page["nextToken"]

    def poll(self) -> Iterator[str]:
        streams = self._streams()
        for stream in streams:
            self.tokens.setdefault(stream, None)
        many = len(self.tokens) > 1
        for stream in sorted(self.tokens):
            host = stream.split("/", 1)[-1]
            for message in self._events(stream):
                yield f"[{host}] {message}" if many else message

    def _events(self, stream: str) -> Iterator[str]:
        logs = self.hook.client("logs")
        while True:
            token = self.tokens.get(stream)
            params: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
            if token:
                params["nextToken"] = token
            try:
                page = logs.get_log_events(**params)
            except ClientError as err:
                if _is_retryable(err) or _code(err) == "ResourceNotFoundException":
                    return
                raise RequestRejected("GetLogEvents", _code(err), _message(err)) from err
            for event in page.get("events", []):
                yield event["message"].rstrip("\n")
            next_token = page.get("nextForwardToken")
            self.tokens[stream] = next_token
            if not page.get("events") or next_token == token:
                return

    def drain(self) -> Iterator[str]:
        """After the job ended: everything still unread (SageMaker flushes the last lines late)."""
        yield from self.poll()
