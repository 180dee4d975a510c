"""Faults of the *task*, not of the job, against the local runtime (issue 10 point 4).

* a task process SIGKILLed at a random point and run again in the same try ends with its one job;
* a killed task (SIGTERM as Airflow's supervisor sends it; a deferred task's trigger cancelled by a user
  action, then ``on_kill``) has its job Stopped within one poll interval;
* the runtime down for 10 s while tasks wait: the tasks carry on and succeed.

Task processes are forked from a zygote (:mod:`tests.integration.task_process`) that imported the operator
once: a real process per task run, cheap enough for 20 rounds per mode.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from airflow_sm_pytorch.builders.naming import task_job_name
from tests.integration.test_deferrable import _defer, _first_async
from tests.integration.test_deferrable import _operator as deferrable_operator
from tests.integration.test_local_faults import wait_until
from tests.integration.test_operator_local import _context, _operator, _script

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

#: A short job that logs while it runs (the waiting task tails it).
SHORT = "import time\nfor i in range({n}):\n    print(f'step {{i}}', flush=True)\n    time.sleep(0.1)\n"


class Zygote:
    """The test's side of :mod:`tests.integration.task_process`: start task runs, follow them, kill them."""

    def __init__(self, log: Path) -> None:
        with open(log, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.integration.task_process"], cwd=ROOT,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         env=dict(os.environ))
        self.log = log
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait("", "ready", timeout=120)

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.messages.setdefault(message["tag"], []).append(message)
                self.cond.notify_all()

    def start(self, tag: str, **request: Any) -> None:
        """Run a task; it sees this process's Airflow connections as they are now (``local_conn``)."""
        env = {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW_CONN_")}
        self.proc.stdin.write((json.dumps({"tag": tag, "env": env, **request}) + "\n").encode())
        self.proc.stdin.flush()

    def find(self, tag: str, key: str, phase: str | None = None) -> dict[str, Any] | None:
        for message in self.messages.get(tag, []):
            if key in message and (phase is None or message.get("phase") == phase):
                return message
        return None

    def wait(self, tag: str, key: str, phase: str | None = None, timeout: float = 90.0) -> dict[str, Any]:
        """The first message of ``tag`` with ``key`` (and that ``phase``); an error or exit ends the wait."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = self.find(tag, key, phase)
                if found is not None:
                    return found
                ended = self.find(tag, "error") or self.find(tag, "exit")
                if ended is not None:
                    raise AssertionError(f"{tag} ended before {key} {phase or ''}: {ended}\n{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"{tag}: no {key} {phase or ''} within {timeout}s: "
                                         f"{self.messages.get(tag)}\n{self.tail()}")
                self.cond.wait(min(left, 1.0))

    def result(self, tag: str, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while (end := self.find(tag, "result") or self.find(tag, "error")) is None:
                left = deadline - time.monotonic()
                assert left > 0 and self.proc.poll() is None, f"{tag}: no result in {timeout}s\n{self.tail()}"
                self.cond.wait(min(left, 1.0))
        assert "result" in end, f"{tag} failed: {end}"
        return end["result"]

    def signal(self, tag: str, sig: int) -> None:
        pid = self.wait(tag, "pid")["pid"]
        if self.find(tag, "exit") is None:  # not reaped yet: the pid is still this child's
            os.kill(pid, sig)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def close(self) -> None:
        for messages in list(self.messages.values()):
            pids = [m["pid"] for m in messages if "pid" in m]
            if pids and not any("exit" in m for m in messages):
                try:
                    os.kill(pids[0], signal.SIGKILL)
                except OSError:
                    pass
        self.proc.stdin.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    """Task processes (one zygote for the module: its imports cost seconds)."""
    z = Zygote(tmp_path_factory.mktemp("zygote") / "task-processes.log")
    try:
        yield z
    finally:
        z.close()


@functools.lru_cache(maxsize=8)
def sagemaker(runtime: Any) -> Any:
    """One client per runtime (a client costs a good part of a second of CPU; they are thread-safe)."""
    return runtime.client("sagemaker")


def jobs_of(runtime: Any, run_id: str) -> list[str]:
    """Every training job on the runtime whose name is this task instance's (any try)."""
    base = task_job_name(dag_id="d", task_id="train", run_id=run_id)
    sm = sagemaker(runtime)
    names, token = [], None
    while True:
        page = sm.list_training_jobs(NameContains=base, MaxResults=100, **({"NextToken": token} if token else {}))
        names += [j["TrainingJobName"] for j in page["TrainingJobSummaries"]]
        if not (token := page.get("NextToken")):
            return names


# ---------------------------------------------------------------------------------------- SIGKILL, rerun
#: Where a task can be killed, with the longest random delay after reaching that phase:
#: before the job exists (the describes of earlier tries, the plan), in the describe-then-create (before the
#: upload), with the CreateTrainingJob request in flight, right after create, while the worker waits and
#: tails logs / while the trigger waits, in execute_complete.
KILL_POINTS = {
    "plain": {"start": 0.15, "create": 0.1, "sending": 0.03, "created": 0.0, "waiting": 1.2},
    "deferred": {"start": 0.15, "create": 0.1, "sending": 0.03, "created": 0.0, "trigger": 1.2,
                 "complete": 0.15},
}
ROUNDS = 20
PARALLEL = 6


def kill_plan(mode: str, seed: int) -> list[tuple[str, float]]:
    """Every kill point once (in a random order), then random ones; each with a random delay."""
    rng = random.Random(seed)
    points = KILL_POINTS[mode]
    phases = rng.sample(sorted(points), len(points))
    phases += [rng.choice(sorted(points)) for _ in range(ROUNDS - len(phases))]
    return [(phase, round(rng.uniform(0, points[phase]), 3)) for phase in phases]


@pytest.mark.timeout(600)  # ~45 s (plain) and ~75 s (deferred) on 2 idle cores
@pytest.mark.parametrize("mode", ["plain", "deferred"])
def test_a_task_killed_anywhere_and_run_again_in_the_same_try_ends_with_its_one_job(
        mode, zygote, local_runtime, local_conn, tmp_path):
    seed = int(os.environ.get("FAULT_SEED", random.SystemRandom().randrange(1 << 32)))
    plan = kill_plan(mode, seed)
    print(f"{mode}: seed {seed} (FAULT_SEED={seed} repeats the kill points): {plan}")
    src = _script(tmp_path, SHORT.format(n=12))
    base = {"conn_id": local_conn, "source_dir": str(src), "poll_interval": 0.2}

    def round_(i: int) -> str:
        phase, delay = plan[i]
        run_id = f"kill-{mode}-{i}"
        first, again = f"{run_id}-killed", f"{run_id}-again"
        zygote.start(first, mode=mode, run_id=run_id, **base)
        reached = zygote.wait(first, "phase", phase, timeout=90)
        time.sleep(max(0.0, delay - (time.time() - reached["t"])))
        zygote.signal(first, signal.SIGKILL)
        exit_ = zygote.wait(first, "exit", timeout=30)
        phases = [m["phase"] for m in zygote.messages[first] if "phase" in m]
        ended = zygote.find(first, "result") is not None
        assert exit_["exit"] == -signal.SIGKILL or ended, exit_
        deferral = zygote.find(first, "phase", "deferred")
        resumed = mode == "deferred" and phases[-1] == "trigger" and not ended
        if resumed:
            # the triggerer died: another one runs the same serialized trigger, then the task resumes
            zygote.start(again, mode="trigger", run_id=run_id, trigger=deferral["trigger"],
                         kwargs=deferral["kwargs"], **base)
        else:  # the worker died: the same try runs again from execute
            zygote.start(again, mode=mode, run_id=run_id, **base)
        result = zygote.result(again, timeout=120)
        names = jobs_of(local_runtime, run_id)
        assert names == [result["TrainingJobName"]], (plan[i], phases, names, result)
        assert result["TrainingJobStatus"] == "Completed", result
        created = zygote.find(first, "phase", "created")
        if resumed:  # the resumed task reports what its execute did
            assert result["Created"] is created["created"], result
        elif created is not None:
            assert result["Created"] is False, result  # the rerun attached to the killed run's job
        elif "sending" not in phases:
            assert result["Created"] is True, result  # killed before CreateTrainingJob was sent
        return (f"round {i:2d}: kill at {phase}+{delay:.3f}s, last phase {phases[-1]}"
                f"{' (the task had already ended)' if ended else ''}; the rerun "
                f"{'resumed the trigger' if resumed else 'ran execute'} and "
                f"{'created' if result['Created'] else 'attached to'} {result['TrainingJobName']}")

    started = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        for line in pool.map(round_, range(ROUNDS)):
            print(line)
    all_jobs = sagemaker(local_runtime).list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
    assert len(all_jobs) == ROUNDS, [j["TrainingJobName"] for j in all_jobs]
    print(f"{mode}: {ROUNDS} rounds in {time.monotonic() - started:.1f}s")


# ---------------------------------------------------------------------------------------- kill: job stopped
#: The tasks' poll interval here: the job must be Stopped sooner than this after the kill.
POLL = 5.0
FOREVER = "import time\nprint('started', flush=True)\ntime.sleep(600)\n"


def describe(runtime: Any, name: str) -> dict[str, Any]:
    return sagemaker(runtime).describe_training_job(TrainingJobName=name)


def training(runtime: Any, name: str, timeout: float = 90.0) -> None:
    wait_until(lambda: describe(runtime, name)["SecondaryStatus"] == "Training", timeout=timeout, poll=0.1)


def seconds_until_stopped(runtime: Any, name: str, since: float, timeout: float = 60.0) -> float:
    wait_until(lambda: describe(runtime, name)["TrainingJobStatus"] == "Stopped", timeout=timeout, poll=0.02)
    return time.monotonic() - since


@pytest.mark.timeout(120)
def test_a_killed_worker_task_has_its_job_stopped_within_one_poll_interval(zygote, local_runtime, local_conn,
                                                                           tmp_path):
    src = _script(tmp_path, FOREVER)
    zygote.start("sigterm", mode="plain", run_id="sigterm", conn_id=local_conn, source_dir=str(src),
                 poll_interval=POLL)
    name = zygote.wait("sigterm", "phase", "created")["job"]
    zygote.wait("sigterm", "phase", "waiting")
    training(local_runtime, name)
    killed = time.monotonic()
    zygote.signal("sigterm", signal.SIGTERM)  # what Airflow's supervisor sends on mark failed / a lost task
    stopped = seconds_until_stopped(local_runtime, name, killed)
    end = zygote.wait("sigterm", "error", timeout=3 * POLL)
    ended = time.monotonic() - killed
    print(f"plain: job Stopped {stopped:.2f}s after SIGTERM; the task failed {ended:.2f}s after it "
          f"(poll interval {POLL}s)")
    assert stopped < POLL
    assert end["type"] == "JobFailed" and "Stopped" in end["error"], end
    assert ended < stopped + POLL + 2  # it noticed at its next poll, before Airflow's SIGKILL escalation


@pytest.mark.timeout(120)
def test_a_killed_deferred_task_has_its_job_stopped_within_one_poll_interval(local_runtime, local_conn,
                                                                             tmp_path):
    op = deferrable_operator(local_conn, _script(tmp_path, FOREVER))
    op.poll_interval = POLL
    trigger = _defer(op, _context("user-action")).trigger
    assert trigger.poll_interval == POLL

    async def kill_when_training() -> tuple[float, float]:
        waiting = asyncio.ensure_future(_first_async(trigger))
        await asyncio.to_thread(training, local_runtime, op.job_name)
        killed = time.monotonic()
        waiting.cancel("__airflow_user_action__")  # Airflow >= 3.3's triggerer on mark failed / clear ...
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await trigger.on_kill()  # ... then on_kill
        return killed, time.monotonic() - killed

    killed, on_kill = asyncio.run(kill_when_training())
    stopped = seconds_until_stopped(local_runtime, op.job_name, killed)
    print(f"deferred: on_kill returned {on_kill:.2f}s after the cancel, job Stopped {stopped:.2f}s after it "
          f"(poll interval {POLL}s)")
    assert stopped < POLL


# ---------------------------------------------------------------------------------------- runtime down 10 s
OUTAGE = 10.0


#: Trains until the test creates ``release`` (the job's end is the test's choice, whatever the load).
UNTIL = ("import os, time\nwhile not os.path.exists({release!r}):\n    print('training', flush=True)\n"
         "    time.sleep(0.1)\nprint('released', flush=True)\n")


@pytest.mark.timeout(240)
def test_tasks_wait_through_the_runtime_being_down_for_ten_seconds(zygote, local_runtime, local_conn,
                                                                   tmp_path):
    """Plain and deferred tasks, each with a job that ends while the runtime is down and one that ends
    after it is back; the runtime is SIGKILLed (its jobs run on under their own supervisors)."""
    from airflow_sm_pytorch.local.store import Store

    tasks, release = {}, {}
    for when in ("during", "after"):
        release[when] = tmp_path / f"release-{when}"
        (tmp_path / when).mkdir()
        src = _script(tmp_path / when, UNTIL.format(release=str(release[when])))
        for mode in ("plain", "deferred"):
            tasks[f"outage-{mode}-ends-{when}"] = (mode, src)
    for tag, (mode, src) in tasks.items():
        zygote.start(tag, mode=mode, run_id=tag, conn_id=local_conn, source_dir=str(src), poll_interval=0.5)
    names = {tag: zygote.wait(tag, "phase", "created", timeout=120)["job"] for tag in tasks}
    for tag, (mode, _) in tasks.items():
        zygote.wait(tag, "phase", "waiting" if mode == "plain" else "trigger", timeout=120)
        training(local_runtime, names[tag])
    port = local_runtime.port
    local_runtime.kill()
    down = time.monotonic()
    release["during"].touch()
    time.sleep(OUTAGE)
    store = Store(local_runtime.root)
    try:  # the jobs' supervisors carried on without a server
        statuses = {tag: store.get_job(name)["status"] for tag, name in names.items()}
    finally:
        store.close()
    assert statuses == {tag: "Completed" if "during" in tag else "InProgress" for tag in tasks}, statuses
    local_runtime.restart()
    assert local_runtime.port == port, "the runtime came back on another port: the connection points nowhere"
    back = time.monotonic() - down
    release["after"].touch()
    print(f"runtime SIGKILLed, restarted after {OUTAGE:.0f}s, answering again {back:.1f}s after the kill")
    for tag in tasks:
        result = zygote.result(tag, timeout=150)
        print(f"{tag}: {result['TrainingJobStatus']}, the task ended {time.monotonic() - down:.1f}s after the "
              "runtime died")
        assert result["TrainingJobStatus"] == "Completed", result
        assert jobs_of(local_runtime, tag) == [names[tag]] == [result["TrainingJobName"]]
    logs = local_runtime.logs.glob("server-*.log")
    restarted = max(logs, key=lambda p: int(p.stem.split("-")[1])).read_text(errors="replace")
    assert "whose supervisor had exited" not in restarted, restarted


# ---------------------------------------------------------------------------------------- found: log tail
def _logs_unreachable_once(op: Any, url: str, on_call: int) -> None:
    """The ``on_call``-th GetLogEvents of ``op`` fails as it does once botocore's retries are spent while the
    runtime is away (the same error a Describe gets then, which the wait loop retries)."""
    logs = op.hook.client("logs")
    real, calls = logs.get_log_events, [0]

    def get_log_events(**params: Any) -> Any:
        calls[0] += 1
        if calls[0] == on_call:
            raise EndpointConnectionError(endpoint_url=url)
        return real(**params)

    logs.get_log_events = get_log_events


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["plain", "deferred"])
def test_the_runtime_unreachable_while_logs_are_read_is_a_hiccup_too(mode, local_runtime, local_conn, tmp_path):
    src = _script(tmp_path, SHORT.format(n=10))
    if mode == "plain":  # the second read of the log, in the middle of the wait
        op = _operator(local_conn, src)
        _logs_unreachable_once(op, local_runtime.url, on_call=2)
        result = op.execute(_context("logs-plain"))
    else:  # the resumed task's tail
        deferred = _defer(deferrable_operator(local_conn, src), _context("logs-deferred"))
        event = asyncio.run(_first_async(deferred.trigger))
        op = deferrable_operator(local_conn, src)
        _logs_unreachable_once(op, local_runtime.url, on_call=1)
        result = op.execute_complete(_context("logs-deferred"), event, **(deferred.kwargs or {}))
    assert result["TrainingJobStatus"] == "Completed"
