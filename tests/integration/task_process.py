"""Task processes for the fault tests: real processes that run ``PyTorchTrainOperator`` and can be killed.

Starting Python with Airflow, boto3 and aiobotocore imported costs seconds on a small machine, so this
module runs as a *zygote* (``python -m tests.integration.task_process``): it imports everything once and
forks one process per task run on request. Each child is a task process of its own (its own pid, its own
clients, nothing shared with the test process): SIGKILL ends it with no cleanup at all, SIGTERM reaches the
same handler Airflow's task runner installs (``on_kill``, then the task carries on until the job ends).

Requests (one JSON object per line on the zygote's stdin)::

    {"tag": "r1", "mode": "plain" | "deferred" | "trigger", "source_dir": "...", "conn_id": "sm_local",
     "run_id": "...", "try_number": 1, "poll_interval": 0.2, "env": {"AIRFLOW_CONN_SM_LOCAL": "..."},
     "trigger": [classpath, kwargs], "kwargs": {...} | null}  # mode "trigger": resume a deferred trigger

``plain``: ``execute`` waits in the process. ``deferred``: ``execute`` raises ``TaskDeferred``, the
trigger (round-tripped through ``serialize()``) runs in an event loop of this process as a triggerer would,
then a fresh operator runs ``execute_complete``. ``trigger``: what another triggerer does after the first
died: the serialized trigger, then ``execute_complete``.

Replies (one JSON object per line on stdout, written with a single ``os.write`` so that lines of
concurrent children never interleave): ``{"tag", "pid"}``, ``{"tag", "phase", "t", ...}`` at each phase
(``start``, ``create`` just before the describe-then-create, ``sending`` just before the CreateTrainingJob
request itself, ``created``, ``waiting`` once the
plain wait begins, ``deferred`` with the trigger and kwargs, ``trigger`` just before the trigger runs,
``complete`` just before ``execute_complete``), then ``{"tag", "result"}`` or ``{"tag", "error", "type"}``,
and from the zygote ``{"tag", "exit", "status"}`` when the child has been reaped.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import sys
import time
import traceback
from typing import Any

from airflow.sdk.exceptions import TaskDeferred

from tests.integration.test_operator_local import _context, _operator

_PIDS: dict[int, str] = {}


def _send(message: dict[str, Any]) -> None:
    data = (json.dumps(message, default=str) + "\n").encode()
    if len(data) > 4000:  # one write of at most PIPE_BUF bytes is atomic
        data = (json.dumps({**message, "traceback": None, "error": message.get("error", "")[:1500],
                            "truncated": len(data)}, default=str)[:4000] + "\n").encode()
    os.write(1, data)


def _phase(tag: str, which: str, **extra: Any) -> None:
    _send({"tag": tag, "phase": which, "t": time.time(), **extra})


def _trigger(path: str, kwargs: dict[str, Any]) -> Any:
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**kwargs)


async def _first_event(trigger: Any) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise RuntimeError("the trigger ended without an event")


def run_task(request: dict[str, Any]) -> dict[str, Any]:
    """One task run in this process, as described in the module's docstring; returns the XCom."""
    tag, mode = request["tag"], request["mode"]
    context = _context(request["run_id"], request.get("try_number", 1))

    def operator() -> Any:
        op = _operator(request["conn_id"], request["source_dir"], deferrable=mode != "plain")
        op.poll_interval = request.get("poll_interval", op.poll_interval)
        hook = op.hook
        submit, wait, call = hook.submit_training, hook.wait_for_training_job, hook.call

        def call_(service: str, operation: str, **params: Any) -> Any:
            if operation == "CreateTrainingJob":
                _phase(tag, "sending")
            return call(service, operation, **params)

        def submit_training(plan: Any) -> Any:
            _phase(tag, "create")
            out = submit(plan)
            _phase(tag, "created", job=plan.request["TrainingJobName"], created=out[1])
            return out

        def wait_for_training_job(*args: Any, **kwargs: Any) -> Any:
            _phase(tag, "waiting")
            return wait(*args, **kwargs)

        hook.submit_training, hook.wait_for_training_job = submit_training, wait_for_training_job
        hook.call = call_
        return op

    # the handler Airflow's task runner installs: SIGTERM (mark failed, a killed worker) calls on_kill
    current: list[Any] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: current and current[0].on_kill())
    _phase(tag, "start")
    if mode == "trigger":
        path, kwargs = request["trigger"]
        defer_kwargs = request["kwargs"]
    else:
        op = operator()
        current[:] = [op]
        try:
            return op.execute(context)
        except TaskDeferred as deferred:
            path, kwargs = deferred.trigger.serialize()
            defer_kwargs = deferred.kwargs
            _phase(tag, "deferred", trigger=[path, kwargs], kwargs=defer_kwargs)
    _phase(tag, "trigger")
    event = asyncio.run(_first_event(_trigger(path, kwargs)))
    _phase(tag, "complete", event=event)
    resumed = operator()  # a resumed task is a fresh operator object
    current[:] = [resumed]
    return resumed.execute_complete(context, event, **(defer_kwargs or {}))


def _child(request: dict[str, Any]) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.environ.update(request.get("env") or {})  # the test's connections (they change from test to test)
    tag = request["tag"]
    _send({"tag": tag, "pid": os.getpid()})
    try:
        _send({"tag": tag, "result": run_task(request)})
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        _send({"tag": tag, "error": f"{exc}"[:2000], "type": type(exc).__name__,
               "traceback": traceback.format_exc()[-1500:]})
    finally:
        os._exit(0)


def _reap(signum: int, frame: Any) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        tag = _PIDS.pop(pid, None)
        if tag is not None:
            _send({"tag": tag, "exit": os.waitstatus_to_exitcode(status)})


def main() -> None:
    # everything a task run needs, imported before the first fork (a child then starts in milliseconds)
    import aiobotocore.session  # noqa: F401
    import boto3  # noqa: F401

    import airflow_sm_pytorch.hooks.logs
    import airflow_sm_pytorch.hooks.sagemaker_pytorch
    import airflow_sm_pytorch.triggers.sagemaker_pytorch  # noqa: F401

    signal.signal(signal.SIGCHLD, _reap)
    _send({"tag": "", "ready": os.getpid()})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            pid = os.fork()
            if pid == 0:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
                _child(request)
            _PIDS[pid] = request["tag"]
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})


if __name__ == "__main__":
    main()
