"""A script cannot wedge its job or outlive it: processes that leave the session (``setsid``, daemons)
are found and killed on stop, on MaxRuntimeInSeconds and at the normal end (issue 8, finding 3)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import wait_for_job
from tests.integration.test_runner import FIXTURES, Recorder, _code, _request, _run

pytestmark = pytest.mark.integration
GRACE = 1.0


class StopRecorder(Recorder):
    """Requests a stop once ``stop_when`` was logged, and remembers when."""

    stopped_at: float | None = None

    def _stop(self) -> bool:
        if super()._stop():
            if self.stopped_at is None:
                self.stopped_at = time.monotonic()
            return True
        return False


def _pid(pid_file: Path) -> int:
    return int(pid_file.read_text())


def _alive(pid: int) -> bool:
    """Is the escaped fixture process still there (running, or a zombie nobody reaped)?"""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE and proc.ppid() == os.getpid():
            # killed, and re-parented to this test process (a subreaper once run_streamed ran here)
            os.waitpid(pid, os.WNOHANG)
            return False
        return proc.status() == psutil.STATUS_ZOMBIE or "escape" in " ".join(proc.cmdline()) or (
            "setsid" in " ".join(proc.cmdline()))
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process reuses the pid
        return False


def _gone_soon(pid: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


@pytest.fixture
def pid_file(tmp_path):
    """Where the escaped process writes its pid; it is SIGKILLed afterwards if it is still there."""
    path = tmp_path / "escaped.pid"
    yield path
    try:
        pid = _pid(path)
    except (OSError, ValueError):
        return
    if _alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _escape_request(tmp_path: Path, name: str, mode: str, pid_file: Path, ignore_sigterm: bool = False,
                    **extra) -> dict:
    hps = {"mode": f'"{mode}"', "pid-file": f'"{pid_file}"',
           "ignore-sigterm": '"true"' if ignore_sigterm else '"false"'}
    return _request(name, _code(tmp_path, {"escape.py": FIXTURES / "escape.py"}), "escape.py",
                    (tmp_path / "out").as_uri(), hps, **extra)


@pytest.mark.timeout(30)
def test_stop_ends_a_job_whose_child_left_the_session_and_holds_stdout(tmp_path, pid_file):
    rec = StopRecorder(stop_when="escape: ready")
    request = _escape_request(tmp_path, "wedge-stop", "setsid", pid_file, ignore_sigterm=True)
    result, _ = _run(tmp_path, request, rec, grace=GRACE)
    ended = time.monotonic()
    assert (result.status, result.secondary_status) == ("Stopped", "Stopped"), rec.text
    assert "escaped child ready" in rec.text
    assert rec.stopped_at is not None and GRACE <= ended - rec.stopped_at < GRACE + 5  # SIGTERM is ignored
    assert _gone_soon(_pid(pid_file))


@pytest.mark.timeout(30)
def test_max_runtime_ends_a_job_whose_child_left_the_session(tmp_path, pid_file):
    req = _escape_request(tmp_path, "wedge-timeout", "setsid", pid_file,
                          StoppingCondition={"MaxRuntimeInSeconds": 2})
    rec = Recorder()
    t0 = time.monotonic()
    result, _ = _run(tmp_path, req, rec, grace=GRACE)
    assert (result.status, result.secondary_status) == ("Stopped", "MaxRuntimeExceeded"), rec.text
    assert time.monotonic() - t0 < 2 + GRACE + 15  # staging included
    assert _gone_soon(_pid(pid_file))


@pytest.mark.timeout(30)
def test_a_daemon_does_not_outlive_a_completed_job(tmp_path, pid_file):
    rec = Recorder()
    result, _ = _run(tmp_path, _escape_request(tmp_path, "daemon", "daemon", pid_file), rec, grace=GRACE)
    assert (result.status, result.secondary_status) == ("Completed", "Completed"), rec.text
    assert "escape: daemon started" in rec.text
    assert _gone_soon(_pid(pid_file), timeout=0.5)  # killed (and reaped) before the job ended


@pytest.mark.timeout(90)
def test_stop_training_job_ends_a_wedged_job_through_the_server(local_runtime, training_request, pid_file):
    sm = local_runtime.client("sagemaker")
    request = training_request("wedged", (FIXTURES / "escape.py").read_text(),
                               hyperparameters={"mode": "setsid", "pid-file": str(pid_file)})
    sm.create_training_job(**request)
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pid_file.exists(), sm.describe_training_job(TrainingJobName="wedged")
    (supervisor,) = local_runtime.supervisors()
    job = psutil.Process(supervisor)
    time.sleep(0.3)  # the script prints "ready" once the child has left its session
    sm.stop_training_job(TrainingJobName="wedged")
    t0 = time.monotonic()
    desc = wait_for_job(sm, "wedged", timeout=10 + 5 + 10)  # the runtime's grace period is 10 s
    assert desc["TrainingJobStatus"] == "Stopped", desc.get("FailureReason")
    assert time.monotonic() - t0 < 10 + 5 + 3
    assert _gone_soon(_pid(pid_file))
    assert _gone_soon(job.pid, timeout=10)  # the supervisor exits, leaving nothing behind


@pytest.mark.timeout(90)
def test_a_killed_supervisor_leaves_no_escaped_process(local_runtime, training_request, pid_file):
    """The supervisor cannot clean up after SIGKILL: the server kills what carries the job's marker."""
    sm = local_runtime.client("sagemaker")
    request = training_request("orphaned-escape", (FIXTURES / "escape.py").read_text(),
                               hyperparameters={"mode": "setsid", "pid-file": str(pid_file)})
    sm.create_training_job(**request)
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    escaped = _pid(pid_file)
    (supervisor,) = local_runtime.supervisors()
    os.kill(supervisor, signal.SIGKILL)
    desc = wait_for_job(sm, "orphaned-escape", timeout=20)
    assert desc["TrainingJobStatus"] == "Failed" and "supervisor exited" in desc["FailureReason"]
    assert _gone_soon(escaped, timeout=5)
