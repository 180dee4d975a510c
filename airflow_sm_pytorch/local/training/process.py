"""Run one child process the way the training toolkit does, but with an argv list and never a shell.

* stdout and stderr are merged (the toolkit re-prints user stderr on stdout too) and every line is handed
  to ``on_line(line, timestamp_ms)`` in the *caller's* thread as soon as it is read (the pipe is polled with
  a selector, never read blocking), so log latency is one line, never a buffer.
* ``should_stop()`` (polled at most every 0.2 s) returning a reason sends SIGTERM to every process of the
  job (below), then SIGKILL after ``grace_period`` seconds.
* When the main process has exited, whatever else of the job still runs is SIGKILLed at once (SageMaker
  tears the whole container down at that point), the output is drained for at most 2 s more and then no
  longer read: a process beyond our reach that holds the pipe cannot keep the job running. Everything is
  killed again and reaped before the main process is reaped (a reaped leader's pid, the group's id, could
  be reused), so nothing of the job outlives ``run_streamed``. ``on_start(pid)`` is told the main process
  (which leads its own session and process group).
* ``ErrorMessage`` is collected as ``process.watch`` does: from the first line naming a Python error
  class (``_PYTHON_ERRORS_``, ``_MPI_ERRORS_``, ``ExecuteUserScriptError``), every later line, stripped of
  ``" :\\n"``, de-duplicated. The toolkit watches stdout and stderr separately; here they are one stream.
  Collection is capped at 64 KiB (SageMaker shows 1024 characters of it anyway).

Which processes are the job's (no cgroups: they need privileges or a delegated systemd scope we cannot
count on):

* ``run_streamed`` makes the calling process a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``, Linux,
  once per process), so a descendant that is orphaned (double fork, ``setsid`` daemon) is re-parented to
  us instead of init and stays in our process tree. Leaving the session or the process group therefore
  does not hide a process: the job's processes are found by walking the tree with psutil.
* A job's processes are: its main process and every descendant of it; and every other descendant of the
  calling process created after the main process that carries this run's token (the environment
  variable ``AIRFLOW_SM_PYTORCH_RUN``, which the main process gets and its descendants inherit) or, when
  no other ``run_streamed`` is active in this process (the supervisor's case: one job), that carries no
  other run's token. A process of another concurrent run (its main process, its descendants, its token),
  and anything older than the job, is never touched: ``run_streamed`` may run in threads of a process
  that has other children (tests call it from pytest).

Not covered: a process that escapes to *another* subreaper outside the job (one it does not start
itself) or that is handed to another process tree (e.g. started by a service over IPC); without
``PR_SET_CHILD_SUBREAPER`` (not Linux, or a very old kernel) an orphan goes to init and is only found
while it is still below the main process; with concurrent runs in one process, an orphan that cleared
its environment is left alone. Orphans that exit while the job runs stay zombies of the caller until the
run ends (they are reaped then). A process stuck in uninterruptible sleep cannot be killed; we wait for
it a bounded time only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import psutil

PYTHON_ERRORS = (
    "BaseException", "Exception", "ArithmeticError", "AssertionError", "AttributeError", "BlockingIOError",
    "BrokenPipeError", "BufferError", "ChildProcessError", "ConnectionAbortedError", "ConnectionError",
    "ConnectionRefusedError", "ConnectionResetError", "EOFError", "EnvironmentError", "FileExistsError",
    "FileNotFoundError", "FloatingPointError", "IOError", "ImportError", "IndentationError", "IndexError",
    "InterruptedError", "IsADirectoryError", "KeyError", "LookupError", "MemoryError", "ModuleNotFoundError",
    "NameError", "NotADirectoryError", "NotImplementedError", "OSError", "OverflowError", "PermissionError",
    "ProcessLookupError", "RecursionError", "ReferenceError", "RuntimeError", "SyntaxError", "SystemError",
    "TabError", "TimeoutError", "TypeError", "UnboundLocalError", "UnicodeDecodeError", "UnicodeEncodeError",
    "UnicodeError", "UnicodeTranslateError", "ValueError", "ZeroDivisionError", "Invalid requirement",
    "ResourceExhaustedError", "OutOfRangeError", "InvalidArgumentError",
)
MPI_ERRORS = ("mpirun.real", "ORTE")
ERROR_MARKERS = PYTHON_ERRORS + MPI_ERRORS + ("ExecuteUserScriptError",)

MAX_LINE = 256 * 1024  # CloudWatch's event limit; longer lines are split
_COLLECT_LIMIT = 64 * 1024
_READ_SIZE = 64 * 1024
DRAIN_TIMEOUT = 2.0  # after the main process exited: how long the output may still be read
_REAP_TIMEOUT = 2.0  # how long a killed process is waited for (uninterruptible sleep outlasts SIGKILL)
RUN_VAR = "AIRFLOW_SM_PYTORCH_RUN"  # the token that marks a run's processes (see the module docstring)
_PR_SET_CHILD_SUBREAPER = 36


@dataclass
class ProcessResult:
    """``returncode`` is shell-style (``128 + N`` for a child killed by signal N); ``stopped`` is the reason
    ``should_stop`` gave, if it fired; ``error_message`` the toolkit-style ``ErrorMessage`` text."""

    returncode: int
    stopped: str | None = None
    error_message: str = ""
    tail: list[str] = field(default_factory=list)
    error_at: int | None = None  # when the first line of ``error_message`` was read (ms since the epoch)


class ErrorCollector:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.size = 0
        self.started = False
        self.at: int | None = None

    def feed(self, line: str, ts: int | None = None) -> None:
        if not self.started:
            if not any(marker in line for marker in ERROR_MARKERS):
                return
            self.started, self.at = True, ts
        if self.size >= _COLLECT_LIMIT:
            return
        self.lines.append(line.strip(" :\n") + "\n")
        self.size += len(line)

    def message(self) -> str:
        text = " ".join(self.lines)
        return "\n".join(dict.fromkeys(text.split("\n"))).strip()


def _exited(proc: subprocess.Popen) -> bool:
    """Has the child exited? Without reaping it (``WNOWAIT``): its pid, the group's id, stays taken."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped by someone else
        return proc.poll() is not None
    except AttributeError:  # no waitid on this platform
        return proc.poll() is not None


