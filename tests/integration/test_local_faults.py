"""Faults with real processes: killed servers and supervisors, concurrent jobs, stops, duplicates."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from botocore.exceptions import ClientError

from airflow_sm_pytorch.local.store import LOG_GROUP, Store
from tests.conftest import wait_for_job

pytestmark = pytest.mark.integration

LINES = """\
import os, sys, time
for i in range({n}):
    print(f"line {{i:03d}}", flush=True)
    time.sleep({pause})
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w") as f:
    f.write("trained")
"""

#: Runs until killed; writes its PID so that the test can check that it is gone (or clean it up).
FOREVER = """\
import os, time
with open({pid_file!r}, "w") as f:
    f.write(str(os.getpid()))
print("started", flush=True)
while True:
    try:
        print("tick", flush=True)
    except BrokenPipeError:  # its supervisor is gone: go on, as a loop that prints nothing would
        pass
    time.sleep(0.1)
"""


def error_of(call, **kwargs) -> dict:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    return info.value.response["Error"]


def wait_until(predicate, timeout: float = 60.0, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")


class Tailer:
    """Follows a job's log stream the way a CloudWatch tailer does: only ever ``nextForwardToken``."""

    def __init__(self, runtime, job: str) -> None:
        self.runtime, self.job = runtime, job
        self.stream: str | None = None
        self.token: str | None = None
        self.lines: list[str] = []

    def poll(self) -> list[str]:
        logs = self.runtime.client("logs")
        if self.stream is None:
            streams = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{self.job}/")
            if not streams["logStreams"]:
                return []
            self.stream = streams["logStreams"][0]["logStreamName"]
        kwargs = {"nextToken": self.token} if self.token else {}
        resp = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=self.stream, startFromHead=True, **kwargs)
        self.token = resp["nextForwardToken"]
        new = [e["message"] for e in resp["events"]]
        self.lines += new
        return new


def model_members(desc: dict) -> list[str]:
    path = Path(unquote(urlparse(desc["ModelArtifacts"]["S3ModelArtifacts"]).path))
    assert path.is_file(), path
    with tarfile.open(path) as tar:
        return [m.name.lstrip("./") for m in tar.getmembers() if m.isfile()]


#: Exits at once, leaving behind a process of its own group that does not hold the output pipe.
LEAVES_A_CHILD = """\
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
with open({pid_file!r}, "w") as f:
    f.write(str(child.pid))
print("spawned", child.pid, flush=True)
"""


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def script_pid(pid_file: Path) -> tuple[int, str | None]:
    """The PID a script wrote to ``pid_file`` (waiting for it), and that process's start time."""
    pid = wait_until(lambda: pid_file.exists() and pid_file.read_text().strip().isdigit()
                     and int(pid_file.read_text()))
    stat = _stat(pid)
    return pid, stat[19] if stat else None


