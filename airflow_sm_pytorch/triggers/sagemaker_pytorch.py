"""``SageMakerPyTorchTrigger``: a deferred task waits here, in the triggerer, holding no worker slot.

It runs :func:`hooks.waiting.waiting` — the same rules as a waiting worker (only the resource's own
outcome ends the wait; transient errors are retried with backoff; an explicit deadline or none) — with
one aiobotocore client shared by every trigger of the same connection and region in this triggerer
(one Describe per resource per interval, a few kilobytes per waiting task).

Nothing in it blocks the event loop: the connection lookup, the client's creation and the local
runtime's autostart run in a thread (``sync_to_async``), as the Amazon provider's async hooks do.

It fires one event, ``{"status": "success" | "failure" | "timeout" | "error", "kind", "name", "message",
"carry"}``; the task resumes in ``execute_complete``, which describes the resource once more, prints the
log lines since the last position and ends the task. ``carry`` is plain JSON the task hands the trigger
to get back on resume (the log position, what it created): the event is the one channel every way of
running a trigger keeps (``airflow dags test`` replaces the task's ``next_kwargs`` with the event).

When a user kills the deferred task (mark failed, clear, mark success), Airflow ≥ 3.3 calls ``on_kill``
here: a training job is stopped (``stop_on_kill``). A triggerer restart does not call it: the trigger
moves to another triggerer and the job keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_sm_pytorch.exceptions import JobFailed, JobTimeout, RequestRejected, SmPyTorchError

_CLIENTS: dict[tuple[int, str | None, str | None], list[Any]] = {}  # key -> [client, context, users]
_LOCK: dict[int, asyncio.Lock] = {}


class SageMakerPyTorchTrigger(BaseTrigger):
    """Wait for ``kind`` (``TrainingJob``, ``Endpoint``) ``name`` to succeed or fail.

    :param deadline: epoch seconds after which the wait gives up (the resource keeps running); None waits
        as long as the resource takes — there is no hidden default.
    :param stop_on_kill: stop the training job when a user kills the deferred task.
    :param carry: plain JSON returned in the event for the resumed task.
    """

    def __init__(self, *, kind: str, name: str, aws_conn_id: str | None = "aws_default",
                 region_name: str | None = None, poll_interval: float = 30.0, deadline: float | None = None,
                 stop_on_kill: bool = False, carry: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.name = name
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.stop_on_kill = stop_on_kill
        self.carry = dict(carry or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {
            "kind": self.kind, "name": self.name, "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name, "poll_interval": self.poll_interval, "deadline": self.deadline,
            "stop_on_kill": self.stop_on_kill, "carry": self.carry,
        })

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_sm_pytorch.hooks.waiting import run_async, waiting

        event = {"kind": self.kind, "name": self.name, "carry": self.carry}
        try:
            async with contextlib.AsyncExitStack() as stack:
                clients: list[Any] = []

                async def ask() -> dict[str, Any] | None:
                    # the client is made at the first Describe, so that failing to make it (the local
                    # runtime or the network away at that moment) is an answer the wait retries
                    if not clients:
                        clients.append(await stack.enter_async_context(
                            shared_client(self.aws_conn_id, self.region_name)))
                    return await describe(clients[0], self.kind, self.name)

                step = waiting(self.kind, self.name, poll_interval=self.poll_interval, deadline=self.deadline,
                               warn=self.log.warning)
                description = await run_async(step, ask)
            status = _status(self.kind, description)
            yield TriggerEvent({**event, "status": "success", "message": f"{self.kind} {self.name}: {status}"})
        except JobFailed as err:
            yield TriggerEvent({**event, "status": "failure", "message": str(err)})
        except JobTimeout as err:
            yield TriggerEvent({**event, "status": "timeout", "message": str(err)})
        except Exception as err:  # noqa: BLE001 - reported to the task, which fails with it
            code = err.code if isinstance(err, RequestRejected) else None
            yield TriggerEvent({**event, "status": "error", "code": code,
                                "message": str(err) if isinstance(err, SmPyTorchError)
                                else f"{type(err).__name__}: {err}"})

    async def on_kill(self) -> None:
        """The user killed the deferred task: stop the training job (Airflow ≥ 3.3 calls this)."""
        if not (self.stop_on_kill and self.kind == "TrainingJob"):
            return
        from botocore.exceptions import ClientError

        async with shared_client(self.aws_conn_id, self.region_name) as client:
            try:
                await client.stop_training_job(TrainingJobName=self.name)
                self.log.info("The task was killed: asked training job %s to stop", self.name)
            except ClientError as err:  # already ended: nothing to stop
                self.log.info("Training job %s was not stopped: %s", self.name, err)


async def describe(client: Any, kind: str, name: str) -> dict[str, Any] | None:
    """``Describe<kind>`` with an aiobotocore client; None when the resource does not exist."""
    from botocore.exceptions import ClientError

    from airflow_sm_pytorch.hooks.errors import code
    from airflow_sm_pytorch.hooks.resources import NOT_FOUND_CODES, RESOURCES, method_name

    resource = RESOURCES[kind]
    method = getattr(client, method_name(resource.describe))
    try:
        return await method(**{resource.name_key: name})
    except ClientError as err:
        if code(err) in NOT_FOUND_CODES:
            return None
        raise


@contextlib.asynccontextmanager
async def shared_client(aws_conn_id: str | None, region_name: str | None) -> AsyncIterator[Any]:
    """One aiobotocore SageMaker client per (event loop, connection, region), closed with its last user."""
    loop = id(asyncio.get_running_loop())
    key = (loop, aws_conn_id, region_name)
    lock = _LOCK.setdefault(loop, asyncio.Lock())
    async with lock:
        entry = _CLIENTS.get(key)
        if entry is None:
            from asgiref.sync import sync_to_async

            from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook

            hook = SageMakerPyTorchHook(aws_conn_id=aws_conn_id, region_name=region_name)
            # the connection lookup, local runtime autostart and session set-up block: not on the loop
            context = await sync_to_async(hook.get_client_type)(deferrable=True)
            entry = _CLIENTS[key] = [await context.__aenter__(), context, 0]
        entry[2] += 1
    try:
        yield entry[0]
    finally:
        async with lock:
            entry[2] -= 1
            if entry[2] == 0 and _CLIENTS.get(key) is entry:
                del _CLIENTS[key]
                await entry[1].__aexit__(None, None, None)


def _status(kind: str, description: dict[str, Any]) -> str:
    from airflow_sm_pytorch.hooks.resources import RESOURCES

    return str(description.get(RESOURCES[kind].status_key or "", "created"))
