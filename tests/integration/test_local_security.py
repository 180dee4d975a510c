"""The local runtime is safe to leave running: who may call it, what a request may name, where jobs write.

Each test replays a finding of issue 8 against a real server on loopback (the ``local_runtime`` fixture,
keys ``local``/``local`` given through the environment as a hook's autostart does).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import urllib.request
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from airflow_sm_pytorch.local.auth import AuthError, Keys, check_host, resolve_keys, verify_sigv4
from tests.conftest import LocalRuntime, send_signed, wait_for_job

pytestmark = pytest.mark.integration

QUICK = "print('hello')\n"
LIST = b'{"MaxResults": 1}'


def _client(runtime, key="local", secret="local", service="sagemaker"):
    return boto3.client(service, endpoint_url=runtime.url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))


def _code(call, **kwargs):
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    return info.value.response["Error"]["Code"], info.value.response["ResponseMetadata"]["HTTPStatusCode"]


# -- authentication ---------------------------------------------------------------------------------
def test_unsigned_requests_are_refused(local_runtime):
    request = urllib.request.Request(local_runtime.url + "/", data=LIST, method="POST", headers={
        "X-Amz-Target": "SageMaker.ListTrainingJobs", "Content-Type": "application/x-amz-json-1.1"})
    try:
        urllib.request.urlopen(request, timeout=5)
        raise AssertionError("an unsigned request was served")
    except urllib.error.HTTPError as err:
        assert err.code == 403
        assert json.loads(err.read())["__type"] == "MissingAuthenticationTokenException"


def test_unknown_keys_and_wrong_secrets_get_aws_error_codes(local_runtime):
    assert _code(_client(local_runtime, key="intruder").list_training_jobs) == ("UnrecognizedClientException", 400)
    assert _code(_client(local_runtime, secret="guess").list_training_jobs) == ("InvalidSignatureException", 400)
    assert _code(_client(local_runtime, secret="guess", service="logs").describe_log_streams,
                 logGroupName="/aws/sagemaker/TrainingJobs") == ("InvalidSignatureException", 400)
    assert _client(local_runtime).list_training_jobs()["TrainingJobSummaries"] == []


def test_a_body_changed_after_signing_is_refused(local_runtime):
    status, reply = send_signed(local_runtime.url, "SageMaker.ListTrainingJobs", LIST, tamper=b'{"MaxResults": 2}')
    assert (status, reply["__type"]) == (400, "InvalidSignatureException")


def test_signatures_expire_after_fifteen_minutes():
    keys = Keys("AK", "SK", "test")
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url="http://127.0.0.1:8787/", data=b"{}",
                         headers={"Host": "127.0.0.1:8787", "X-Amz-Target": "SageMaker.ListTrainingJobs"})
    SigV4Auth(Credentials("AK", "SK"), "sagemaker", "eu-west-1").add_auth(request)
    headers = dict(request.headers.items())
    assert verify_sigv4("POST", "/", "", headers, b"{}", keys) == "eu-west-1"
    later = datetime.now(timezone.utc) + timedelta(minutes=16)
    with pytest.raises(AuthError) as info:
        verify_sigv4("POST", "/", "", headers, b"{}", keys, now=later)
    assert info.value.code == "InvalidSignatureException" and "expired" in info.value.message


def test_a_foreign_host_cannot_run_code(local_runtime, training_request, tmp_path):
    """Finding 1: a DNS-rebinding page's request (its own Host) once ran a stdlib module as a program."""
    marker = tmp_path / "pwned"
    request = training_request("rebinding", QUICK, hyperparameters={"c": f"open({str(marker)!r}, 'w')"})
    body = json.dumps(request).encode()
    for host in ("evil.example:8787", "evil.example", "192.168.1.10:8787", "[2001:db8::1]:8787"):
        status, reply = send_signed(local_runtime.url, "SageMaker.CreateTrainingJob", body, host=host)
        assert (status, reply["__type"]) == (403, "AccessDeniedException"), host
    sm = local_runtime.client("sagemaker")
    assert sm.list_training_jobs()["TrainingJobSummaries"] == []
    assert not marker.exists()
    for host in ("localhost", f"localhost:{local_runtime.port}", "127.0.0.5", "[::1]:1"):
        check_host(host)  # loopback names and addresses are served