def gone(pid: int, start: str | None) -> bool:
    """Is that process gone (or a zombie: it runs no more; or another process that reuses its PID)?"""
    if not os.path.isdir("/proc/self"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    stat = _stat(pid)
    return stat is None or stat[0] in ("Z", "X") or (start is not None and stat[19] != start)


def kill_pid_file(pid_file: Path) -> None:
    """Clean-up only: SIGKILL the script that wrote ``pid_file`` if it still runs (not a reused PID)."""
    try:
        pid = int(pid_file.read_text())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        if b"train.py" not in cmdline and b"time.sleep(600)" not in cmdline:
            return
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def test_a_duplicate_job_name_is_resource_in_use(local_runtime, training_request):
    sm = local_runtime.client("sagemaker")
    arn = sm.create_training_job(**training_request("dup-job", "print('x')\n"))["TrainingJobArn"]
    for name in ("dup-job", "DUP-JOB"):  # names are unique case-insensitively, as their ARNs are
        err = error_of(sm.create_training_job, **training_request(name, "print('y')\n"))
        assert err["Code"] == "ResourceInUse"
        assert err["Message"] == ("Training job names must be unique within an AWS account and region, and a "
                                  f"training job with this name already exists ({arn})")


def test_a_job_survives_a_killed_server_and_no_log_line_is_lost(local_runtime, training_request):
    sm = local_runtime.client("sagemaker")
    sm.create_training_job(**training_request("survivor", LINES.format(n=200, pause=0.02)))
    tail = Tailer(local_runtime, "survivor")
    wait_until(lambda: tail.poll() is not None and sum(m.startswith("line ") for m in tail.lines) >= 30)
    local_runtime.kill()
    time.sleep(1.0)  # the job keeps logging into the store while no server runs
    local_runtime.restart()
    sm = local_runtime.client("sagemaker")
    desc = wait_for_job(sm, "survivor")
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    while tail.poll():
        pass
    assert [m for m in tail.lines if m.startswith("line ")] == [f"line {i:03d}" for i in range(200)]
    assert "model.txt" in model_members(desc)
    statuses = [t["Status"] for t in desc["SecondaryStatusTransitions"]]
    assert statuses[0] == "Starting" and statuses[-1] == "Completed" and "Training" in statuses
    assert desc["TrainingTimeInSeconds"] >= 1 and desc["BillableTimeInSeconds"] >= 1


def test_a_killed_supervisor_fails_the_job_with_a_reason(local_runtime, training_request, tmp_path):
    pid_file = tmp_path / "script.pid"
    sm = local_runtime.client("sagemaker")
    sm.create_training_job(**training_request("orphan", FOREVER.format(pid_file=str(pid_file))))
    try:
        script = script_pid(pid_file)
        assert not gone(*script)
        (supervisor,) = local_runtime.supervisors()
        local_runtime.kill()
        os.kill(supervisor, signal.SIGKILL)
        local_runtime.restart()  # the check at start marks it Failed
        sm = local_runtime.client("sagemaker")
        desc = sm.describe_training_job(TrainingJobName="orphan")
        assert desc["TrainingJobStatus"] == "Failed" and desc["SecondaryStatus"] == "Failed"
        assert desc["FailureReason"].startswith("the local runtime's job supervisor exited unexpectedly")
        assert f"pid {supervisor}" in desc["FailureReason"]
        assert "TrainingEndTime" in desc
        wait_until(lambda: gone(*script), timeout=5)  # the orphaned script was killed
    finally:
        kill_pid_file(pid_file)


def test_a_supervisor_killed_under_a_running_server_is_noticed_on_describe(local_runtime, training_request,
                                                                            tmp_path):
    pid_file = tmp_path / "script.pid"
    sm = local_runtime.client("sagemaker")
    sm.create_training_job(**training_request("orphan-2", FOREVER.format(pid_file=str(pid_file))))
    try:
        script = script_pid(pid_file)
        assert not gone(*script)
        (supervisor,) = local_runtime.supervisors()
        os.kill(supervisor, signal.SIGKILL)
        desc = wait_until(lambda: (d := sm.describe_training_job(TrainingJobName="orphan-2"))
                          ["TrainingJobStatus"] != "InProgress" and d, timeout=10)
        assert desc["TrainingJobStatus"] == "Failed"
        assert "supervisor exited unexpectedly" in desc["FailureReason"]
        wait_until(lambda: gone(*script), timeout=5)  # the orphaned script was killed
        summary = sm.list_training_jobs()["TrainingJobSummaries"][0]
        assert summary["TrainingJobStatus"] == "Failed"
    finally:
        kill_pid_file(pid_file)


def test_a_reused_pid_or_a_never_launched_supervisor_is_not_taken_for_a_live_one(local_runtime):
    store = Store(local_runtime.root)
    request = {"TrainingJobName": "ghost", "RoleArn": "r"}
    # a live process with another start time (our own PID): a reused PID
    store.create_job("ghost", "arn:aws:sagemaker:us-east-1:000000000000:training-job/ghost", "us-east-1", request)
    store.set_supervisor("ghost", os.getpid(), "1", ready=True)
    # its recorded process group's id is now another group's (another start time): that one must live on
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                 start_new_session=True)
    store.set_process_group("ghost", bystander.pid, "1")
    # a job whose server died between recording it and launching its supervisor
    store.create_job("never", "arn:aws:sagemaker:us-east-1:000000000000:training-job/never", "us-east-1", request)
    store._db().execute("UPDATE jobs SET creation_time = creation_time - 120 WHERE name = 'never'")
    store.close()
    sm = local_runtime.client("sagemaker")
    ghost = sm.describe_training_job(TrainingJobName="ghost")
    assert ghost["TrainingJobStatus"] == "Failed" and f"pid {os.getpid()}" in ghost["FailureReason"]
    never = sm.describe_training_job(TrainingJobName="never")
    assert never["TrainingJobStatus"] == "Failed" and "never started" in never["FailureReason"]
    try:
        time.sleep(0.5)
        assert bystander.poll() is None, "a process group with a reused id was killed"
    finally:
        bystander.kill()
        bystander.wait()


def test_a_job_that_ends_leaves_none_of_its_process_group_behind(local_runtime, training_request, tmp_path):
    pid_file = tmp_path / "child.pid"
    sm = local_runtime.client("sagemaker")
    sm.create_training_job(**training_request("leaver", LEAVES_A_CHILD.format(pid_file=str(pid_file))))
    try:
        desc = wait_for_job(sm, "leaver")
        assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
        wait_until(lambda: gone(*script_pid(pid_file)), timeout=5)
        store = Store(local_runtime.root)
        assert store.get_job("leaver")["process_group"] is None  # cleared when the script ended
        store.close()
    finally:
        kill_pid_file(pid_file)


