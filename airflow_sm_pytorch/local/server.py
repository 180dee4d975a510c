"""``airflow-sm-pytorch local serve``: the SageMaker and CloudWatch Logs APIs on one local endpoint.

It speaks the services' own protocol (JSON 1.1: ``POST /`` with ``X-Amz-Target: SageMaker.<Op>`` or
``Logs_20140328.<Op>``), so a stock boto3 client with ``endpoint_url`` talks to it. Every request must
be SigV4-signed with the runtime's keys and name a loopback ``Host`` (:mod:`.auth`); the region is the
signature's credential scope. Bodies over ``MAX_BODY`` bytes get 413, malformed or too deeply nested JSON
``SerializationException``. ``GET /ping`` answers readiness checks (Host-checked, unauthenticated: it
tells nothing but the version). State lives in ``ROOT/state.db``; jobs run in detached supervisor
processes, so they outlive this server.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import signal
import socket
import sys
import uuid
from pathlib import Path
from collections.abc import Iterable
from typing import Any

from airflow_sm_pytorch import __version__
from airflow_sm_pytorch.builders.validation import input_shape
from airflow_sm_pytorch.local.api import ACCOUNT, Api, ApiError
from airflow_sm_pytorch.local.auth import AuthError, Keys, check_host, is_loopback_host, resolve_keys, verify_sigv4
from airflow_sm_pytorch.local.store import Store, StoreError

SERVICE = "airflow-sm-pytorch-local"
_JSON = "application/x-amz-json-1.1"
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
    """The region of a (verified) SigV4 ``Authorization`` header's credential scope."""
    scope = authorization.split("Credential=", 1)[-1].split(",", 1)[0].split("/")
    return scope[2] if len(scope) > 2 else "us-east-1"


#: Largest request body served. SageMaker's biggest requests (100 hyperparameters of 2,500 characters,
#: 100 environment entries, 50 tags, 20 channels) stay far below it.
MAX_BODY = 8 * 1024 * 1024
_DISCARD = 512 * 1024 * 1024