def test_allowed_host_is_served(tmp_path_factory):
    runtime = LocalRuntime(tmp_path_factory.mktemp("root"), tmp_path_factory.mktemp("logs"))
    runtime.extra_args = ["--allowed-host", "sm-local"]
    runtime.start()
    try:
        assert send_signed(runtime.url, "SageMaker.ListTrainingJobs", LIST, host="sm-local:8787")[0] == 200
        assert send_signed(runtime.url, "SageMaker.ListTrainingJobs", LIST, host="other:8787")[0] == 403
    finally:
        runtime.cleanup()


def test_oversized_bodies_get_413_and_the_server_keeps_serving(local_runtime):
    big = b'{"NameContains": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    status, reply = send_signed(local_runtime.url, "SageMaker.ListTrainingJobs", big)
    assert (status, reply["__type"]) == (413, "RequestEntityTooLargeException")
    assert send_signed(local_runtime.url, "SageMaker.ListTrainingJobs", LIST)[0] == 200


# -- keys -----------------------------------------------------------------------------------------
def test_without_flags_or_environment_a_key_pair_is_generated_once(tmp_path):
    keys = resolve_keys(tmp_path, environ={})
    path = tmp_path / "credentials"
    assert keys.source == str(path) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_keys(tmp_path, environ={}) == keys  # kept, not regenerated
    assert keys.access_key_id not in ("local", "") and len(keys.secret_access_key) >= 30
    env = {"SM_PYTORCH_LOCAL_ACCESS_KEY_ID": "a", "SM_PYTORCH_LOCAL_SECRET_ACCESS_KEY": "b"}
    pair = lambda k: (k.access_key_id, k.secret_access_key)  # noqa: E731
    assert pair(resolve_keys(tmp_path, environ=env)) == ("a", "b")
    assert pair(resolve_keys(tmp_path, "c", "d", environ=env)) == ("c", "d")
    with pytest.raises(ValueError, match="both"):
        resolve_keys(tmp_path, "c", None, environ={})


def test_a_server_started_without_keys_uses_its_key_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    runtime = LocalRuntime(root, tmp_path_factory.mktemp("logs"))
    runtime.KEYS = {}
    runtime.start()
    try:
        keys = resolve_keys(root, environ={})
        assert _client(runtime, keys.access_key_id, keys.secret_access_key).list_training_jobs()
        assert _code(_client(runtime).list_training_jobs)[0] == "UnrecognizedClientException"
    finally:
        runtime.cleanup()


def test_a_corrupt_state_db_is_one_clear_line(tmp_path):
    (tmp_path / "state.db").write_bytes(b"this is not a database" * 100)
    proc = subprocess.run([sys.executable, "-m", "airflow_sm_pytorch.cli", "local", "serve", "--port", "0",
                           "--root", str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **LocalRuntime.KEYS})
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(tmp_path / "state.db") in lines[0] and "move it aside" in lines[0]


def _a_non_loopback_address() -> str | None:
    """One of this machine's own non-loopback IPv4 addresses (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_the_default_bind_is_loopback_only(tmp_path):
    """No --host: the runtime listens on 127.0.0.1, so this machine's other addresses refuse the port."""
    proc = subprocess.Popen([sys.executable, "-m", "airflow_sm_pytorch.cli", "local", "serve", "--port", "0",
                             "--root", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **LocalRuntime.KEYS})
    try:
        line = proc.stdout.readline()
        assert line.startswith("airflow-sm-pytorch local runtime listening on http://127.0.0.1:"), line
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        address = _a_non_loopback_address()
        if address is not None:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((address, port), timeout=5).close()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "every machine that reaches this address" not in err


