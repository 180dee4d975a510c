"""Waiting for a SageMaker resource: the acceptors are data (:mod:`hooks.resources`), the loop is one generator.

:func:`waiting` decides; it performs no I/O. It yields ``DESCRIBE`` when it wants the resource described
(the driver sends back the description, ``None`` for "no such resource", or the exception the call
raised) and a number when it wants the driver to sleep that many seconds. It returns the final
description on success and raises :class:`JobFailed` / :class:`JobTimeout` / the call's error otherwise.
:func:`run_sync` (worker) and :func:`run_async` (triggerer) are the two drivers; neither decides
anything, so a worker and a deferred task wait by exactly the same rules:

* only the resource's own outcome ends the wait: a failure state raises :class:`JobFailed`;
* an error botocore classifies as transient (throttling, 5xx, timeouts, a refused connection — the
  local runtime restarting, a network blip) is logged and retried with jittered exponential backoff,
  capped at a minute, for as long as the deadline allows;
* any other error (the resource vanished, access denied, a malformed request) is raised at once;
* ``deadline`` (epoch seconds, so it survives a trip through the triggerer) is explicit: None waits
  for as long as the resource takes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from airflow_sm_pytorch.exceptions import JobFailed, JobTimeout, RequestRejected
from airflow_sm_pytorch.hooks.errors import is_transient
from airflow_sm_pytorch.hooks.resources import RESOURCES

DESCRIBE = "describe"
MAX_BACKOFF = 60.0
Step = Generator[Any, Any, dict[str, Any]]


def waiting(kind: str, name: str, *, poll_interval: float, deadline: float | None = None,
            on_poll: Callable[[dict[str, Any]], None] | None = None,
            warn: Callable[[str], None] = lambda message: None) -> Step:
    """The wait for ``kind`` ``name`` as a generator of ``DESCRIBE`` / sleep-seconds requests (see above)."""
    resource = RESOURCES[kind]
    while True:
        answer = yield from answered(kind, name, poll_interval=poll_interval, deadline=deadline, warn=warn)
        if answer is None:
            raise RequestRejected(resource.describe, "ResourceNotFound",
                                  f"{kind} {name} does not exist (deleted, or another account or region)")
        if on_poll is not None:
            on_poll(answer)
        outcome = resource.outcome(answer)
        if outcome == "success":
            return answer
        if outcome == "failure":
            raise failure(kind, name, answer)
        _check_deadline(deadline, f"{kind} {name} did not finish in time; it is still "
                                  f"{answer.get(resource.status_key or '')} (and keeps running)")
        yield poll_interval


def answered(kind: str, name: str, *, poll_interval: float, deadline: float | None = None,
             warn: Callable[[str], None] = lambda message: None) -> Step:
    """One description of ``kind`` ``name`` (``None``: no such resource), through transient errors.

    The part of :func:`waiting` that asks; alone, it is how a resumed task reads the outcome its trigger
    saw, so that the service being away at that moment is a hiccup there too.
    """
    streak = 0
    while True:
        answer = yield DESCRIBE
        if not isinstance(answer, BaseException):
            return answer
        if not is_transient(answer):
            raise answer
        streak += 1
        delay = min(MAX_BACKOFF, poll_interval * 2 ** min(streak - 1, 10)) * random.uniform(0.5, 1.0)
        _check_deadline(deadline, f"{kind} {name} could not be described ({_short(answer)})")
        warn(f"{RESOURCES[kind].describe} {name} failed ({_short(answer)}); retrying in {delay:.1f}s "
             f"(attempt {streak}; the {_words(kind)} is unaffected)")
        yield delay


def failure(kind: str, name: str, description: dict[str, Any]) -> JobFailed:
    """The :class:`JobFailed` for a description in a failure state."""
    resource = RESOURCES[kind]
    status = description.get(resource.status_key or "", "")
    reason = description.get(resource.reason_key)
    if status == "Stopped" and not reason:
        reason = f"stopped ({description.get('SecondaryStatus', 'Stopped')})"
    hint = ("outputs and logs are kept; see the task log above" if kind == "TrainingJob" else
            f"its log is in /aws/sagemaker/{kind}s/{name}")
    return JobFailed(name, status, reason, hint=hint, what=_words(kind).capitalize())


def run_sync(step: Step, describe: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
    """Drive :func:`waiting` with blocking calls (a worker)."""
    request = next(step)
    while True:
        if request == DESCRIBE:
            try:
                answer: Any = describe()
            except Exception as exc:  # noqa: BLE001 - the generator decides what is fatal
                answer = exc
        else:
            time.sleep(request)
            answer = None
        try:
            request = step.send(answer)
        except StopIteration as done:
            return done.value


async def run_async(step: Step, describe: Callable[[], Awaitable[dict[str, Any] | None]]) -> dict[str, Any]:
    """Drive :func:`waiting` in an event loop (the triggerer): the same decisions, awaited."""
    request = next(step)
    while True:
        if request == DESCRIBE:
            try:
                answer: Any = await describe()
            except Exception as exc:  # noqa: BLE001 - the generator decides what is fatal
                answer = exc
        else:
            await asyncio.sleep(request)
            answer = None
        try:
            request = step.send(answer)
        except StopIteration as done:
            return done.value


def _check_deadline(deadline: float | None, message: str) -> None:
    if deadline is not None and time.time() >= deadline:
        raise JobTimeout(message)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _words(kind: str) -> str:
    """``TrainingJob`` -> ``training job``."""
    return "".join(f" {c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(kind))
