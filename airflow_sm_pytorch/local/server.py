"""``airflow-sm-pytorch local serve``: the SageMaker and CloudWatch Logs APIs on one local endpoint.

It speaks the services' own protocol (JSON 1.1: ``POST /`` with ``X-Amz-Target: SageMaker.<Op>`` or
``Logs_20140328.<Op>``), so a stock boto3 client with ``endpoint_url`` talks to it. Requests are not
authenticated; the SigV4 ``Authorization`` header only supplies the region (its credential scope).
``GET /ping`` answers readiness checks. State lives in ``ROOT/state.db``; jobs run in detached
supervisor processes, so they outlive this server.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import re
import signal
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

from airflow_sm_pytorch import __version__
from airflow_sm_pytorch.builders.validation import input_shape
from airflow_sm_pytorch.local.api import Api, ApiError
from airflow_sm_pytorch.local.store import Store

SERVICE = "airflow-sm-pytorch-local"
DEFAULT_REGION = "us-east-1"
_JSON = "application/x-amz-json-1.1"
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/")
log = logging.getLogger("airflow_sm_pytorch.local.server")

_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                            "formatter": "plain"}},
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        "uvicorn.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        "airflow_sm_pytorch": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


def region_of(authorization: str) -> str:
    """The region of a SigV4 ``Authorization`` header's credential scope (default us-east-1)."""
    match = _SCOPE.search(authorization or "")
    return match.group(1) if match else DEFAULT_REGION


def create_app(root: Path) -> Any:
    """The starlette application for ``root`` (the store is opened, and orphaned jobs failed, now)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    store = Store(root)
    api = Api(store, root)
    reaped = api.reap_all()
    if reaped:
        log.warning("marked %d job(s) Failed whose supervisor had exited", reaped)
    # load botocore's service models now, not on the first CreateTrainingJob
    input_shape("CreateTrainingJob"), input_shape("GetLogEvents", "logs")

    def reply(body: dict[str, Any], status: int = 200) -> Response:
        return JSONResponse(body, status_code=status, media_type=_JSON,
                            headers={"x-amzn-RequestId": str(uuid.uuid4())})

    def error(code: str, message: str, status: int = 400) -> Response:
        response = reply({"__type": code, "message": message}, status)
        response.headers["x-amzn-ErrorType"] = code
        return response

    async def aws(request: Request) -> Response:
        target = request.headers.get("x-amz-target", "")
        body = await request.body()
        try:
            params = json.loads(body) if body.strip() else {}
        except ValueError:
            params = None
        if not isinstance(params, dict):
            return error("SerializationException", "The request body is not a JSON object.")
        region = region_of(request.headers.get("authorization", ""))
        try:
            result = await run_in_threadpool(api.dispatch, target, params, region)
        except ApiError as exc:
            return error(exc.code, exc.message, exc.status)
        except Exception as exc:  # noqa: BLE001 - a bug here must still answer in the protocol
            log.exception("%s failed", target)
            return error("InternalFailure", f"{type(exc).__name__}: {exc}", 500)
        return reply(result)

    async def ping(request: Request) -> Response:
        return JSONResponse({"service": SERVICE, "version": __version__})

    return Starlette(routes=[Route("/ping", ping, methods=["GET"]), Route("/", ping, methods=["GET"]),
                             Route("/", aws, methods=["POST"])])


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)  # supervisors must not hold the port
    return sock


def _write_server_json(path: Path, url: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": url}) + "\n")
    os.replace(tmp, path)


def _remove_server_json(path: Path) -> None:
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def serve_main(args: Any) -> int:
    """Run the server until SIGTERM/SIGINT; print one ready line to stdout; 0 on a clean stop."""
    import uvicorn

    from airflow_sm_pytorch.local.config import default_root

    logging.config.dictConfig(_LOGGING)
    root = Path(args.root).expanduser() if getattr(args, "root", None) else default_root()
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    host = getattr(args, "host", None) or "127.0.0.1"
    try:
        sock = _bind(host, int(getattr(args, "port", 0) or 0))
    except OSError as exc:
        print(f"airflow-sm-pytorch local serve: cannot listen on {host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    app = create_app(root)
    server_json = root / "server.json"

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                _write_server_json(server_json, url)
                print(f"airflow-sm-pytorch local runtime listening on {url} (root: {root})", flush=True)

    config = uvicorn.Config(app, log_config=_LOGGING, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=5, timeout_keep_alive=65, server_header=False)
    # uvicorn re-raises the signal that stopped it once it is done: make that a no-op, so we exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        Server(config).run(sockets=[sock])
    finally:
        _remove_server_json(server_json)
        sock.close()
    return 0

