"""The model server's main process: bind, start N workers, report readiness, supervise, stop.

Command line (the runtime's endpoint supervisor starts it with the model already extracted into DIR, cwd
anywhere, and the CreateModel request's environment)::

    python -m airflow_sm_pytorch.local.serving --model-dir DIR [--host 127.0.0.1] [--port P]
        [--workers N] [--status-file F] [--max-body-bytes B] [--timeout S]

* ``--port``: default ``$SAGEMAKER_BIND_TO_PORT``, else 8080; ``0`` picks a free port (read it from the
  status file).
* ``--workers``: default ``$SAGEMAKER_MODEL_SERVER_WORKERS``, else 1. Each worker is a process with its own
  copy of the model; all accept connections on the one socket bound here.
* ``--timeout``: seconds one invocation may run; default ``$SAGEMAKER_MODEL_SERVER_TIMEOUT``, else 60.
* ``--max-body-bytes``: default 6,291,456 (SageMaker's 6 MB).

**Status file** (``--status-file``; replaced atomically, one JSON object and a newline, each write a whole
new file)::

    {"status": "Starting",  "pid": 123, "host": "127.0.0.1", "port": 40123, "workers": 2}
    {"status": "InService", "pid": 123, "host": "127.0.0.1", "port": 40123, "workers": 2, "worker_pids": [124, 125]}
    {"status": "Failed",    "pid": 123, "host": "127.0.0.1", "port": 40123, "workers": 2, "reason": "ModelError: model_fn raised ValueError: no weights"}
    {"status": "Stopped",   "pid": 123, "host": "127.0.0.1", "port": 40123, "workers": 2}

``Starting`` is written once the socket is bound (``/ping`` answers 500 from then on), and again while a
replacement worker loads; ``InService`` once every worker has run ``model_fn`` and ``/ping`` answers 200 on
every worker (again after a replacement, with the new ``worker_pids``); ``Failed`` before the process
exits non-zero; ``Stopped`` after a SIGTERM/SIGINT stop. ``reason`` is one line of at most 1,024
characters: ``ModelError: ...`` for the user's code (import, ``model_fn``, a worker that died while loading,
workers that keep dying), ``ServerError: ...`` for the server's own configuration (bad arguments, port in
use, no model dir); ``port`` is null when binding failed.

**Exit codes**: 0 after SIGTERM/SIGINT (workers get SIGTERM, 5 s to finish in-flight requests, then
SIGKILL); 1 when the model failed (status ``Failed``, reason ``ModelError``); 2 for a configuration error
(status ``Failed``, reason ``ServerError``).

**Stdout**: every log line of this process and of the workers (with the user code's own stdout and stderr)
— one line per event; stderr only carries an interpreter crash of this process. The ready line is
``<time> INFO [main] model server InService on http://HOST:PORT (N workers)``.

Workers exit by themselves when this process dies (even by SIGKILL): they watch their control socket, so
none is left holding the port.

A worker that exits after the server is InService (a crash, ``os._exit`` in user code, an invocation over
the timeout) is replaced; ``/ping`` answers 500 until the replacement has loaded. More than 5 replacements
within 60 s fail the server.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from airflow_sm_pytorch.local.serving import MAX_REQUEST_BYTES, configure_logging

log = logging.getLogger("airflow_sm_pytorch.serving")

RESTARTS_ALLOWED = 5
RESTART_WINDOW_S = 60.0
STOP_GRACE_S = 5.0
_REASON_LIMIT = 1024


class ConfigError(Exception):
    pass


class _Failed(Exception):
    def __init__(self, reason: str, code: int = 1) -> None:
        super().__init__(reason)
        self.reason, self.code = reason, code


class WorkerProcess:
    def __init__(self, index: int, proc: subprocess.Popen[bytes], control: socket.socket) -> None:
        self.index, self.proc, self.control = index, proc, control
        self.buffer = b""
        self.loaded = False
        self.acked = False


class ModelServer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.model_dir = args.model_dir
        self.host = args.host
        self.port: int | None = None
        self.workers_wanted = args.workers
        self.status_file = Path(args.status_file) if args.status_file else None
        self.max_body = args.max_body_bytes
        self.timeout = args.timeout
        self.listener: socket.socket | None = None
        self.workers: dict[int, WorkerProcess] = {}
        self.selector = selectors.DefaultSelector()
        self.in_service = False
        self.announced = False
        self.restarts: list[float] = []
        self.stop_requested = False

    # -- status ----------------------------------------------------------------------------------------
    def write_status(self, status: str, **extra: Any) -> None:
        if self.status_file is None:
            return
        record = {"status": status, "pid": os.getpid(), "host": self.host, "port": self.port,
                  "workers": self.workers_wanted, **extra}
        tmp = self.status_file.with_name(f".{self.status_file.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(record) + "\n")
            os.replace(tmp, self.status_file)
        except OSError as exc:
            log.error("cannot write the status file %s: %s", self.status_file, exc)

    # -- start -------------------------------------------------------------------------------------------
    def bind(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port_wanted))
            sock.listen(2048)
        except OSError as exc:
            sock.close()
            raise _Failed(f"ServerError: cannot listen on {self.host}:{self.port_wanted}: {exc.strerror or exc}",
                          2) from None
        self.listener = sock
        self.port = sock.getsockname()[1]

    def spawn(self, index: int) -> WorkerProcess:
        assert self.listener is not None
        parent_end, child_end = socket.socketpair()
        cmd = [sys.executable, "-m", "airflow_sm_pytorch.local.serving.worker",
               "--listen-fd", str(self.listener.fileno()), "--control-fd", str(child_end.fileno()),
               "--index", str(index), "--model-dir", self.model_dir,
               "--max-body-bytes", str(self.max_body), "--timeout", str(self.timeout)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            proc = subprocess.Popen(cmd, pass_fds=(self.listener.fileno(), child_end.fileno()), env=env,
                                    stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        finally:
            child_end.close()
        worker = WorkerProcess(index, proc, parent_end)
        self.workers[index] = worker
        self.selector.register(parent_end, selectors.EVENT_READ, worker)
        log.info("started worker %d (pid %d)", index, proc.pid)
        return worker

    # -- the loop --------------------------------------------------------------------------------------
    def serve(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.selector.register(wake_r, selectors.EVENT_READ, None)
        try:
            for index in range(self.workers_wanted):
                self.spawn(index)
            while not self.stop_requested:
                for key, _ in self.selector.select(timeout=1.0):
                    if key.data is None:
                        _drain(wake_r)
                    else:
                        self._on_control(key.data)
                self._check_exits()
        finally:
            signal.set_wakeup_fd(-1)
        log.info("stopping: SIGTERM to the workers")
        self.stop_workers()
        self.write_status("Stopped")
        log.info("model server stopped")
        return 0

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_requested = True

    def _on_control(self, worker: WorkerProcess) -> None:
        try:
            chunk = worker.control.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            self._forget(worker)
            self._on_exit(worker, _wait(worker.proc, 5.0))
            return
        worker.buffer += chunk
        *lines, worker.buffer = worker.buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if line == "loaded":
                worker.loaded = True
                log.info("worker %d loaded the model", worker.index)
                self._announce_if_all_loaded()
            elif line == "ready-ack":
                worker.acked = True
                self._in_service_if_all_acked()
            elif line.startswith("failed "):
                raise _Failed(_clip(f"ModelError: {line[len('failed '):]}"))

    def _announce_if_all_loaded(self) -> None:
        live = list(self.workers.values())
        if len(live) == self.workers_wanted and all(w.loaded for w in live):
            for w in live:
                w.acked = False
                _send(w, b"ready\n")

    def _in_service_if_all_acked(self) -> None:
        live = list(self.workers.values())
        if len(live) == self.workers_wanted and all(w.acked for w in live):
            pids = [w.proc.pid for w in sorted(live, key=lambda w: w.index)]
            if not self.in_service:
                self.in_service = True
                self.write_status("InService", worker_pids=pids)
                log.info("model server InService on http://%s:%d (%d workers)",
                         f"[{self.host}]" if ":" in self.host else self.host, self.port, len(live))
            else:
                self.write_status("InService", worker_pids=pids)
                log.info("all %d workers ready again", len(live))

    def _check_exits(self) -> None:
        for worker in list(self.workers.values()):
            code = worker.proc.poll()
            if code is not None:
                self._forget(worker)
                self._on_exit(worker, code)

    def _forget(self, worker: WorkerProcess) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
            self.selector.unregister(worker.control)
            worker.control.close()

    def _on_exit(self, worker: WorkerProcess, code: int | None) -> None:
        if self.stop_requested:
            return
        how = _exit_text(code)
        if not self.in_service:
            raise _Failed(_clip(f"ModelError: worker {worker.index} {how} while loading the model "
                                f"(see the endpoint's log)"))
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S] + [now]
        if len(self.restarts) > RESTARTS_ALLOWED:
            raise _Failed(_clip(f"ModelError: workers exited {len(self.restarts)} times within "
                                f"{RESTART_WINDOW_S:g} s; the last, worker {worker.index}, {how}"))
        log.warning("worker %d (pid %d) %s; starting a replacement", worker.index, worker.proc.pid, how)
        for other in self.workers.values():
            other.acked = False
            _send(other, b"unready\n")
        self.write_status("Starting")
        self.spawn(worker.index)

    # -- stop --------------------------------------------------------------------------------------------
    def stop_workers(self) -> None:
        workers = list(self.workers.values())
        for worker in workers:
            _signal(worker.proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for worker in workers:
            if _wait(worker.proc, max(0.0, deadline - time.monotonic())) is None:
                log.warning("worker %d did not stop within %g s: SIGKILL", worker.index, STOP_GRACE_S)
                _signal(worker.proc, signal.SIGKILL)
                _wait(worker.proc, 5.0)
        for worker in workers:
            self._forget(worker)
        if self.listener is not None:
            self.listener.close()


def _send(worker: WorkerProcess, data: bytes) -> None:
    try:
        worker.control.sendall(data)
    except OSError:
        pass  # it is exiting; its exit is handled on its own


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def _exit_text(code: int | None) -> str:
    if code is None:
        return "closed its control channel"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _clip(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= _REASON_LIMIT else reason[: _REASON_LIMIT - 3] + "..."


def _env_number(name: str, kind: type, default: Any) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a {kind.__name__}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_sm_pytorch.local.serving",
        description="Serve one SageMaker PyTorch model directory over HTTP (/ping, /invocations).")
    parser.add_argument("--model-dir", required=True, help="the extracted model.tar.gz (model files, code/)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None,
                        help="port (default $SAGEMAKER_BIND_TO_PORT or 8080; 0 = any free port)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default $SAGEMAKER_MODEL_SERVER_WORKERS or 1)")
    parser.add_argument("--status-file", default=None, help="JSON status file, replaced atomically")
    parser.add_argument("--max-body-bytes", type=int, default=MAX_REQUEST_BYTES,
                        help=f"largest request body (default {MAX_REQUEST_BYTES}, SageMaker's 6 MB)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per invocation (default $SAGEMAKER_MODEL_SERVER_TIMEOUT or 60)")
    return parser


def _settle(args: argparse.Namespace) -> None:
    """Fill defaults from the environment and check every value; raises ConfigError."""
    if args.port is None:
        args.port = _env_number("SAGEMAKER_BIND_TO_PORT", int, 8080)
    if args.workers is None:
        args.workers = _env_number("SAGEMAKER_MODEL_SERVER_WORKERS", int, 1)
    if args.timeout is None:
        args.timeout = _env_number("SAGEMAKER_MODEL_SERVER_TIMEOUT", float, 60.0)
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"port {args.port} is not in 0..65535")
    if args.workers < 1:
        raise ConfigError(f"the number of workers must be at least 1, got {args.workers}")
    if not args.timeout > 0:
        raise ConfigError(f"the invocation timeout must be positive, got {args.timeout:g}")
    if args.max_body_bytes < 1:
        raise ConfigError(f"--max-body-bytes must be positive, got {args.max_body_bytes}")
    model_dir = Path(args.model_dir)
    if not model_dir.is_dir():
        raise ConfigError(f"the model dir {args.model_dir} is not a directory")
    args.model_dir = str(model_dir.resolve())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging("main")
    server = ModelServer(args)
    try:
        try:
            _settle(args)
        except ConfigError as exc:
            raise _Failed(_clip(f"ServerError: {exc}"), 2) from None
        server.workers_wanted = args.workers
        server.port_wanted = args.port  # type: ignore[attr-defined]
        server.timeout = args.timeout
        server.model_dir = args.model_dir
        if args.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("listening on %s: every machine that reaches it can call the model (SageMaker's own "
                        "server also listens there without authentication)", args.host)
        server.bind()
        server.write_status("Starting")
        log.info("model server for %s on http://%s:%d: starting %d worker(s)", args.model_dir, args.host,
                 server.port, args.workers)
        return server.serve()
    except _Failed as failure:
        log.error("model server failed: %s", failure.reason)
        server.stop_requested = True
        server.stop_workers()
        server.write_status("Failed", reason=failure.reason)
        return failure.code