_subreaper: bool | None = None
_runs_lock = threading.Lock()
_runs: dict[str, int | None] = {}  # token -> main pid (None: starting) of every active run_streamed here


def enable_subreaper() -> bool:
    """Make this process a child subreaper (idempotent): orphaned descendants are re-parented to it, not to
    init, so that they stay findable. False where that is not possible (not Linux, no ``prctl``)."""
    global _subreaper
    with _runs_lock:
        if _subreaper is None:
            _subreaper = False
            if sys.platform.startswith("linux"):
                try:
                    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                    _subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
                except (OSError, AttributeError):
                    pass
        return _subreaper


def _token(proc: psutil.Process) -> str | None:
    try:
        return proc.environ().get(RUN_VAR)
    except psutil.Error:  # a zombie has no environment any more; another user's process hides it
        return None


def _subtree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def job_processes(main_pid: int, token: str, since: float) -> list[psutil.Process]:
    """The processes of the run ``token`` whose main process is ``main_pid`` (created at ``since``), the
    main process excluded; zombies included, so that they can be reaped. See the module docstring."""
    found = {p.pid: p for p in _subtree(main_pid)}
    with _runs_lock:
        others = {t: pid for t, pid in _runs.items() if t != token}
    theirs = {pid for pid in others.values() if pid is not None}
    for pid in list(theirs):
        theirs.update(p.pid for p in _subtree(pid))
    for proc in _subtree(os.getpid()):
        if proc.pid in found or proc.pid in theirs or proc.pid == main_pid:
            continue
        try:
            if proc.create_time() < since:
                continue
        except psutil.Error:
            continue
        if not others or _token(proc) == token:
            found[proc.pid] = proc
    return list(found.values())


def _signal_all(procs: Sequence[psutil.Process], sig: int) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except (psutil.Error, OSError):  # gone, a reused pid (psutil checks), or not ours to signal
            pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _Run:
    """The processes of one ``run_streamed``: its main process (a ``Popen``) and everything it spawned."""

    def __init__(self, proc: subprocess.Popen, token: str) -> None:
        self.proc, self.token = proc, token
        try:
            self.since = psutil.Process(proc.pid).create_time()
        except psutil.Error:  # already gone (and a zombie is still listed): nothing of it can be newer
            self.since = time.time()

    def signal(self, sig: int) -> None:
        """``sig`` to the main process's group and to every process of the job, wherever it went."""
        _signal_group(self.proc.pid, sig)
        _signal_all(job_processes(self.proc.pid, self.token, self.since), sig)

    def kill_rest(self, timeout: float = _REAP_TIMEOUT) -> None:
        """SIGKILL every process of the job but the main one, and reap them (see :func:`_kill_and_reap`)."""
        _kill_and_reap(lambda: job_processes(self.proc.pid, self.token, self.since), timeout,
                       group=self.proc.pid)


def kill_descendants(timeout: float = _REAP_TIMEOUT) -> None:
    """SIGKILL every descendant of this process and reap them: for a process whose children are all one
    job's (the supervisor), after the job, whatever escaped attribution."""
    _kill_and_reap(lambda: _subtree(os.getpid()), timeout)