def create_app(root: Path, *, keys: Keys, allowed_hosts: Iterable[str] = (),
               allowed_paths: Iterable[Path] = (), spot_interruptions: Any = None) -> Any:
    """The starlette application for ``root`` (the store is opened, and orphaned jobs failed, now).
    ``spot_interruptions``: what every managed spot job rehearses unless its tag says otherwise."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    store = Store(root)
    api = Api(store, root, allowed_paths=allowed_paths)
    api.training.spot_interruptions = spot_interruptions
    reaped = api.reap_all()
    if reaped:
        log.warning("marked %d job(s) Failed whose supervisor had exited", reaped)
    restored = api.hosting.restore()
    if restored:
        log.info("restarting %d endpoint(s) that were serving when the runtime stopped", restored)
    # load botocore's service models now, not on the first CreateTrainingJob
    input_shape("CreateTrainingJob"), input_shape("GetLogEvents", "logs")
    hosts = tuple(allowed_hosts)

    def reply(body: dict[str, Any], status: int = 200) -> Response:
        return JSONResponse(body, status_code=status, media_type=_JSON,
                            headers={"x-amzn-RequestId": str(uuid.uuid4())})

    def error(code: str, message: str, status: int = 400) -> Response:
        response = reply({"__type": code, "message": message}, status)
        response.headers["x-amzn-ErrorType"] = code
        return response

    async def read_body(request: Request) -> bytes | None:
        """The body, or None once it exceeds MAX_BODY. The rest of an oversized body is read and dropped
        (up to _DISCARD bytes, in constant memory), so that the client is still listening for the 413."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                chunks.clear()
                if size > _DISCARD:
                    break
                continue
            chunks.append(chunk)
        return None if size > MAX_BODY else b"".join(chunks)

    async def aws(request: Request) -> Response:
        target = request.headers.get("x-amz-target", "")
        body, refused = await authenticated(request)
        if refused is not None:
            log.warning("refused %s from %s: %s", target or "a request",
                        request.client.host if request.client else "?", refused.headers.get("x-amzn-ErrorType"))
            return refused
        region = region_of(request.headers.get("authorization", ""))
        try:
            params = json.loads(body) if body.strip() else {}
        except (ValueError, RecursionError):
            params = None
        if not isinstance(params, dict):
            return error("SerializationException", "The request body is not a well-formed JSON object.")
        try:
            result = await run_in_threadpool(api.dispatch, target, params, region)
        except ApiError as exc:
            return error(exc.code, exc.message, exc.status)
        except RecursionError:
            return error("SerializationException", "The request is nested too deeply.")
        except Exception as exc:  # noqa: BLE001 - a bug here must still answer in the protocol
            log.exception("%s failed", target)
            return error("InternalFailure", f"{type(exc).__name__}: {exc}", 500)
        return reply(result)

    async def authenticated(request: Request) -> tuple[bytes | None, Response | None]:
        """The body of a request that passed the Host, size and signature checks, or the error to send."""
        try:
            check_host(request.headers.get("host"), hosts)
        except AuthError as exc:
            return None, error(exc.code, exc.message, exc.status)
        body = await read_body(request)
        if body is None:
            return None, error("RequestEntityTooLargeException",
                               f"The request body is larger than the local runtime's limit of {MAX_BODY} bytes.", 413)
        try:
            verify_sigv4(request.method, request.url.path, request.url.query, request.headers, body, keys)
        except AuthError as exc:
            return None, error(exc.code, exc.message, exc.status)
        return body, None

    async def invoke(request: Request) -> Response:
        """sagemaker-runtime InvokeEndpoint: forwarded to the endpoint's model server on loopback."""
        body, refused = await authenticated(request)
        if refused is not None:
            return refused
        name = request.path_params["name"]
        port = await run_in_threadpool(api.hosting.serving_port, name)
        if port is None:
            endpoint = await run_in_threadpool(store.get_resource, "Endpoint", name)
            if endpoint is None:
                return error("ValidationError", f"Endpoint {name} of account {ACCOUNT} not found.")
            return error("ValidationError", f"Endpoint {name} is {endpoint['status']}, not InService: it cannot be "
                                            "invoked now.")
        forward = {k: v for k, v in request.headers.items()
                   if k.lower() in ("content-type", "accept", "x-amzn-sagemaker-custom-attributes")}
        try:
            answer = await proxy.post(f"http://127.0.0.1:{port}/invocations", content=body, headers=forward)
        except Exception as exc:  # noqa: BLE001 - the model server went away mid-request
            return error("ModelError", f"Received no response from primary: {type(exc).__name__}", 424)
        if answer.status_code != 200:
            text = answer.text[:1000]
            response = reply({"message": f"Received client error ({answer.status_code}) from primary with "
                                         f"message \"{text}\". See the endpoint's log group "
                                         f"/aws/sagemaker/Endpoints/{name} for more information.",
                              "OriginalStatusCode": answer.status_code, "OriginalMessage": text,
                              "LogStreamArn": f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:"
                                              f"/aws/sagemaker/Endpoints/{name}"}, 424)
            response.headers["x-amzn-ErrorType"] = "ModelError"
            return response
        headers = {"x-Amzn-Invoked-Production-Variant": "AllTraffic", "x-amzn-RequestId": str(uuid.uuid4())}
        if "x-amzn-sagemaker-custom-attributes" in answer.headers:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = answer.headers["x-amzn-sagemaker-custom-attributes"]
        return Response(answer.content, status_code=200, headers=headers,
                        media_type=answer.headers.get("content-type", "application/json"))

    async def ping(request: Request) -> Response:
        try:
            check_host(request.headers.get("host"), hosts)
        except AuthError as exc:
            return error(exc.code, exc.message, exc.status)
        return JSONResponse({"service": SERVICE, "version": __version__})

    import httpx

    proxy = httpx.AsyncClient(timeout=httpx.Timeout(70.0, connect=5.0), trust_env=False,
                              limits=httpx.Limits(max_connections=64, max_keepalive_connections=32))
    return Starlette(routes=[Route("/ping", ping, methods=["GET"]), Route("/", ping, methods=["GET"]),
                             Route("/", aws, methods=["POST"]),
                             Route("/endpoints/{name}/invocations", invoke, methods=["POST"])])


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

    from airflow_sm_pytorch.local.config import (RootNotWritable, allowed_paths, default_root,
                                                 ensure_writable_root)

    logging.config.dictConfig(_LOGGING)
    root = Path(args.root).expanduser() if getattr(args, "root", None) else default_root()
    root = root.resolve()
    host = getattr(args, "host", None) or "127.0.0.1"

    def fail(message: str) -> int:
        print(f"airflow-sm-pytorch local serve: {message}", file=sys.stderr)
        return 1

    try:
        ensure_writable_root(root)  # one line, not sqlite's traceback, when the root cannot hold the store
        keys = resolve_keys(root, getattr(args, "access_key_id", None), getattr(args, "secret_access_key", None))
    except RootNotWritable as exc:
        return fail(str(exc))
    except (OSError, ValueError) as exc:
        return fail(str(exc))
    try:
        paths = allowed_paths(getattr(args, "allow_path", None) or ())
        interruptions = _spot_interruptions(args)
    except ValueError as exc:
        return fail(str(exc))
    if interruptions is not None:
        log.info("every managed spot training job is interrupted %s (AFTER seconds into Training x TIMES), "
                 "unless its tag says otherwise", interruptions)
    if not is_loopback_host(host):
        log.warning("listening on %s: every machine that reaches this address can send requests signed with "
                    "the runtime's keys; keep the port off untrusted networks", host)
    try:
        sock = _bind(host, int(getattr(args, "port", 0) or 0))
    except OSError as exc:
        return fail(f"cannot listen on {host}:{args.port}: {exc}")
    port = sock.getsockname()[1]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    try:
        app = create_app(root, keys=keys, allowed_hosts=getattr(args, "allowed_host", None) or (),
                         allowed_paths=paths, spot_interruptions=interruptions)
    except StoreError as exc:
        sock.close()
        return fail(str(exc))
    server_json = root / "server.json"

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                _write_server_json(server_json, url)
                print(f"airflow-sm-pytorch local runtime listening on {url} (root: {root})", flush=True)
                log.info("requests must be signed with access key %s (from %s)", keys.access_key_id, keys.source)

    config = uvicorn.Config(app, log_config=_LOGGING, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=5, timeout_keep_alive=65, server_header=False,
                            h11_max_incomplete_event_size=64 * 1024)
    # uvicorn re-raises the signal that stopped it once it is done: make that a no-op, so we exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        Server(config).run(sockets=[sock])
    finally:
        _remove_server_json(server_json)
        sock.close()
    return 0


