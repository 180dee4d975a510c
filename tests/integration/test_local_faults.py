"""Faults with real processes: killed servers and supervisors, concurrent jobs, stops, duplicates."""

from __future__ import annotations

import os
import signal
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

#: Runs until killed; writes its PID so that the test can clean up after a supervisor it killed.
FOREVER = """\
import os, time
with open({pid_file!r}, "w") as f:
    f.write(str(os.getpid()))
print("started", flush=True)
while True:
    print("tick", flush=True)
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


def kill_pid_file(pid_file: Path) -> None:
    try:
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
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
        wait_until(pid_file.exists)
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
    finally:
        kill_pid_file(pid_file)


def test_a_supervisor_killed_under_a_running_server_is_noticed_on_describe(local_runtime, training_request,
                                                                            tmp_path):
    pid_file = tmp_path / "script.pid"
    sm = local_runtime.client("sagemaker")
    sm.create_training_job(**training_request("orphan-2", FOREVER.format(pid_file=str(pid_file))))
    try:
        wait_until(pid_file.exists)
        (supervisor,) = local_runtime.supervisors()
        os.kill(supervisor, signal.SIGKILL)
        desc = wait_until(lambda: (d := sm.describe_training_job(TrainingJobName="orphan-2"))
                          ["TrainingJobStatus"] != "InProgress" and d, timeout=10)
        assert desc["TrainingJobStatus"] == "Failed"
        assert "supervisor exited unexpectedly" in desc["FailureReason"]
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
    # a job whose server died between recording it and launching its supervisor
    store.create_job("never", "arn:aws:sagemaker:us-east-1:000000000000:training-job/never", "us-east-1", request)
    store._db().execute("UPDATE jobs SET creation_time = creation_time - 120 WHERE name = 'never'")
    store.close()
    sm = local_runtime.client("sagemaker")
    ghost = sm.describe_training_job(TrainingJobName="ghost")
    assert ghost["TrainingJobStatus"] == "Failed" and f"pid {os.getpid()}" in ghost["FailureReason"]
    never = sm.describe_training_job(TrainingJobName="never")
    assert never["TrainingJobStatus"] == "Failed" and "never started" in never["FailureReason"]


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
