"""One model-server worker process: the user's model in one inference thread, HTTP on a shared socket.

Started by :mod:`.server` as ``python -m airflow_sm_pytorch.local.serving.worker --listen-fd L
--control-fd C --index I --model-dir DIR`` with the listening socket and one end of a socketpair
inherited. The worker

1. makes the model dir its cwd, puts ``DIR/code`` (then ``DIR``) first on ``sys.path`` and in
   ``PYTHONPATH`` (for the user's subprocesses), as TorchServe's worker does;
2. serves HTTP at once (uvicorn, raw ASGI) so ``/ping`` answers 500 while models load;
3. runs ``model_fn`` on its single inference thread, then tells the parent ``loaded`` (or ``failed
   <reason>`` and exits 1);
4. answers ``/ping`` 200 only after the parent has said ``ready`` (every worker has loaded);
5. runs every invocation on that same inference thread (the thread ``model_fn`` ran on, as in TorchServe's
   single-threaded worker), so user code never runs concurrently within a worker, while the event loop
   keeps answering ``/ping``. An invocation that outlives ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` seconds gets
   504 and the worker exits, to be replaced by the parent (TorchServe restarts a worker that times out);
6. exits when the parent closes the control socket (the parent died), and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from airflow_sm_pytorch.local.serving import MAX_REQUEST_BYTES, configure_logging, json_body
from airflow_sm_pytorch.local.serving.handlers import HandlerService, ModelLoadError, Response, error_response

log = logging.getLogger("airflow_sm_pytorch.serving")

_PING_OK = b'{\n  "status": "Healthy"\n}\n'  # TorchServe's bytes (GSON, pretty)
_PING_BAD = b'{\n  "status": "Unhealthy"\n}\n'
_INVOKE_PATHS = ("/invocations", "/models/model/invoke")


class Worker:
    def __init__(self, index: int, model_dir: str, control: socket.socket, max_body: int,
                 timeout: float) -> None:
        self.index = index
        self.control = control
        self.max_body = max_body
        self.timeout = timeout
        self.service = HandlerService(model_dir, os.environ, server_version=_version())
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="inference")
        self.ready = False  # every worker of the server has loaded (told by the parent)
        self._send_lock = threading.Lock()

    # -- control channel ----------------------------------------------------------------------------
    def tell(self, message: str) -> None:
        with self._send_lock:
            try:
                self.control.sendall(message.encode("utf-8", "replace") + b"\n")
            except OSError:
                os._exit(1)

    def listen_to_parent(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self.control.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:  # the parent is gone: nobody may be left serving its port
                log.warning("the model server's main process went away; worker %d exits", self.index)
                _flush_and_exit(1)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line == b"ready":
                    self.ready = True
                    self.tell("ready-ack")
                elif line == b"unready":
                    self.ready = False

    def load(self) -> None:
        try:
            self.service.load()
        except ModelLoadError as exc:
            self.tell(f"failed {exc}")
            _flush_and_exit(1)
        except BaseException as exc:  # noqa: BLE001
            log.exception("loading the model failed")
            self.tell(f"failed {type(exc).__name__}: {exc}")
            _flush_and_exit(1)
        self.tell("loaded")

    # -- HTTP ------------------------------------------------------------------------------------------
    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/ping":
            if method not in ("GET", "HEAD"):
                return await _send(send, _not_allowed(method, path))
            status, body = (200, _PING_OK) if self.ready else (500, _PING_BAD)
            return await _send(send, Response(status, body, "application/json", {}))
        if path in _INVOKE_PATHS or (path.startswith("/models/") and path.endswith("/invoke")):
            if method != "POST":
                return await _send(send, _not_allowed(method, path))
            return await self.invoke(scope, receive, send)
        await _send(send, error_response(404, "ResourceNotFoundException",
                                         "Requested resource is not found: this server answers GET /ping and "
                                         "POST /invocations only."))

    async def invoke(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        model = _query_model(scope.get("query_string", b""), scope["path"])
        if model not in (None, "model"):
            return await _send(send, error_response(404, "ModelNotFoundException",
                                                    f"Model not found: {model!r} (this endpoint serves 'model')."))
        too_large = error_response(413, "RequestEntityTooLargeException",
                                   f"The request body is larger than {self.max_body} bytes, the limit of "
                                   f"SageMaker real-time endpoints.")
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            log.info("invocation answered 413: a body of %s bytes", declared)
            return await _send(send, too_large)  # uvicorn reads and drops the rest of the body
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                log.info("invocation answered 413: a chunked body over %d bytes", self.max_body)
                return await _send(send, too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not self.service.loaded:
            return await _send(send, error_response(503, "ServiceUnavailableException",
                                                    "The model is still loading; retry when /ping answers 200."))
        future = asyncio.get_running_loop().run_in_executor(self.executor, self.service.invoke, body, headers)
        try:
            response = await asyncio.wait_for(future, self.timeout) if self.timeout else await future
        except asyncio.TimeoutError:
            log.error("an invocation ran longer than SAGEMAKER_MODEL_SERVER_TIMEOUT=%gs: worker %d restarts",
                      self.timeout, self.index)
            await _send(send, error_response(504, "ModelTimeout",
                                             f"The model did not answer within {self.timeout:g} s "
                                             f"(SAGEMAKER_MODEL_SERVER_TIMEOUT); the worker is restarted."))
            asyncio.get_running_loop().call_later(0.2, _flush_and_exit, 3)
            return
        if len(response.body) > self.max_body:
            response = error_response(500, "ModelError",
                                      f"The response body ({len(response.body)} bytes) is larger than "
                                      f"{self.max_body} bytes, the limit of SageMaker real-time endpoints.")
            log.error("invocation answered 500: %s", _message(response))
        await _send(send, response)


async def _send(send: Any, response: Response) -> None:
    headers = [(b"content-type", _header_value(response.content_type)),
               (b"content-length", str(len(response.body)).encode())]
    for key, value in response.headers.items():
        headers.append((_header_value(key), _header_value(value)))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def _header_value(value: str) -> bytes:
    """Latin-1 bytes with no control characters (no response splitting through handler-chosen values)."""
    return "".join(c if " " <= c <= "~" or c == "\t" else " " for c in value).encode("latin-1", "replace")


def _not_allowed(method: str, path: str) -> Response:
    return error_response(405, "MethodNotAllowedException", f"{method} is not allowed on {path}.")


def _query_model(query: bytes, path: str) -> str | None:
    if path.startswith("/models/"):
        return path[len("/models/"):-len("/invoke")]
    if not query:
        return None
    from urllib.parse import parse_qs

    values = parse_qs(query.decode("latin-1")).get("model_name")
    return values[0] if values else None


def _message(response: Response) -> str:
    return str(json_body(response.body).get("message", "")) if response.content_type == "application/json" else ""


def _version() -> str:
    from airflow_sm_pytorch import __version__

    return __version__


def _flush_and_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _setup_paths(model_dir: str) -> None:
    """cwd = model dir; ``code/`` then the model dir first on sys.path and PYTHONPATH, as TorchServe."""
    code_dir = os.path.join(model_dir, "code")
    launch_dir = os.getcwd()
    os.chdir(model_dir)
    # ``python -m`` put the launcher's cwd first: it is not the user's code, drop it.
    sys.path[:] = [p for p in sys.path if p not in ("", launch_dir)]
    sys.path[0:0] = [code_dir, model_dir]
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (code_dir, model_dir, os.environ.get("PYTHONPATH", "")) if p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="airflow_sm_pytorch.local.serving.worker")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--max-body-bytes", type=int, default=MAX_REQUEST_BYTES)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    configure_logging(f"worker-{args.index}")
    import uvicorn

    listener = socket.socket(fileno=args.listen_fd)
    control = socket.socket(fileno=args.control_fd)
    model_dir = os.path.abspath(args.model_dir)
    _setup_paths(model_dir)
    worker = Worker(args.index, model_dir, control, args.max_body_bytes, args.timeout)
    log.info("worker %d (pid %d) loading the model from %s", args.index, os.getpid(), model_dir)
    threading.Thread(target=worker.listen_to_parent, name="control", daemon=True).start()
    worker.executor.submit(worker.load)
    config = uvicorn.Config(worker.app, interface="asgi3", lifespan="off", access_log=False, log_config=None,
                            log_level="warning", proxy_headers=False,
                            server_header=False, date_header=False, timeout_keep_alive=60,
                            timeout_graceful_shutdown=5)
    # uvicorn re-raises the signal that stopped it once it is done: make that a no-op, so we exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run(sockets=[listener])
    log.info("worker %d stopped", args.index)
    _flush_and_exit(0)  # a predict_fn still running must not keep the process alive
    return 0


if __name__ == "__main__":
    sys.exit(main())