def test_listening_beyond_loopback_warns(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "airflow_sm_pytorch.cli", "local", "serve", "--host",
                             "0.0.0.0", "--port", "0", "--root", str(tmp_path)],  # noqa: S104 - the test
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **LocalRuntime.KEYS})
    try:
        assert "listening on" in proc.stdout.readline()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "listening on 0.0.0.0: every machine that reaches this address" in err


# -- what a request may name ----------------------------------------------------------------------
@pytest.mark.parametrize("program", ["/etc/passwd", "../outside.py", "a/../../b.py", "~/x.py"])
def test_programs_outside_the_code_dir_are_refused(local_runtime, training_request, tmp_path, program):
    """Finding 2: an absolute or ../ program ran, and the runtime chmod +x'ed it."""
    outside = tmp_path / "outside.py"
    outside.write_text("print('ran')\n")
    outside.chmod(0o644)
    request = training_request("escape", QUICK)
    request["HyperParameters"]["sagemaker_program"] = json.dumps(program)
    sm = local_runtime.client("sagemaker")
    with pytest.raises(ClientError) as info:
        sm.create_training_job(**request)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert program in info.value.response["Error"]["Message"]
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644
    request["HyperParameters"]["sagemaker_program"] = json.dumps("train.py")
    request["Environment"] = {"SAGEMAKER_PROGRAM": program}
    with pytest.raises(ClientError):
        sm.create_training_job(**request)


@pytest.mark.parametrize("where", ["output", "checkpoint"])
def test_file_writes_are_confined_to_the_root_and_allowed_paths(local_runtime, training_request, tmp_path_factory,
                                                                 where):
    """Finding 4: output and checkpoint URIs wrote wherever the runtime's user can write."""
    elsewhere = tmp_path_factory.getbasetemp().parent / f"not-allowed-{os.getpid()}-{where}"
    request = training_request(f"confined-{where}", QUICK)
    if where == "output":
        request["OutputDataConfig"]["S3OutputPath"] = elsewhere.as_uri()
        field = "OutputDataConfig.S3OutputPath"
    else:
        request["CheckpointConfig"] = {"S3Uri": (elsewhere / "ckpt").as_uri()}
        field = "CheckpointConfig.S3Uri"
    sm = local_runtime.client("sagemaker")
    with pytest.raises(ClientError) as info:
        sm.create_training_job(**request)
    message = info.value.response["Error"]["Message"]
    assert field in message and "--allow-path" in message and "allow_paths" in message
    assert not elsewhere.exists()
    # under the root is always fine, and nothing else is needed
    request["OutputDataConfig"]["S3OutputPath"] = (local_runtime.root / "store" / "out").as_uri()
    request.pop("CheckpointConfig", None)
    sm.create_training_job(**request)
    desc = wait_for_job(sm, request["TrainingJobName"])
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")


def test_a_symlink_out_of_the_root_does_not_widen_it(local_runtime, training_request, tmp_path_factory):
    target = tmp_path_factory.getbasetemp().parent / f"via-link-{os.getpid()}"
    link = local_runtime.root / "store" / "link"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)
    request = training_request("via-link", QUICK)
    request["OutputDataConfig"]["S3OutputPath"] = (link / "out").as_uri()
    with pytest.raises(ClientError) as info:
        local_runtime.client("sagemaker").create_training_job(**request)
    assert "--allow-path" in info.value.response["Error"]["Message"]


def test_missing_file_inputs_are_refused_at_create_time(local_runtime, training_request, tmp_path):
    request = training_request("missing-input", QUICK)
    request["InputDataConfig"] = [{"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": (tmp_path / "nope").as_uri()}}}]
    with pytest.raises(ClientError) as info:
        local_runtime.client("sagemaker").create_training_job(**request)
    message = info.value.response["Error"]["Message"]
    assert "InputDataConfig[train]" in message and "does not exist" in message
