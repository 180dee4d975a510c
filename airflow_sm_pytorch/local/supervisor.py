"""One detached process per training job: ``python -m airflow_sm_pytorch.local.supervisor --root R --job N``.

The server starts it in a session of its own (``start_new_session=True``, stdio to
``jobs/<job>/supervisor.log``), so a job outlives a server that is killed. It runs the job with
:func:`airflow_sm_pytorch.local.training.runner.run_training_job` and writes everything (status
transitions, every log line, the result) straight into ``state.db``: nothing is lost while no server runs.

Stopping: SIGTERM (sent by StopTrainingJob) only sets a flag that ``stop_requested()`` returns; the
runner then does SIGTERM -> grace period -> SIGKILL on every process of the job. The store's stop flag is
polled too, so a stop that raced the start of this process is not missed.

Spot interruptions: ``--spot-interruptions AFTER[xTIMES]`` (given by CreateTrainingJob for a managed spot job
whose tag or runtime asks for it; see :mod:`.training.spot`) is handed to the runner, which interrupts and
restarts the job itself; the supervisor only records the lower BillableTimeInSeconds it reports.

Confinement: the supervisor is a child subreaper (``PR_SET_CHILD_SUBREAPER``, Linux), so every process the
job starts stays in its tree even after a double fork or ``setsid``; each run of pip or the script kills
what it left behind (:mod:`.training.process`), and once the job is over every remaining descendant of
the supervisor is SIGKILLed and reaped before the job is reported ended. A supervisor killed with SIGKILL
cannot do that: then the server kills the recorded process group only (a process that left it survives).

Startup cost matters (CreateTrainingJob -> first script line): nothing heavy is imported at module top,
and boto3 only if an s3:// URI needs it (``Storage`` makes its client on first use).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

_LOG_FLUSH_INTERVAL = 0.05
_STOP_POLL_INTERVAL = 0.5


class LogWriter:
    """Buffers log lines and writes them to the store in batches (a thread flushes every 50 ms).

    Each host gets the stream ``<job>/<host>-<epoch seconds of the job's start>``, as on SageMaker.
    """

    def __init__(self, store: Any, job: str, epoch: int, interval: float = _LOG_FLUSH_INTERVAL, *,
                 group: str | None = None, stream_name: Callable[[str], str] | None = None) -> None:
        self._store = store
        self._job = job
        self._epoch = epoch
        self._group = group  # None: the training jobs' group
        self._stream_name = stream_name or (lambda host: f"{job}/{host}-{epoch}")
        self._interval = interval
        self._pending: list[tuple[str, int, str]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._streams: dict[str, str] = {}
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def stream(self, host: str) -> str:
        name = self._streams.get(host)
        if name is None:
            name = self._streams.setdefault(host, self._stream_name(host))
        return name

    def log(self, host: str, message: str, timestamp_ms: int) -> None:
        entry = (self.stream(host), int(timestamp_ms), message)
        with self._lock:
            self._pending.append(entry)

    def flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                if self._group is None:
                    self._store.append_logs(self._job, batch)
                else:
                    self._store.append_logs(self._job, batch, group=self._group)
            except Exception:
                with self._lock:  # keep the lines for the next attempt
                    self._pending[:0] = batch
                raise

    def _run(self) -> None:
        while not self._closed.wait(self._interval):
            try:
                self.flush()
            except Exception:  # the database is busy or broken: retry on the next tick
                traceback.print_exc()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        for attempt in range(20):
            try:
                self.flush()
                return
            except Exception:
                if attempt == 19:
                    raise
                time.sleep(0.25)


class _Groups:
    """The job's running process groups (one per host of a multi-host job, each run from its own thread).

    The store keeps one per job: the oldest still running is recorded, the next one when it ends, None when
    none is left; so that a server that finds this supervisor dead can kill it (the other hosts' processes
    are found by the job marker in their environment). Best effort: the job goes on if the store cannot
    take it."""

    def __init__(self, record: Callable[[int | None], None]) -> None:
        self._record = record
        self._live: list[int] = []
        self._lock = threading.Lock()

    def started(self, pgid: int) -> None:
        with self._lock:
            self._live.append(pgid)
            if len(self._live) == 1:
                self._write(pgid)

    def exited(self, pgid: int) -> None:
        with self._lock:
            was_recorded = bool(self._live) and self._live[0] == pgid
            if pgid in self._live:
                self._live.remove(pgid)
            if was_recorded:
                self._write(self._live[0] if self._live else None)

    def _write(self, pgid: int | None) -> None:
        try:
            self._record(pgid)
        except Exception:
            traceback.print_exc()


def _say(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor[{os.getpid()}]: {message}", flush=True)


class _Flag:
    """Set from a signal handler: a plain attribute, no lock (a handler must never wait on one)."""

    def __init__(self) -> None:
        self.value = False

    def set(self, *_: Any) -> None:
        self.value = True


def main(argv: list[str] | None = None) -> int:
    stop = _Flag()
    # First of all, so that a StopTrainingJob racing our start cannot kill us with the default action.
    signal.signal(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGINT, stop.set)

    parser = argparse.ArgumentParser(prog="python -m airflow_sm_pytorch.local.supervisor")
    parser.add_argument("--root", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--spot-interruptions", default=None,
                        help="AFTER[xTIMES]: rehearse spot interruptions (a spot job only; see training/spot.py)")
    args = parser.parse_args(argv)

    from airflow_sm_pytorch.local.store import Store, process_start
    from airflow_sm_pytorch.local.training.process import enable_subreaper, kill_descendants

    if not enable_subreaper():
        _say("PR_SET_CHILD_SUBREAPER is not available: orphaned processes of the job may escape its end")

    root = Path(args.root)
    store = Store(root)
    name = args.job
    store.set_supervisor(name, os.getpid(), process_start(os.getpid()), ready=True)
    job = store.get_job(name)
    if job is None:
        _say(f"no job named {name!r} in {store.path}")
        return 2
    if job["status"] != "InProgress":
        _say(f"job {name} is already {job['status']}; nothing to do")
        return 0
    name = job["name"]
    _say(f"running training job {name}")

    last_poll = [0.0]

    def stop_requested() -> bool:
        if not stop.value:
            now = time.monotonic()
            if now - last_poll[0] >= _STOP_POLL_INTERVAL:
                last_poll[0] = now
                try:
                    if store.stop_requested(name):
                        stop.set()
                except Exception:
                    traceback.print_exc()
        return stop.value

    writer = LogWriter(store, name, int(time.time()))

    def status(secondary: str, message: str) -> None:
        writer.flush()  # lines logged before a transition are readable before it is
        store.add_transition(name, secondary, message)

    groups = _Groups(lambda pgid: store.set_process_group(name, pgid,
                                                          None if pgid is None else process_start(pgid)))

    outcome: dict[str, Any]
    try:
        from airflow_sm_pytorch.local.training.runner import JobEvents, run_training_job
        from airflow_sm_pytorch.storage import Storage

        job_dir = root / "jobs" / name
        job_dir.mkdir(parents=True, exist_ok=True)
        events = JobEvents(log=writer.log, status=status, stop_requested=stop_requested,
                           started=groups.started, exited=groups.exited)
        from airflow_sm_pytorch.local.training.spot import parse

        interruptions = parse(args.spot_interruptions) if args.spot_interruptions else None
        if interruptions is not None:
            _say(f"spot interruptions rehearsed: {interruptions}")
        result = run_training_job(job["request"], job_dir, events, storage=Storage(),
                                  cache_dir=root / "venvs", interruptions=interruptions)
        outcome = {
            "status": result.status,
            "secondary_status": result.secondary_status,
            "failure_reason": result.failure_reason,
            "model_artifacts": result.model_artifacts,
            "final_metrics": result.final_metrics or [],
            "training_start_time": result.training_start_time,
            "training_end_time": result.training_end_time,
            "billable_seconds": result.billable_seconds,
        }
    except BaseException as exc:  # noqa: BLE001 - whatever happens, the job must end with a reason
        traceback.print_exc()
        outcome = {
            "status": "Failed",
            "secondary_status": "Failed",
            "failure_reason": "InternalServerError: the local runtime could not run the job: "
            f"{type(exc).__name__}: {exc} (see {root / 'jobs' / name / 'supervisor.log'})",
        }
    try:
        kill_descendants()  # the job is over: none of its processes may outlive it
    except Exception:
        traceback.print_exc()
    try:
        writer.close()
    finally:
        recorded = store.finish(name, **outcome)
    _say(f"job {name} ended {outcome['status']}" + ("" if recorded else " (the store had already ended it)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
