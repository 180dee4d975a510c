"""Following a training job's CloudWatch log streams, as ``sagemaker.logs`` does, without loss or repeats."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from airflow_sm_pytorch.exceptions import JobFailed, RequestRejected
from airflow_sm_pytorch.hooks.errors import code as _code
from airflow_sm_pytorch.hooks.errors import is_transient
from airflow_sm_pytorch.hooks.errors import message as _message

if TYPE_CHECKING:
    from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
#: A failure message quotes the job's last traceback with this many lines before it and at most
#: ``ERROR_CONTEXT_LINES`` in all (the last lines when there is no traceback).
ERROR_CONTEXT_LINES = 25
_BEFORE_TRACEBACK = 3
_SCANNED_LINES = 2000


class LogTailer:
    """Follows every ``<job>/algo-N-*`` stream of a job; no line is lost or repeated.

    Its position (``tokens``) is plain JSON, so a deferred task can carry it across a trigger.
    """

    def __init__(self, hook: SageMakerPyTorchHook, job_name: str, tokens: dict[str, str] | None = None):
        self.hook = hook
        self.job_name = job_name
        self.tokens: dict[str, str | None] = dict(tokens or {})

    def _streams(self) -> list[str]:
        names: list[str] = []
        params: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{self.job_name}/"}
        while True:
            try:  # the client too: making it checks that the local runtime answers
                page = self.hook.client("logs").describe_log_streams(**params)
            except Exception as err:  # noqa: BLE001 - a hiccup is read again at the next poll
                if is_transient(err) or (isinstance(err, ClientError) and _code(err) == "ResourceNotFoundException"):
                    return names
                if not isinstance(err, ClientError):
                    raise
                raise RequestRejected("DescribeLogStreams", _code(err), _message(err)) from err
            names += [s["logStreamName"] for s in page.get("logStreams", [])]
            if not page.get("nextToken"):
                return sorted(names)
            params["nextToken"] = page["nextToken"]

    def poll(self) -> Iterator[str]:
        for stream, lines in self._by_stream():
            yield from lines

    def tail(self, limit: int | None) -> Iterator[str]:
        """Everything unread, but at most the last ``limit`` lines of each host's stream (a line says how
        many earlier ones were skipped); the position moves to the end either way."""
        for stream, lines in self._by_stream():
            kept: collections.deque[str] = collections.deque(maxlen=limit)
            total = 0
            for line in lines:
                kept.append(line)
                total += 1
            if total > len(kept):
                yield (f"[{stream}] ... {total - len(kept)} earlier lines not shown (all are in the log "
                       f"group {LOG_GROUP})")
            yield from kept

    def _by_stream(self) -> Iterator[tuple[str, Iterator[str]]]:
        for stream in self._streams():
            self.tokens.setdefault(stream, None)
        many = len(self.tokens) > 1
        for stream in sorted(self.tokens):
            host = stream.split("/", 1)[-1]
            yield stream, (f"[{host}] {message}" if many else message for message in self._events(stream))

    def _events(self, stream: str) -> Iterator[str]:
        while True:
            token = self.tokens.get(stream)
            params: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
            if token:
                params["nextToken"] = token
            try:
                page = self.hook.client("logs").get_log_events(**params)
            except Exception as err:  # noqa: BLE001 - a hiccup is read again at the next poll
                if is_transient(err) or (isinstance(err, ClientError) and _code(err) == "ResourceNotFoundException"):
                    return
                if not isinstance(err, ClientError):
                    raise
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


class JobLog:
    """Prints a training job's log lines to ``sink`` with secrets masked, and quotes them in a failure.

    Its position (``tokens``) is plain JSON: a deferred task or a rescheduled sensor carries it across
    resumes, so no line is lost or repeated."""

    def __init__(self, hook: SageMakerPyTorchHook, job_name: str, sink: Callable[[str], None], *,
                 mask: Iterable[str] = (), tokens: Mapping[str, str | None] | None = None) -> None:
        self.tailer = LogTailer(hook, job_name, dict(tokens or {}))  # type: ignore[arg-type]
        self.sink = sink
        self.secrets = sorted({s for s in mask if s}, key=len, reverse=True)

    @property
    def tokens(self) -> dict[str, str | None]:
        return dict(self.tailer.tokens)

    def print(self, lines: Iterable[str]) -> None:
        for line in lines:
            for secret in self.secrets:
                line = line.replace(secret, "***")
            self.sink(line)

    def poll(self) -> None:
        self.print(self.tailer.poll())

    def tail(self, limit: int | None) -> None:
        self.print(self.tailer.tail(limit))

    def annotated(self, err: JobFailed) -> JobFailed:
        """``err`` with the lines around the error appended to its reason: from just before the job's last
        traceback (else its last lines), read afresh from the start of its log, so it does not matter how
        much of the log this task has printed or when."""
        lines: collections.deque[str] = collections.deque(maxlen=_SCANNED_LINES)
        lines.extend(LogTailer(self.tailer.hook, self.tailer.job_name).poll())
        found = [i for i, line in enumerate(lines) if "Traceback (most recent call last)" in line]
        first = max(0, found[-1] - _BEFORE_TRACEBACK) if found else max(0, len(lines) - ERROR_CONTEXT_LINES)
        quoted = list(lines)[first:first + ERROR_CONTEXT_LINES]
        if not quoted:
            return err
        for secret in self.secrets:
            quoted = [line.replace(secret, "***") for line in quoted]
        reason = err.reason + "; log lines around the error:\n" + "\n".join(quoted)
        return JobFailed(err.job_name, err.status, reason, hint=err.hint, what=err.what)