def _spot_interruptions(args: Any) -> Any:
    """``--spot-interruptions``, else ``$SM_PYTORCH_LOCAL_SPOT_INTERRUPTIONS``: parsed, or None."""
    from airflow_sm_pytorch.local.config import SPOT_INTERRUPTIONS_ENV
    from airflow_sm_pytorch.local.training.spot import parse

    flag = getattr(args, "spot_interruptions", None)
    if flag is not None:
        return parse(flag, "--spot-interruptions")
    value = os.environ.get(SPOT_INTERRUPTIONS_ENV, "").strip()
    return parse(value, f"${SPOT_INTERRUPTIONS_ENV}") if value else None


def _running(root: Path) -> dict[str, Any] | None:
    """``server.json`` of the runtime serving ``root``, if that process is still alive."""
    from airflow_sm_pytorch.local.store import process_alive

    try:
        info = json.loads((root / "server.json").read_text())
    except (OSError, ValueError):
        return None
    return info if process_alive(info.get("pid"), None) else None


def _root(args: Any) -> Path:
    from airflow_sm_pytorch.local.config import default_root

    return (Path(args.root).expanduser() if getattr(args, "root", None) else default_root()).resolve()


def status_main(args: Any) -> int:
    """``local status``: 0 and one line per fact when a runtime serves the root, 3 when none does."""
    root = _root(args)
    info = _running(root)
    if info is None:
        print(f"no local runtime serves {root}")
        return 3
    print(f"local runtime pid {info['pid']} serves {root} at {info['url']}")
    if (root / "state.db").exists():
        try:
            store = Store(root)
            jobs = store.in_progress()
            endpoints = [e for e in store.list_resources("Endpoint") if e["status"] in ("Creating", "Updating",
                                                                                        "InService")]
            store.close()
            print(f"{len(jobs)} training job(s) in progress, {len(endpoints)} endpoint(s) serving or starting")
        except StoreError as exc:
            print(str(exc))
    return 0


def stop_main(args: Any, timeout: float = 30.0) -> int:
    """``local stop``: SIGTERM the runtime serving the root and wait until it is gone (0), or say none ran."""
    import time

    root = _root(args)
    info = _running(root)
    if info is None:
        print(f"no local runtime serves {root}")
        return 0
    os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _running(root) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if _running(root) is not None:
        print(f"the local runtime (pid {info['pid']}) did not stop within {timeout:.0f}s", file=sys.stderr)
        return 1
    print(f"stopped the local runtime (pid {info['pid']}) serving {root}; jobs and endpoints keep their own "
          "processes and are picked up by the next runtime on this root")
    return 0
