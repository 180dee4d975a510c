"""Real protocol peers on loopback for the AWS path: moto in server mode (S3, STS, SageMaker)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


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


def env_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}
