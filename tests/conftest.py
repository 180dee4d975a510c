"""Shared fixtures: the local runtime as a real server process, and tiny training jobs for it.

``local_runtime`` starts ``airflow-sm-pytorch local serve --port 0 --root <tmp>`` and yields a
:class:`LocalRuntime` (``.url``, ``.root``, ``.client(service)``, ``.kill()``, ``.restart()``).
``training_request`` makes CreateTrainingJob requests for a script written into a tmp dir and packaged
as ``sourcedir.tar.gz`` behind ``file://`` URIs.
"""

from __future__ import annotations

import io
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

_READY = re.compile(r"^airflow-sm-pytorch local runtime listening on (http://\S+) \(root: (.+)\)$")


# ------------------------------------------------------------ lanes and parallel runs (scripts/test.sh)
def _fast_lane(config: pytest.Config) -> bool:
    return (config.getoption("markexpr", "") or "").strip() == "fast"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``-m fast`` does not even import a test module without a fast test: importing Airflow, boto3 or
    torch for them would cost more than the whole lane."""
    name = collection_path.name
    if not _fast_lane(config) or not (name.startswith("test_") and name.endswith(".py")):
        return None
    return True if "mark.fast" not in collection_path.read_text(errors="replace") else None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: ``$TEST_WORKERS``, else one worker per core plus one (the tests mostly wait on the
    servers and jobs they start); none for the fast lane, where starting workers costs more than it saves."""
    if _fast_lane(config):
        return 0
    if os.environ.get("TEST_WORKERS", "").strip():
        return int(os.environ["TEST_WORKERS"])
    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) + 1