def test_a_state_db_from_before_process_groups_gets_the_new_columns(tmp_path):
    old = sqlite3.connect(tmp_path / "state.db")
    old.execute("CREATE TABLE jobs (name TEXT PRIMARY KEY COLLATE NOCASE, arn TEXT NOT NULL,"
                " region TEXT NOT NULL, request TEXT NOT NULL, status TEXT NOT NULL,"
                " secondary_status TEXT NOT NULL, failure_reason TEXT, creation_time REAL NOT NULL,"
                " last_modified_time REAL NOT NULL, training_start_time REAL, training_end_time REAL,"
                " model_artifacts TEXT, final_metrics TEXT, training_seconds INTEGER,"
                " billable_seconds INTEGER, supervisor_pid INTEGER, supervisor_start TEXT,"
                " supervisor_ready INTEGER NOT NULL DEFAULT 0, stop_requested INTEGER NOT NULL DEFAULT 0)")
    old.execute("INSERT INTO jobs (name, arn, region, request, status, secondary_status, creation_time,"
                " last_modified_time) VALUES ('old', 'arn', 'r', '{}', 'InProgress', 'Training', 1, 1)")
    old.commit()
    old.close()
    store = Store(tmp_path)
    assert store.get_job("old")["process_group"] is None
    store.set_process_group("old", 4242, "77")
    store.close()
    store = Store(tmp_path)  # opening it again changes nothing
    job = store.get_job("old")
    assert (job["process_group"], job["process_group_start"], job["status"]) == (4242, "77", "InProgress")
    store.close()


def test_two_jobs_at_once_both_complete(local_runtime, training_request):
    sm = local_runtime.client("sagemaker")
    for name in ("twin-a", "twin-b"):
        sm.create_training_job(**training_request(name, LINES.format(n=20, pause=0.05)))
    assert len(local_runtime.supervisors()) == 2
    for name in ("twin-a", "twin-b"):
        desc = wait_for_job(sm, name)
        assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
        assert "model.txt" in model_members(desc)
        tail = Tailer(local_runtime, name)
        while tail.poll():
            pass
        assert [m for m in tail.lines if m.startswith("line ")] == [f"line {i:03d}" for i in range(20)]


def test_stop_training_job(local_runtime, training_request, tmp_path):
    pid_file = tmp_path / "script.pid"
    sm = local_runtime.client("sagemaker")
    sm.create_training_job(**training_request("stop-me", FOREVER.format(pid_file=str(pid_file))))
    try:
        wait_until(pid_file.exists)
        assert sm.stop_training_job(TrainingJobName="stop-me")["ResponseMetadata"]["HTTPStatusCode"] == 200
        desc = sm.describe_training_job(TrainingJobName="stop-me")
        if desc["TrainingJobStatus"] != "Stopped":
            assert (desc["TrainingJobStatus"], desc["SecondaryStatus"]) == ("Stopping", "Stopping")
            sm.stop_training_job(TrainingJobName="stop-me")  # again while stopping: still accepted
        desc = wait_for_job(sm, "stop-me", timeout=60)
        assert desc["TrainingJobStatus"] == "Stopped", desc.get("FailureReason")
        assert desc["SecondaryStatus"] == "Stopped"
        statuses = [t["Status"] for t in desc["SecondaryStatusTransitions"]]
        assert "Stopping" in statuses and statuses[-1] == "Stopped"
        wait_until(lambda: not local_runtime.supervisors(), timeout=10)
        err = error_of(sm.stop_training_job, TrainingJobName="stop-me")
        assert err["Message"] == "The request was rejected because the training job is in status Stopped."
    finally:
        kill_pid_file(pid_file)


def test_unknown_jobs_are_errors(local_runtime):
    sm = local_runtime.client("sagemaker")
    for call in (sm.describe_training_job, sm.stop_training_job):
        assert error_of(call, TrainingJobName="missing")["Code"] == "ValidationException"
    logs = local_runtime.client("logs")
    assert logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix="missing/")["logStreams"] == []
    err = error_of(logs.get_log_events, logGroupName=LOG_GROUP, logStreamName="missing/algo-1-1")
    assert err["Code"] == "ResourceNotFoundException"


def test_a_stop_right_after_create_is_not_lost(local_runtime, training_request, tmp_path):
    pid_file = tmp_path / "script.pid"
    sm = local_runtime.client("sagemaker")
    sm.create_training_job(**training_request("stop-early", FOREVER.format(pid_file=str(pid_file))))
    try:
        sm.stop_training_job(TrainingJobName="stop-early")  # races the supervisor's start
        desc = wait_for_job(sm, "stop-early", timeout=60)
        assert desc["TrainingJobStatus"] == "Stopped", desc.get("FailureReason")
    finally:
        kill_pid_file(pid_file)
