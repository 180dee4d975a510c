"""The local runtime's durable state: ``ROOT/state.db`` (SQLite in WAL mode).

The server (many threads) and one supervisor process per job write here concurrently, so every
connection is per thread, in WAL mode with a long busy timeout, and every write is one short
transaction. Stdlib only: the supervisor imports this and must start fast.

Tables: ``jobs`` (the full CreateTrainingJob request and everything DescribeTrainingJob reports),
``transitions`` (SecondaryStatusTransitions), ``log_streams`` and ``log_events`` (every line, with a
monotonic ``id`` that the CloudWatch Logs tokens are made of).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: The CloudWatch Logs group SageMaker training jobs log to.
LOG_GROUP = "/aws/sagemaker/TrainingJobs"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    arn TEXT NOT NULL,
    region TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    secondary_status TEXT NOT NULL,
    failure_reason TEXT,
    creation_time REAL NOT NULL,
    last_modified_time REAL NOT NULL,
    training_start_time REAL,
    training_end_time REAL,
    model_artifacts TEXT,
    final_metrics TEXT,
    training_seconds INTEGER,
    billable_seconds INTEGER,
    supervisor_pid INTEGER,
    supervisor_start TEXT,
    supervisor_ready INTEGER NOT NULL DEFAULT 0,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    process_group INTEGER,
    process_group_start TEXT
);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL COLLATE NOCASE,
    status TEXT NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL,
    message TEXT
);
CREATE INDEX IF NOT EXISTS transitions_job ON transitions (job, id);
CREATE TABLE IF NOT EXISTS log_streams (
    name TEXT PRIMARY KEY,
    job TEXT NOT NULL COLLATE NOCASE,
    creation_time INTEGER NOT NULL,
    first_event INTEGER,
    last_event INTEGER,
    last_ingestion INTEGER,
    stored_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS log_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    ingestion INTEGER NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_events_stream ON log_events (stream, id);
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    name TEXT NOT NULL COLLATE NOCASE,
    arn TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT,
    failure_reason TEXT,
    creation_time REAL NOT NULL,
    last_modified_time REAL NOT NULL,
    state TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS processes (
    kind TEXT NOT NULL,
    name TEXT NOT NULL COLLATE NOCASE,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    start TEXT,
    info TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (kind, name, host)
);
"""
#: Columns added after the first release: an older ``state.db`` gets them with ALTER TABLE.
_ADDED_COLUMNS = {("jobs", "process_group"): "INTEGER", ("jobs", "process_group_start"): "TEXT",
                  ("log_streams", "log_group"): f"TEXT NOT NULL DEFAULT '{LOG_GROUP}'"}

TERMINAL = ("Completed", "Failed", "Stopped")


class StoreError(Exception):
    """``state.db`` cannot be opened or is not a database; the message names the file and what to do."""


class JobExists(Exception):
    """CreateTrainingJob with a name that is already taken (case-insensitively, as the ARN is)."""


def _now() -> float:
    """Millisecond precision, as SageMaker reports: such floats survive botocore's datetime round trip."""
    return round(time.time(), 3)


