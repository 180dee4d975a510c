"""Run one child process the way the training toolkit does, but with an argv list and never a shell.

* stdout and stderr are merged (the toolkit re-prints user stderr on stdout too) and every line is handed
  to ``on_line(line, timestamp_ms)`` in the *caller's* thread as soon as it is read (a reader thread feeds
  a queue), so log latency is one line, never a buffer.
* The child runs in its own session/process group. ``should_stop()`` (polled at most every 0.2 s) returning
  a reason sends SIGTERM to the whole group, then SIGKILL after ``grace_period`` seconds.
* When the main process has exited but descendants still hold the output pipe open, they get 2 s and
  are then killed (SageMaker tears the whole container down at that point). Whatever is left of the group
  is SIGKILLed before the main process is reaped (a reaped leader's pid, the group's id, could be reused),
  so nothing of it outlives ``run_streamed``. ``on_start(pid)`` is told the group (= the child's pid).
* ``ErrorMessage`` is collected as ``process.watch`` does: from the first line naming a Python error
  class (``_PYTHON_ERRORS_``, ``_MPI_ERRORS_``, ``ExecuteUserScriptError``), every later line, stripped of
  ``" :\\n"``, de-duplicated. The toolkit watches stdout and stderr separately; here they are one stream.
  Collection is capped at 64 KiB (SageMaker shows 1024 characters of it anyway).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

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
_EOF = object()


@dataclass
class ProcessResult:
    """``returncode`` is shell-style (``128 + N`` for a child killed by signal N); ``stopped`` is the reason
    ``should_stop`` gave, if it fired; ``error_message`` the toolkit-style ``ErrorMessage`` text."""

    returncode: int
    stopped: str | None = None
    error_message: str = ""
    tail: list[str] = field(default_factory=list)


class ErrorCollector:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.size = 0
        self.started = False

    def feed(self, line: str) -> None:
        if not self.started:
            if not any(marker in line for marker in ERROR_MARKERS):
                return
            self.started = True
        if self.size >= _COLLECT_LIMIT:
            return
        self.lines.append(line.strip(" :\n") + "\n")
        self.size += len(line)

    def message(self) -> str:
        text = " ".join(self.lines)
        return "\n".join(dict.fromkeys(text.split("\n"))).strip()


def _pump(stream: IO[bytes], out: queue.Queue[object]) -> None:
    try:
        for raw in iter(lambda: stream.readline(MAX_LINE), b""):
            out.put((raw, int(time.time() * 1000)))
    except (OSError, ValueError):
        pass
    finally:
        out.put(_EOF)


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


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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
    try:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    except OSError as err:
        message = f"{type(err).__name__}: {err}"
        on_line(message, int(time.time() * 1000))
        return ProcessResult(returncode=127, error_message=message, tail=[message])

    lines: queue.Queue[object] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
    reader.start()
    stopped: str | None = None
    try:
        if on_start is not None:
            on_start(proc.pid)
        stopped = _pump_until_exit(proc, lines, collector, tail, on_line, should_stop, on_stop, grace_period,
                                   poll_interval)
    finally:  # done, or a callback failed: never leave any of the job's processes behind
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
    reader.join(timeout=1)
    if proc.stdout is not None:
        proc.stdout.close()
    code = proc.returncode
    return ProcessResult(
        returncode=128 - code if code < 0 else code,
        stopped=stopped,
        error_message=collector.message(),
        tail=list(tail),
    )


def _pump_until_exit(
    proc: subprocess.Popen, lines: queue.Queue[object], collector: ErrorCollector, tail: deque,
    on_line: Callable[[str, int], None], should_stop: Callable[[], str | None],
    on_stop: Callable[[str], None] | None, grace_period: float, poll_interval: float,
) -> str | None:
    """Feed lines to ``on_line`` until the process has exited and its output is drained; the stop reason."""
    stopped: str | None = None
    kill_at: float | None = None
    exited_at: float | None = None
    next_poll = 0.0
    eof = False
    while True:
        try:
            item = lines.get(timeout=poll_interval)
        except queue.Empty:
            item = None
        if item is _EOF:
            eof = True
        elif item is not None:
            raw, ts = item  # type: ignore[misc]
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            tail.append(line)
            collector.feed(line)
            on_line(line, ts)
        now = time.monotonic()
        done = _exited(proc)
        if eof and done:
            break
        if done and not eof:
            if exited_at is None:
                exited_at = now
            elif now - exited_at > 2.0:
                _signal_group(proc.pid, signal.SIGKILL)
        if stopped is None and now >= next_poll:
            next_poll = now + poll_interval
            reason = should_stop()
            if reason:
                stopped = reason
                _signal_group(proc.pid, signal.SIGTERM)
                kill_at = now + grace_period
                if on_stop is not None:
                    on_stop(reason)
        if kill_at is not None and now >= kill_at:
            _signal_group(proc.pid, signal.SIGKILL)
            kill_at = None
    return stopped
