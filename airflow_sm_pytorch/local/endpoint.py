"""One detached process per endpoint generation: ``python -m airflow_sm_pytorch.local.endpoint --root R
--endpoint NAME --generation G``.

It reads the endpoint's config (``pending_config`` during an update) and its model from the store, then:

1. fetches the model data (``ModelDataUrl`` tarball, or an uncompressed ``ModelDataSource`` prefix) and
   extracts it with the same member checks as training code (:func:`..archives.safe_extract`) into
   ``endpoints/<name>/<generation>/model``;
2. installs ``model/code/requirements.txt`` into the cached per-requirements venv (as SageMaker's
   container pip-installs it at start);
3. runs the model server (:mod:`.serving`) on a free loopback port with the model's ``Environment`` (never
   the runtime's AWS credentials) and streams its lines to ``/aws/sagemaker/Endpoints/<name>``;
4. when the server's status file says ``InService``, records the port: the endpoint is ``InService`` (an
   update switches to it and stops the previous generation); ``Failed`` with the server's one-line reason
   if it fails. SIGTERM (DeleteEndpoint, or a newer generation taking over) stops the server.

It is a child subreaper and kills every descendant when it ends, as the training supervisor does.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

HOST = "AllTraffic"


def _say(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} endpoint-supervisor[{os.getpid()}]: {message}", flush=True)


class Generation:
    def __init__(self, store: Any, root: Path, name: str, generation: int) -> None:
        from airflow_sm_pytorch.local.hosting import log_group
        from airflow_sm_pytorch.local.supervisor import LogWriter

        self.store, self.root, self.name, self.generation = store, root, name, generation
        self.stop = False
        self.work = root / "endpoints" / name / str(generation)
        self.model_dir = self.work / "model"
        self.status_file = self.work / "server.json"
        instance = f"{HOST}/i-{secrets.token_hex(8)}"
        self.writer = LogWriter(store, name, int(time.time()), group=log_group(name),
                                stream_name=lambda _host: instance)

    def log(self, message: str) -> None:
        now = time.time()
        for line in message.split("\n"):
            self.writer.log(HOST, f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(now))} sagemaker-local "
                                  f"INFO     {line}", int(now * 1000))

    # -------------------------------------------------------------- what to serve
    def resources(self) -> tuple[dict[str, Any], dict[str, Any]]:
        endpoint = self.store.get_resource("Endpoint", self.name)
        if endpoint is None:
            raise LookupError(f"endpoint {self.name} no longer exists")
        state = endpoint["state"]
        config_name = state.get("pending_config") if state.get("pending_generation") == self.generation \
            else state.get("config")
        config = self.store.get_resource("EndpointConfig", config_name or "")
        if config is None:
            raise LookupError(f"endpoint config {config_name} no longer exists")
        variant = config["request"]["ProductionVariants"][0]
        model = self.store.get_resource("Model", variant.get("ModelName") or "")
        if model is None:
            raise LookupError(f"model {variant.get('ModelName')} no longer exists")
        return endpoint, model["request"]

    def fetch(self, container: dict[str, Any]) -> None:
        from airflow_sm_pytorch.archives import safe_extract
        from airflow_sm_pytorch.storage import Storage

        storage = Storage()
        self.model_dir.mkdir(parents=True, exist_ok=True)
        url = container.get("ModelDataUrl")
        source = (container.get("ModelDataSource") or {}).get("S3DataSource") or {}
        if url:
            archive = self.work / "model.tar.gz"
            storage.download_file(url, archive)
            names = safe_extract(archive, self.model_dir)
            archive.unlink(missing_ok=True)
            self.log(f"Extracted {len(names)} member(s) of {url} into {self.model_dir}")
        elif source.get("S3Uri"):
            files = storage.download(source["S3Uri"], self.model_dir)
            self.log(f"Copied {len(files)} file(s) of {source['S3Uri']} into {self.model_dir}")

    def python(self) -> str:
        requirements = self.model_dir / "code" / "requirements.txt"
        if not requirements.is_file():
            return sys.executable
        from airflow_sm_pytorch.local.training import venvs
        from airflow_sm_pytorch.local.training.process import run_streamed

        self.log("Installing code/requirements.txt into a cached virtual environment")

        def run_pip(argv: Any) -> Any:
            return run_streamed(argv, cwd=self.work, env=self.env({}), on_line=self.line,
                                should_stop=lambda: "stop" if self.stop else None)

        venv, result = venvs.requirements_venv(requirements, self.root / "venvs", run_pip,
                                               should_abort=lambda: self.stop)
        if result is not None and getattr(result, "returncode", 0) != 0:
            raise RuntimeError(f"failed to install required packages from code/requirements.txt: "
                               f"{getattr(result, 'error_message', '') or 'see the endpoint log'}")
        return str(venvs.venv_python(venv))

    def env(self, environment: dict[str, str]) -> dict[str, str]:
        # the runtime's AWS keys stay out of the model server, as out of training jobs
        from airflow_sm_pytorch.local.training.runner import CREDENTIAL_VARS

        env = {k: v for k, v in os.environ.items()
               if k not in CREDENTIAL_VARS and not k.startswith("SM_PYTORCH_LOCAL")}
        env.update({str(k): str(v) for k, v in environment.items()})
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def line(self, line: str, ts: int) -> None:
        self.writer.log(HOST, line, ts)

    # -------------------------------------------------------------- run
    def run(self) -> int:
        from airflow_sm_pytorch.local.hosting import status_json, stop
        from airflow_sm_pytorch.local.training.process import run_streamed

        try:
            endpoint, model = self.resources()
            container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
            self.fetch(container)
            python = self.python()
        except Exception as exc:  # noqa: BLE001 - whatever it is, the endpoint must say why
            traceback.print_exc()
            self.fail(f"{type(exc).__name__}: {exc}")
            return 1
        environment = dict(container.get("Environment") or {})
        self.status_file.unlink(missing_ok=True)
        argv = [python, "-m", "airflow_sm_pytorch.local.serving", "--model-dir", str(self.model_dir),
                "--host", "127.0.0.1", "--port", "0", "--status-file", str(self.status_file)]
        self.log(f"Starting the model server: {' '.join(argv)}")
        ready = threading.Event()

        def watch() -> None:
            while not ready.is_set():
                status = status_json(self.status_file)
                if status.get("status") == "InService":
                    self.serving(status["port"], stop)
                    ready.set()
                    return
                if status.get("status") in ("Failed", "Stopped") or self.stop:
                    return
                time.sleep(0.1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        result = run_streamed(argv, cwd=self.model_dir, env=self.env(environment), on_line=self.line,
                              should_stop=lambda: "stop" if self.stop else None, grace_period=10.0)
        ready.set()
        if not self.stop:
            reason = status_json(self.status_file).get("reason") or (
                f"ModelError: the model server exited with code {result.returncode}: {result.error_message}"
                if result.returncode else "the model server exited")
            self.fail(reason[:1024])
        return 0

    def serving(self, port: int, stop: Any) -> None:
        endpoint = self.store.get_resource("Endpoint", self.name)
        if endpoint is None:
            return
        state = endpoint["state"]
        if state.get("pending_generation") == self.generation:  # an update is done: switch, stop the old one
            self.store.update_resource("Endpoint", self.name, status="InService", failure_reason=None,
                                       state={"config": state["pending_config"], "generation": self.generation,
                                              "pending_config": None, "pending_generation": None, "port": port})
            for proc in self.store.processes("Endpoint", self.name):
                if proc["info"].get("generation") != self.generation:
                    stop(proc)
        else:
            self.store.update_resource("Endpoint", self.name, status="InService", failure_reason=None,
                                       state={"port": port, "generation": self.generation})
        self.log(f"Endpoint {self.name} is InService on 127.0.0.1:{port} (generation {self.generation})")

    def fail(self, reason: str) -> None:
        self.log(f"Endpoint {self.name} failed: {reason}")
        endpoint = self.store.get_resource("Endpoint", self.name)
        if endpoint is None:
            return
        state = endpoint["state"]
        if state.get("pending_generation") == self.generation:  # a failed update rolls back
            self.store.update_resource("Endpoint", self.name, status="InService", failure_reason=reason,
                                       state={"pending_config": None, "pending_generation": None})
        elif state.get("generation") == self.generation:
            self.store.update_resource("Endpoint", self.name, status="Failed", failure_reason=reason,
                                       state={"port": None})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_sm_pytorch.local.endpoint")
    parser.add_argument("--root", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--generation", type=int, required=True)
    args = parser.parse_args(argv)

    holder: list[Generation] = []

    def on_term(*_: Any) -> None:
        if holder:
            holder[0].stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    from airflow_sm_pytorch.local.store import Store, process_start
    from airflow_sm_pytorch.local.training.process import enable_subreaper, kill_descendants

    enable_subreaper()
    root = Path(args.root)
    store = Store(root)
    store.set_process("Endpoint", args.endpoint, f"gen-{args.generation}", os.getpid(), process_start(os.getpid()),
                      generation=args.generation)
    generation = Generation(store, root, args.endpoint, args.generation)
    holder.append(generation)
    _say(f"serving endpoint {args.endpoint} (generation {args.generation})")
    try:
        return generation.run()
    finally:
        generation.writer.close()
        kill_descendants()
        store.drop_process("Endpoint", args.endpoint, f"gen-{args.generation}", os.getpid())
        _say(f"endpoint {args.endpoint} generation {args.generation} ended")


if __name__ == "__main__":
    sys.exit(main())