class Store:
    """One ``state.db``; safe to share between threads (each gets its own connection)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "state.db"
        self._local = threading.local()
        try:
            self._db().executescript(_SCHEMA)  # idempotent; executescript manages its own transaction
            self._migrate()
            self._db().execute("SELECT count(*) FROM jobs").fetchone()
        except sqlite3.DatabaseError as exc:  # also OperationalError: unreadable, locked by a dead lock, ...
            self.close()
            raise StoreError(
                f"{self.path} cannot be used ({exc}): if it is damaged, move it aside (the jobs it recorded "
                "are forgotten; their files under jobs/ stay) or start the runtime with another --root"
            ) from None

    # -- plumbing ---------------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout = 60000")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            self._local.db = db
        return db

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind: Any, *_: object) -> None:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")

    def _tx(self) -> Store._Tx:
        return Store._Tx(self._db())

    def _migrate(self) -> None:
        def missing(db: sqlite3.Connection) -> list[tuple[str, str]]:
            have = {(table, row["name"]) for table in {t for t, _ in _ADDED_COLUMNS}
                    for row in db.execute(f"PRAGMA table_info({table})")}
            return [key for key in _ADDED_COLUMNS if key not in have]
        if not missing(self._db()):
            return
        with self._tx() as db:  # re-checked under the write lock: another process may have just done it
            for table, column in missing(db):
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {_ADDED_COLUMNS[table, column]}")

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- jobs -------------------------------------------------------------------------------------
    def create_job(self, name: str, arn: str, region: str, request: dict[str, Any],
                   message: str = "Starting the training job") -> float:
        now = _now()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM jobs WHERE name = ?", (name,)).fetchone():
                raise JobExists(name)
            db.execute(
                "INSERT INTO jobs (name, arn, region, request, status, secondary_status, creation_time,"
                " last_modified_time) VALUES (?, ?, ?, ?, 'InProgress', 'Starting', ?, ?)",
                (name, arn, region, json.dumps(request), now, now),
            )
            db.execute("INSERT INTO transitions (job, status, start_time, message)"
                       " VALUES (?, 'Starting', ?, ?)", (name, now, message))
        return now

    def set_supervisor(self, name: str, pid: int, start: str | None, *, ready: bool = False) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET supervisor_pid = ?, supervisor_start = ?,"
                " supervisor_ready = MAX(supervisor_ready, ?) WHERE name = ?",
                (pid, start, int(ready), name),
            )

    def set_process_group(self, name: str, pgid: int | None, start: str | None) -> None:
        """Record the job's running process group (its leader's pid and start time); ``None`` clears it."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET process_group = ?, process_group_start = ? WHERE name = ?",
                       (pgid, start, name))

    def get_job(self, name: str) -> dict[str, Any] | None:
        row = self._db().execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        job = _job(row)
        job["transitions"] = [
            dict(r) for r in self._db().execute(
                "SELECT status, start_time, end_time, message FROM transitions WHERE job = ? ORDER BY id",
                (row["name"],))
        ]
        return job

    def list_jobs(self) -> list[dict[str, Any]]:
        """Every job's summary columns, oldest first (the request is left out)."""
        rows = self._db().execute(
            "SELECT name, arn, status, secondary_status, creation_time, last_modified_time,"
            " training_end_time, supervisor_pid, supervisor_start, stop_requested FROM jobs"
            " ORDER BY creation_time, rowid").fetchall()
        return [dict(r) for r in rows]

    def in_progress(self) -> list[dict[str, Any]]:
        rows = self._db().execute(
            "SELECT name, creation_time, supervisor_pid, supervisor_start, stop_requested FROM jobs"
            " WHERE status = 'InProgress'").fetchall()
        return [dict(r) for r in rows]

    def add_transition(self, name: str, status: str, message: str | None) -> None:
        """Record a SecondaryStatus change; the same status again only updates its message."""
        with self._tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE name = ?", (name,)).fetchone()
            if row is not None and row["status"] == "InProgress":
                self._transition(db, name, status, message, _now())

    @staticmethod
    def _transition(db: sqlite3.Connection, name: str, status: str, message: str | None, now: float,
                    *, final: bool = False) -> None:
        last = db.execute("SELECT id, status FROM transitions WHERE job = ? ORDER BY id DESC LIMIT 1",
                          (name,)).fetchone()
        if last is not None and last["status"] == status:
            if final:  # the runner already reported this end state: keep its message
                db.execute("UPDATE transitions SET end_time = ? WHERE id = ?", (now, last["id"]))
            else:
                db.execute("UPDATE transitions SET message = ? WHERE id = ?", (message, last["id"]))
        else:
            if last is not None:
                db.execute("UPDATE transitions SET end_time = ? WHERE id = ?", (now, last["id"]))
            db.execute("INSERT INTO transitions (job, status, start_time, end_time, message)"
                       " VALUES (?, ?, ?, ?, ?)", (name, status, now, now if final else None, message))
        # TrainingStartTime: when the instance is ready, i.e. the job starts downloading (or training)
        starts = status in ("Downloading", "Training")
        db.execute("UPDATE jobs SET secondary_status = ?, last_modified_time = ?, training_start_time ="
                   f" {'COALESCE(training_start_time, ?)' if starts else 'training_start_time'}"
                   " WHERE name = ? AND status = 'InProgress'",
                   [status, now, *([now] if starts else []), name])

    def request_stop(self, name: str) -> str | None:
        """Set the stop flag of an InProgress job (SecondaryStatus ``Stopping``); returns its status."""
        with self._tx() as db:
            row = db.execute("SELECT status, stop_requested FROM jobs WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            if row["status"] == "InProgress" and not row["stop_requested"]:
                db.execute("UPDATE jobs SET stop_requested = 1 WHERE name = ?", (name,))
                self._transition(db, name, "Stopping", "Stopping the training job", _now())
            return row["status"]

    def stop_requested(self, name: str) -> bool:
        row = self._db().execute("SELECT stop_requested FROM jobs WHERE name = ?", (name,)).fetchone()
        return bool(row and row["stop_requested"])

    def finish(self, name: str, *, status: str, secondary_status: str, failure_reason: str | None = None,
               model_artifacts: str | None = None, final_metrics: Iterable[dict[str, Any]] = (),
               training_start_time: float | None = None, training_end_time: float | None = None,
               message: str | None = None, billable_seconds: int | None = None) -> bool:
        """Record the end of a job that is still InProgress; False if it had already ended. BillableTimeInSeconds
        is the training time unless ``billable_seconds`` says less (managed spot training)."""
        now = _now()
        with self._tx() as db:
            row = db.execute("SELECT status, training_start_time, creation_time FROM jobs WHERE name = ?",
                             (name,)).fetchone()
            if row is None or row["status"] != "InProgress":
                return False
            start = round(training_start_time, 3) if training_start_time else row["training_start_time"]
            end = round(training_end_time, 3) if training_end_time else now
            seconds = max(1, math.ceil(end - start)) if start is not None else None
            billable = seconds if billable_seconds is None or seconds is None else min(seconds, billable_seconds)
            message = message or _final_message(secondary_status, failure_reason)
            self._transition(db, name, secondary_status, message, now, final=True)
            db.execute(
                "UPDATE jobs SET status = ?, secondary_status = ?, failure_reason = ?, model_artifacts = ?,"
                " final_metrics = ?, training_start_time = ?, training_end_time = ?, training_seconds = ?,"
                " billable_seconds = ?, last_modified_time = ?, process_group = NULL,"
                " process_group_start = NULL WHERE name = ?",
                (status, secondary_status, failure_reason, model_artifacts, json.dumps(list(final_metrics)),
                 start, end, seconds, billable, now, name),
            )
        return True

    def fail_orphan(self, name: str, pid: int | None, reason: str,
                    before: Callable[[int | None, str | None], None] | None = None) -> bool:
        """Mark an InProgress job Failed because its supervisor is gone (only if ``pid`` is still its own);
        ``before(process_group, process_group_start)`` runs first with the group it recorded (or None)."""
        with self._tx() as db:
            row = db.execute("SELECT status, supervisor_pid, process_group, process_group_start FROM jobs"
                             " WHERE name = ?", (name,)).fetchone()
            if row is None or row["status"] != "InProgress" or row["supervisor_pid"] != pid:
                return False
        if before is not None:
            before(row["process_group"], row["process_group_start"])
        return self.finish(name, status="Failed", secondary_status="Failed", failure_reason=reason)

    # -- logs -------------------------------------------------------------------------------------
    def append_logs(self, job: str, events: list[tuple[str, int, str]], group: str = LOG_GROUP) -> None:
        """Append ``(stream, timestamp_ms, message)`` events in order, creating streams (in ``group``) as
        needed. ``job`` is the resource the stream belongs to (a training job, an endpoint)."""
        if not events:
            return
        ingestion = int(_now() * 1000)
        with self._tx() as db:
            seen: dict[str, tuple[int, int, int]] = {}
            for stream, ts, message in events:
                db.execute("INSERT INTO log_events (stream, timestamp, ingestion, message)"
                           " VALUES (?, ?, ?, ?)", (stream, ts, ingestion, message))
                first, last, size = seen.get(stream, (ts, ts, 0))
                seen[stream] = (min(first, ts), max(last, ts), size + len(message.encode("utf-8", "replace")))
            for stream, (first, last, size) in seen.items():
                db.execute("INSERT OR IGNORE INTO log_streams (name, job, creation_time, log_group)"
                           " VALUES (?, ?, ?, ?)", (stream, job, ingestion, group))
                db.execute(
                    "UPDATE log_streams SET first_event = MIN(COALESCE(first_event, ?), ?),"
                    " last_event = MAX(COALESCE(last_event, ?), ?), last_ingestion = ?,"
                    " stored_bytes = stored_bytes + ? WHERE name = ?",
                    (first, first, last, last, ingestion, size, stream),
                )

    def log_streams(self, prefix: str | None = None, group: str = LOG_GROUP) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM log_streams WHERE log_group = ?", [group]
        if prefix:
            sql += " AND substr(name, 1, ?) = ?"
            args += [len(prefix), prefix]
        return [dict(r) for r in self._db().execute(sql + " ORDER BY name", args)]

    def log_stream(self, name: str, group: str = LOG_GROUP) -> dict[str, Any] | None:
        row = self._db().execute("SELECT * FROM log_streams WHERE name = ? AND log_group = ?",
                                 (name, group)).fetchone()
        return dict(row) if row else None

    def log_groups(self) -> set[str]:
        """The training group (always there) and every group a resource has logged to."""
        rows = self._db().execute("SELECT DISTINCT log_group FROM log_streams").fetchall()
        return {LOG_GROUP, *(r["log_group"] for r in rows)}

    # -- hosting resources (models, endpoint configs, endpoints) and their processes -----------------
    def create_resource(self, kind: str, name: str, arn: str, request: dict[str, Any],
                        status: str | None = None, state: dict[str, Any] | None = None) -> bool:
        """Record a new resource; False when ``kind`` ``name`` exists already."""
        now = _now()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM resources WHERE kind = ? AND name = ?", (kind, name)).fetchone():
                return False
            db.execute("INSERT INTO resources (kind, name, arn, request, status, creation_time,"
                       " last_modified_time, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (kind, name, arn, json.dumps(request), status, now, now, json.dumps(state or {})))
        return True

    def get_resource(self, kind: str, name: str) -> dict[str, Any] | None:
        row = self._db().execute("SELECT * FROM resources WHERE kind = ? AND name = ?", (kind, name)).fetchone()
        return _resource(row) if row else None

    def list_resources(self, kind: str) -> list[dict[str, Any]]:
        rows = self._db().execute("SELECT * FROM resources WHERE kind = ? ORDER BY creation_time, name", (kind,))
        return [_resource(r) for r in rows]

    def update_resource(self, kind: str, name: str, *, expect: Iterable[str] | None = None,
                        **changes: Any) -> bool:
        """Set ``status``/``failure_reason``/``request`` and merge ``state`` keys; with ``expect``, only while the
        status is one of those (False otherwise, and when the resource is gone)."""
        with self._tx() as db:
            row = db.execute("SELECT status, state FROM resources WHERE kind = ? AND name = ?",
                             (kind, name)).fetchone()
            if row is None or (expect is not None and row["status"] not in set(expect)):
                return False
            state = {**json.loads(row["state"]), **changes.pop("state", {})}
            sets = {"state": json.dumps(state), "last_modified_time": _now()}
            for key in ("status", "failure_reason"):
                if key in changes:
                    sets[key] = changes.pop(key)
            if "request" in changes:
                sets["request"] = json.dumps(changes.pop("request"))
            if changes:
                raise TypeError(f"unknown resource fields {sorted(changes)}")
            db.execute(f"UPDATE resources SET {', '.join(f'{k} = ?' for k in sets)} WHERE kind = ? AND name = ?",
                       [*sets.values(), kind, name])
        return True

    def delete_resource(self, kind: str, name: str) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM processes WHERE kind = ? AND name = ?", (kind, name))
            return db.execute("DELETE FROM resources WHERE kind = ? AND name = ?", (kind, name)).rowcount > 0

    def set_process(self, kind: str, name: str, host: str, pid: int, start: str | None,
                    **info: Any) -> None:
        """Record the process that serves ``kind`` ``name`` on ``host`` (one per host), replacing the last."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO processes (kind, name, host, pid, start, info) VALUES (?, ?, ?, ?, ?, ?)",
                       (kind, name, host, pid, start, json.dumps(info)))

    def processes(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM processes WHERE kind = ?", [kind]
        if name is not None:
            sql += " AND name = ?"
            args.append(name)
        return [{**dict(r), "info": json.loads(r["info"])} for r in self._db().execute(sql, args)]

    def drop_process(self, kind: str, name: str, host: str, pid: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM processes WHERE kind = ? AND name = ? AND host = ? AND pid = ?",
                       (kind, name, host, pid))

    def log_events(self, streams: list[str], *, after: int = 0, before: int | None = None,
                   start: int | None = None, end: int | None = None, limit: int = 10000,
                   newest: bool = False) -> list[dict[str, Any]]:
        """Events of ``streams`` with ``after <= id < before`` in ``[start, end)``, oldest first.

        ``newest`` takes the last ``limit`` such events instead of the first.
        """
        if not streams:
            return []
        where = [f"stream IN ({','.join('?' * len(streams))})", "id >= ?"]
        args: list[Any] = [*streams, after]
        if before is not None:
            where.append("id < ?")
            args.append(before)
        if start is not None:
            where.append("timestamp >= ?")
            args.append(start)
        if end is not None:
            where.append("timestamp < ?")
            args.append(end)
        sql = (f"SELECT id, stream, timestamp, ingestion, message FROM log_events WHERE {' AND '.join(where)}"
               f" ORDER BY id {'DESC' if newest else 'ASC'} LIMIT ?")
        rows = [dict(r) for r in self._db().execute(sql, [*args, limit])]
        return rows[::-1] if newest else rows


def _job(row: sqlite3.Row) -> dict[str, Any]:
    job = dict(row)
    job["request"] = json.loads(job["request"])
    job["final_metrics"] = json.loads(job["final_metrics"]) if job["final_metrics"] else []
    return job


def _resource(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["request"] = json.loads(out["request"])
    out["state"] = json.loads(out["state"])
    return out


def _final_message(secondary: str, reason: str | None) -> str:
    return {
        "Completed": "Training job completed",
        "Stopped": "Training job stopped",
        "MaxRuntimeExceeded": "Training job stopped: it exceeded MaxRuntimeInSeconds",
        "MaxWaitTimeExceeded": "Training job stopped: it exceeded MaxWaitTimeInSeconds",
        "Failed": f"Training job failed: {reason}" if reason else "Training job failed",
    }.get(secondary, secondary)


def process_start(pid: int) -> str | None:
    """The start time of ``pid`` from ``/proc`` (clock ticks since boot), to tell a reused PID apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return None


def kill_process_group(pgid: int | None, start: str | None) -> bool:
    """SIGKILL the process group ``pgid`` if its leader (alive or a zombie) is still the process that started
    at ``start``: a leader that is not yet reaped keeps its pid, so the group cannot be another one then.
    Without ``/proc`` (no start time to compare) nothing is killed."""
    if not pgid or start is None or process_start(pgid) != start:
        return False
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        return False
    return True


#: Set in a job supervisor's environment (``<job>@<creation time>``) and inherited by everything the job
#: starts: what is left of a job whose supervisor was SIGKILLed is found by it, even after a ``setsid``.
JOB_MARKER = "AIRFLOW_SM_PYTORCH_JOB"


def job_marker(job: dict[str, Any]) -> str:
    return f"{job['name']}@{job['creation_time']}"


def kill_marked(marker: str) -> int:
    """SIGKILL every process of this user whose (initial) environment carries ``JOB_MARKER=marker``.

    Not covered: a process that re-executed itself with a cleared environment."""
    import psutil

    killed = 0
    for proc in psutil.process_iter(["environ"]):
        try:
            if (proc.info.get("environ") or {}).get(JOB_MARKER) == marker and proc.pid != os.getpid():
                proc.kill()
                killed += 1
        except (psutil.Error, OSError):
            continue
    return killed


def process_alive(pid: int | None, start: str | None) -> bool:
    """Is ``pid`` still the process that started at ``start``? (zombies count as gone)"""
    if not pid:
        return False
    if os.path.isdir("/proc/self"):
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return False
        if fields[0] in ("Z", "X", "x"):
            return False
        return start is None or fields[19] == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