class LocalRuntime:
    """One local runtime server process over one root; survives ``kill()`` + ``restart()``."""

    #: The keys the fixture's runtime is started with (through the environment, as a hook's autostart does).
    KEYS = {"SM_PYTORCH_LOCAL_ACCESS_KEY_ID": "local", "SM_PYTORCH_LOCAL_SECRET_ACCESS_KEY": "local"}

    def __init__(self, root: Path, logs: Path, allow: list[Path] | tuple[Path, ...] = ()) -> None:
        self.root = Path(root)
        self.logs = Path(logs)
        self.allow = list(allow)
        self.extra_args: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = 0
        self.ready_line = ""
        self._starts = 0

    def start(self, port: int = 0, timeout: float = 60.0) -> None:
        self._starts += 1
        err = open(self.logs / f"server-{self._starts}.log", "wb")
        cmd = [sys.executable, "-m", "airflow_sm_pytorch.cli", "local", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--root", str(self.root)]
        for path in self.allow:
            cmd += ["--allow-path", str(path)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SM_PYTORCH_LOCAL_")}
        self.proc = subprocess.Popen([*cmd, *self.extra_args], stdout=subprocess.PIPE, stderr=err, text=True,
                                     start_new_session=True, env={**env, **self.KEYS})
        err.close()
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline and not line.endswith("\n"):
            if sel.select(timeout=0.2):
                chunk = self.proc.stdout.readline()
                if not chunk:
                    break
                line += chunk
            elif self.proc.poll() is not None:
                break
        sel.close()
        match = _READY.match(line.strip())
        if match is None:
            self.kill()
            log = (self.logs / f"server-{self._starts}.log").read_text(errors="replace")
            raise RuntimeError(f"the local runtime did not start (stdout {line!r}):\n{log}")
        self.ready_line = line.strip()
        self.url = match.group(1)
        self.port = int(self.url.rsplit(":", 1)[1])

    def client(self, service: str, **config: Any) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="local", aws_secret_access_key="local",
                            config=Config(retries={"max_attempts": 2, "mode": "standard"}, **config))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server (not its jobs, which run in sessions of their own)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            if self.proc.stdout:
                self.proc.stdout.close()

    def terminate(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode

    def restart(self) -> None:
        """Stop the server if it still runs, and start it again over the same root (same port if free)."""
        if self.alive():
            self.terminate()
        try:
            self.start(port=self.port)
        except RuntimeError:
            self.start(port=0)

    def supervisors(self) -> list[int]:
        """PIDs of live supervisors of InProgress jobs (from the store)."""
        from airflow_sm_pytorch.local.store import Store, process_alive

        if not (self.root / "state.db").exists():
            return []
        store = Store(self.root)
        try:
            return [j["supervisor_pid"] for j in store.in_progress()
                    if process_alive(j["supervisor_pid"], j["supervisor_start"])]
        finally:
            store.close()

    def cleanup(self) -> None:
        """Stop the server, then stop what jobs still run (SIGTERM, grace, SIGKILL of their groups)."""
        self.terminate()
        pids = self.supervisors()
        for pid in pids:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _exists(p)]
            time.sleep(0.1)
        for pid in pids:
            _signal_group(pid, signal.SIGKILL)


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except OSError:
        pass


def send_signed(url: str, target: str, body: bytes, *, keys: tuple[str, str] = ("local", "local"),
                host: str | None = None, region: str = "us-east-1", headers: dict[str, str] | None = None,
                tamper: bytes | None = None) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to the runtime as botocore would (SigV4 with ``keys``); ``host`` replaces the Host header
    (signed), ``tamper`` replaces the body after signing. Returns (HTTP status, decoded JSON reply)."""
    from urllib.parse import urlsplit

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    host = host or urlsplit(url).netloc
    request = AWSRequest(method="POST", url=url + "/", data=body, headers={
        "X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1", "Host": host, **(headers or {})})
    SigV4Auth(Credentials(*keys), "sagemaker", region).add_auth(request)
    sent = dict(request.headers.items())
    raw = urllib.request.Request(url + "/", data=body if tamper is None else tamper, method="POST", headers=sent)
    try:
        with urllib.request.urlopen(raw, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture
def local_runtime(tmp_path_factory):
    """A fresh local runtime server (its own root) for one test."""
    root = tmp_path_factory.mktemp("local-root")
    # jobs in tests write their outputs next to their code, under pytest's temporary directory
    runtime = LocalRuntime(root, tmp_path_factory.mktemp("local-logs"), allow=[tmp_path_factory.getbasetemp()])
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.cleanup()


@pytest.fixture
def local_conn(local_runtime, monkeypatch):
    """An Airflow connection id (``sm_local``) pointing at ``local_runtime``, as the README's connection."""
    conn = {"conn_type": "aws", "login": "local", "password": "local",
            "extra": {"endpoint_url": local_runtime.url, "region_name": "us-east-1",
                      "sm_pytorch": {"local_runtime": {"root": str(local_runtime.root), "autostart": False}}}}
    monkeypatch.setenv("AIRFLOW_CONN_SM_LOCAL", json.dumps(conn))
    return "sm_local"


def package_source(src_dir: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (name -> text) into ``src_dir/sourcedir.tar.gz``; return the archive's path."""
    src_dir.mkdir(parents=True, exist_ok=True)
    archive = src_dir / "sourcedir.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return archive


@pytest.fixture
def training_request(tmp_path):
    """``make(name, script, **overrides)`` -> a CreateTrainingJob request running ``script`` locally."""
    counter = iter(range(1_000_000))

    def make(name: str, script: str, *, files: dict[str, str] | None = None,
             hyperparameters: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
        work = tmp_path / f"job-{next(counter)}-{name}"
        archive = package_source(work / "code", {"train.py": script, **(files or {})})
        hp = {"sagemaker_program": json.dumps("train.py"),
              "sagemaker_submit_directory": json.dumps(archive.as_uri())}
        hp.update({k: json.dumps(v) for k, v in (hyperparameters or {}).items()})
        request: dict[str, Any] = {
            "TrainingJobName": name,
            "AlgorithmSpecification": {"TrainingImage": "local-pytorch", "TrainingInputMode": "File"},
            "RoleArn": "arn:aws:iam::000000000000:role/SageMakerRole",
            "HyperParameters": hp,
            "OutputDataConfig": {"S3OutputPath": (work / "output").as_uri()},
            "ResourceConfig": {"InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        }
        request.update(overrides)
        return request

    return make


def wait_for_job(sm: Any, name: str, timeout: float = 90.0, poll: float = 0.1) -> dict[str, Any]:
    """Describe ``name`` until it is no longer InProgress; return the last description."""
    deadline = time.monotonic() + timeout
    while True:
        desc = sm.describe_training_job(TrainingJobName=name)
        if desc["TrainingJobStatus"] not in ("InProgress", "Stopping"):
            return desc
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} still {desc['TrainingJobStatus']}/{desc['SecondaryStatus']} "
                                 f"after {timeout}s")
        time.sleep(poll)


# ------------------------------------------------------------ moto in server mode (the AWS path)
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory):
    """``moto_server`` on a free loopback port, shared by the session."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    exe = Path(sys.executable).with_name("moto_server")
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(f"moto_server did not start; see {log}")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def moto_reset(moto_url):
    """Each test starts from an empty moto account."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")).close()
    return moto_url


@pytest.fixture
def moto_conn(moto_reset, monkeypatch):
    """An Airflow AWS connection to moto, made the way users make one: ``AIRFLOW_CONN_*`` with endpoint_url."""
    extra = {"endpoint_url": moto_reset, "region_name": "us-east-1"}
    conn = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_SM_MOTO", json.dumps(conn))
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    return "sm_moto"


def boto_client(service: str, url: str):
    import boto3

    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