def _kill_and_reap(find: Callable[[], list[psutil.Process]], timeout: float,
                   group: int | None = None) -> None:
    """SIGKILL what ``find()`` returns (and the process group ``group``) and reap those that are our
    children (orphans become ours as their parents die), until nothing is left (new processes may be
    forked meanwhile) or ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        alive, reaped = [], False
        for proc in find():
            try:
                zombie = proc.status() == psutil.STATUS_ZOMBIE
                ours = proc.ppid() == os.getpid()
            except psutil.Error:
                continue
            if not zombie:
                alive.append(proc)
            elif ours:
                reaped = _reap(proc.pid) or reaped
        if (not alive and not reaped) or time.monotonic() >= deadline:
            return
        if group is not None:
            _signal_group(group, signal.SIGKILL)
        _signal_all(alive, signal.SIGKILL)
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _reap(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:  # reaped meanwhile
        return False


def run_streamed(
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str],
    on_line: Callable[[str, int], None],
    should_stop: Callable[[], str | None] = lambda: None,
    on_stop: Callable[[str], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    grace_period: float = 10.0,
    poll_interval: float = 0.2,
) -> ProcessResult:
    collector = ErrorCollector()
    tail: deque[str] = deque(maxlen=200)
    enable_subreaper()
    token = uuid.uuid4().hex
    with _runs_lock:  # before the start: a concurrent run must not take our main process for its orphan
        _runs[token] = None
    try:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env={**env, RUN_VAR: token}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    except OSError as err:
        with _runs_lock:
            _runs.pop(token, None)
        message = f"{type(err).__name__}: {err}"
        on_line(message, int(time.time() * 1000))
        return ProcessResult(returncode=127, error_message=message, tail=[message])

    with _runs_lock:
        _runs[token] = proc.pid
    run = _Run(proc, token)
    stopped: str | None = None
    try:
        if on_start is not None:
            on_start(proc.pid)
        stopped = _pump_until_exit(run, collector, tail, on_line, should_stop, on_stop, grace_period,
                                   poll_interval)
    finally:  # done, or a callback failed: never leave any of the job's processes behind
        try:
            run.signal(signal.SIGKILL)
            run.kill_rest()
        finally:
            proc.wait()
            with _runs_lock:
                _runs.pop(token, None)
            if proc.stdout is not None:
                proc.stdout.close()
    code = proc.returncode
    return ProcessResult(
        returncode=128 - code if code < 0 else code,
        stopped=stopped,
        error_message=collector.message(),
        tail=list(tail),
        error_at=collector.at,
    )


class _Lines:
    """Splits what is read from the pipe into lines of at most ``MAX_LINE`` bytes (a longer one is split)."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        out = []
        while True:
            end = self.buffer.find(b"\n", 0, MAX_LINE)
            if end < 0 and len(self.buffer) < MAX_LINE:
                return out
            cut = end + 1 if end >= 0 else MAX_LINE
            out.append(self.buffer[:cut])
            self.buffer = self.buffer[cut:]

    def rest(self) -> list[bytes]:
        rest, self.buffer = self.buffer, b""
        return [rest] if rest else []


def _pump_until_exit(
    run: _Run, collector: ErrorCollector, tail: deque, on_line: Callable[[str, int], None],
    should_stop: Callable[[], str | None], on_stop: Callable[[str], None] | None, grace_period: float,
    poll_interval: float,
) -> str | None:
    """Feed lines to ``on_line`` until the main process has exited and the output is drained (EOF, or
    ``DRAIN_TIMEOUT`` after the exit); return the stop reason."""
    proc = run.proc
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    lines = _Lines()
    stopped: str | None = None
    kill_at: float | None = None
    drain_until: float | None = None
    next_poll = 0.0
    eof = False

    def emit(chunks: list[bytes], ts: int) -> None:
        for raw in chunks:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            tail.append(line)
            collector.feed(line, ts)
            on_line(line, ts)

    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            if eof:
                time.sleep(min(poll_interval, 0.05))
            elif selector.select(timeout=poll_interval):
                data = os.read(fd, _READ_SIZE)
                ts = int(time.time() * 1000)
                if data:
                    emit(lines.feed(data), ts)
                else:
                    eof = True
                    selector.unregister(fd)
                    emit(lines.rest(), ts)
            now = time.monotonic()
            if _exited(proc):
                if eof:
                    break
                if drain_until is None:  # the job is over: what it left behind goes now
                    drain_until = now + DRAIN_TIMEOUT
                    run.kill_rest(timeout=min(_REAP_TIMEOUT, DRAIN_TIMEOUT / 2))
                elif now >= drain_until:  # something beyond our reach holds the pipe: stop reading it
                    emit(lines.rest(), int(time.time() * 1000))
                    break
                continue
            if stopped is None and now >= next_poll:
                next_poll = now + poll_interval
                reason = should_stop()
                if reason:
                    stopped = reason
                    run.signal(signal.SIGTERM)
                    kill_at = now + grace_period
                    if on_stop is not None:
                        on_stop(reason)
            if kill_at is not None and now >= kill_at:
                run.signal(signal.SIGKILL)  # again every poll until the main process is gone
    return stopped
