"""The local model server (``python -m airflow_sm_pytorch.local.serving``) as a real process over HTTP.

Each server runs on a free port with a status file; the model dirs are copies of
``tests/fixtures/serving/*`` (plus a TorchScript ``model.pt`` made here). Servers are module-scoped: a
worker imports torch, which takes seconds on a busy machine.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "serving"
LIMIT = 6 * 1024 * 1024
START_TIMEOUT = 150.0


class Tiny(torch.nn.Module):
    """Linear(3, 2) on float32 input; any other dtype is doubled and kept (to see NPY keep its dtype)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return self.linear(x)
        return x * 2


def save_tiny(path: Path) -> torch.jit.ScriptModule:
    torch.manual_seed(0)
    scripted = torch.jit.script(Tiny())
    scripted.save(str(path))
    return scripted


class ModelServer:
    def __init__(self, model_dir: Path, tmp: Path, workers: int = 1, env: dict[str, str] | None = None,
                 host: str | None = "127.0.0.1") -> None:
        self.model_dir, self.tmp = model_dir, tmp
        self.status_file = tmp / "status.json"
        self.stdout, self.stderr = tmp / "stdout.log", tmp / "stderr.log"
        cmd = [sys.executable, "-m", "airflow_sm_pytorch.local.serving", "--model-dir", str(model_dir),
               *(["--host", host] if host is not None else []), "--port", "0", "--workers", str(workers),
               "--status-file", str(self.status_file)]
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **(env or {})},
                                         start_new_session=True)
        self.port = 0

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def wait_for(self, *states: str, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status.get("status") in states:
                self.port = status.get("port") or self.port
                return status
            if self.proc.poll() is not None and status.get("status") not in states:
                time.sleep(0.2)
                status = self.status()
                if status.get("status") in states:
                    return status
                raise AssertionError(f"server exited {self.proc.returncode}: {status}\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"no {states} within {timeout} s: {self.status()}\n{self.log()}")

    def log(self) -> str:
        return self.stdout.read_text(errors="replace")[-6000:]

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                conn: http.client.HTTPConnection | None = None, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {}, **kwargs)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            if own:
                conn.close()

    def invoke(self, body: Any, content_type: str | None = "application/json", accept: str | None = None,
               **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        headers = dict(kwargs.pop("headers", {}))
        if content_type is not None:
            headers["Content-Type"] = content_type
        if accept is not None:
            headers["Accept"] = accept
        return self.request("POST", "/invocations", body, headers, **kwargs)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


def copy_fixture(name: str, dest: Path) -> Path:
    shutil.copytree(FIXTURES / name, dest)
    return dest


def error_of(status: int, headers: dict[str, str], body: bytes, expected: int) -> str:
    """The one-line message of a JSON error, after checking its shape and that nothing leaked."""
    assert status == expected, (status, body)
    assert headers["content-type"] == "application/json"
    assert b"Traceback" not in body and b"File \"" not in body and b"\n" not in body.strip()
    error = json.loads(body)
    assert set(error) == {"code", "type", "message"} and error["code"] == expected
    return error["message"]


# -- servers -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("default")
    model_dir = tmp / "model"
    model_dir.mkdir()
    scripted = save_tiny(model_dir / "model.pt")
    server = ModelServer(model_dir, tmp)
    server.wait_for("InService")
    server.model = scripted
    yield server
    assert server.stop() == 0
    assert server.status()["status"] == "Stopped"


@pytest.fixture(scope="module")
def custom_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("custom")
    calls = tmp / "calls"
    calls.mkdir()
    model_dir = copy_fixture("custom", tmp / "model")
    server = ModelServer(model_dir, tmp, workers=2,
                         env={"SERVING_TEST_CALLS": str(calls), "SERVING_TEST_LOAD_DELAY": "2",
                              "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3"})
    starting = server.wait_for("Starting", "InService")
    server.port = starting["port"]
    server.calls = calls
    server.starting = starting
    server.ping_while_loading = server.request("GET", "/ping") if starting["status"] == "Starting" else None
    server.in_service = server.wait_for("InService")
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def transform_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transform")
    model_dir = copy_fixture("transform", tmp / "model")
    server = ModelServer(model_dir, tmp, env={"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"})
    server.wait_for("InService")
    yield server
    assert server.stop() == 0


def npy(array: np.ndarray, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **kwargs)
    return buffer.getvalue()


def expected(server: ModelServer, rows: list[list[float]]) -> np.ndarray:
    with torch.no_grad():
        return server.model(torch.tensor(rows, dtype=torch.float32)).numpy()


# -- the default PyTorch handler -------------------------------------------------------------------------
def test_ping_status_file_and_one_worker(default_server):
    status, headers, body = default_server.request("GET", "/ping")
    assert (status, body) == (200, b'{\n  "status": "Healthy"\n}\n')
    assert headers["content-type"] == "application/json"
    state = default_server.status()
    assert state["status"] == "InService" and state["pid"] == default_server.proc.pid
    assert state["host"] == "127.0.0.1" and state["port"] == default_server.port and state["workers"] == 1
    assert len(state["worker_pids"]) == 1
    assert "model server InService on http://127.0.0.1:" in default_server.log()


def test_json_in_json_out(default_server):
    rows = [[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]]
    status, headers, body = default_server.invoke(json.dumps(rows), accept="application/json")
    assert status == 200 and headers["content-type"] == "application/json"
    np.testing.assert_allclose(json.loads(body), expected(default_server, rows), rtol=1e-6)
    # the model endpoint path and */* (→ SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT, default JSON) answer the same
    for path, accept in (("/models/model/invoke", "*/*"), ("/invocations?model_name=model", None)):
        headers_in = {"Content-Type": "application/json", **({"Accept": accept} if accept else {})}
        status, headers, body2 = default_server.request("POST", path, json.dumps(rows), headers_in)
        assert (status, headers["content-type"], body2) == (200, "application/json", body)


def test_csv_in_csv_out_with_the_raw_accept_as_content_type(default_server):
    status, headers, body = default_server.invoke("1,2,3\n0.5,-1,4\n", "text/csv", "text/csv, application/json")
    assert status == 200
    assert headers["content-type"] == "text/csv, application/json"  # SageMaker echoes the raw Accept
    got = np.loadtxt(io.StringIO(body.decode()), delimiter=",")
    np.testing.assert_allclose(got, expected(default_server, [[1, 2, 3], [0.5, -1, 4]]), rtol=1e-6)


def test_npy_in_npy_out_is_float64(default_server):
    rows = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    status, headers, body = default_server.invoke(npy(rows), "application/x-npy", "application/x-npy")
    assert status == 200 and headers["content-type"] == "application/x-npy"
    out = np.load(io.BytesIO(body), allow_pickle=False)
    assert out.dtype == np.float64 and out.shape == (1, 2)  # np.save of the list, as the toolkit
    np.testing.assert_allclose(out, expected(default_server, rows.tolist()), rtol=1e-6)


def test_npy_keeps_its_dtype_json_becomes_float32(default_server):
    status, _, body = default_server.invoke(npy(np.array([[1, 2, 3]], dtype=np.int64)), "application/x-npy")
    assert status == 200 and json.loads(body) == [[2, 4, 6]]  # int64 tensor: the model's other branch
    big_endian = np.array([[1.5, 2.5, 3.5]], dtype=">f8")
    status, _, body = default_server.invoke(npy(big_endian), "application/x-npy")
    assert status == 200 and json.loads(body) == [[3.0, 5.0, 7.0]]
    status, _, body = default_server.invoke("[[1, 2, 3]]")  # JSON ints → float32 → the Linear branch
    np.testing.assert_allclose(json.loads(body), expected(default_server, [[1, 2, 3]]), rtol=1e-6)


@pytest.mark.parametrize("body, content_type, words", [
    ("[[1, 2,", "application/json", "not valid JSON"),
    ("", "application/json", "not valid JSON"),
    ("[[1, 2, 3], [4]]", "application/json", "rectangular"),
    ('[["a", "b", "c"]]', "application/json", "cannot become a tensor"),
    (b"\xff\xfe[1]", "application/json", "UTF-8"),
    ("1,2,3\n4,5\n", "text/csv", "same number of columns"),
    ("", "text/csv", "empty"),
    (b"\x93NUMPY\x01\x00garbage", "application/x-npy", "header is malformed"),
    (b"PK\x03\x04 an npz or anything else", "application/x-npy", "not an NPY array"),
    (npy(np.zeros((4, 3), dtype=np.float32))[:-5], "application/x-npy", "bytes of data follow"),
])
def test_malformed_bodies_are_400(default_server, body, content_type, words):
    message = error_of(*default_server.invoke(body, content_type), 400)
    assert words in message


def test_pickled_npy_is_refused_without_unpickling(default_server, tmp_path):
    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    body = npy(np.array([Boom()], dtype=object), allow_pickle=True)
    message = error_of(*default_server.invoke(body, "application/x-npy"), 400)
    assert "pickle" in message and "allow_pickle=False" in message
    assert not (tmp_path / "pwned").exists()


def test_a_huge_declared_npy_shape_is_refused_cheaply(default_server):
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }"
    header += " " * (63 - len(header) % 64) + "\n"
    body = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 8
    assert "bytes of data follow" in error_of(*default_server.invoke(body, "application/x-npy"), 400)


@pytest.mark.parametrize("content_type, accept", [
    ("text/plain", None), (None, None), ("application/json; charset=utf-8", None),
    ("application/x-npz", None), ("application/json", "text/html"),
    ("application/json", "application/json; charset=utf-8"),
])
def test_unsupported_content_type_or_accept_is_415(default_server, content_type, accept):
    message = error_of(*default_server.invoke("[[1, 2, 3]]", content_type, accept), 415)
    assert ("Accept" if accept else "Content type") in message and "not supported" in message


def test_oversized_bodies_are_413_and_the_limit_itself_is_accepted(default_server):
    conn = http.client.HTTPConnection("127.0.0.1", default_server.port, timeout=60)
    try:
        error_of(*default_server.invoke(b"[" + b" " * LIMIT + b"]", conn=conn), 413)
        # chunked, so no Content-Length to refuse up front
        chunks = iter([b"[" + b" " * (1024 * 1024)] * 7)
        error_of(*default_server.invoke(chunks, conn=conn, encode_chunked=True), 413)
        exactly = b"[[1, 2, 3]]" + b" " * (LIMIT - 11)
        status, _, body = default_server.invoke(exactly, conn=conn)  # same connection: kept alive
        assert status == 200, body
    finally:
        conn.close()


def test_predict_fn_errors_are_500_one_line_and_the_server_keeps_serving(default_server):
    message = error_of(*default_server.invoke("[[1, 2]]"), 500)  # wrong width: the forward pass raises
    assert message.startswith("predict_fn raised RuntimeError: ")
    assert "mat1 and mat2 shapes cannot be multiplied" in message and "TorchScript" not in message
    assert "Traceback" in default_server.log()  # logged, not sent
    assert default_server.invoke("[[1, 2, 3]]")[0] == 200


def test_routes_beyond_ping_and_invocations_do_not_exist(default_server):
    assert error_of(*default_server.request("GET", "/models"), 404)
    assert error_of(*default_server.request("POST", "/models", "{}"), 404)
    assert error_of(*default_server.request("POST", "/models/other/invoke", "[[1, 2, 3]]",
                                            {"Content-Type": "application/json"}), 404)
    assert error_of(*default_server.request("GET", "/invocations"), 405)
    assert error_of(*default_server.request("POST", "/ping", "{}"), 405)


def test_good_and_malformed_requests_under_concurrent_load(default_server):
    rows = [[1.0, 2.0, 3.0]]
    want = expected(default_server, rows)
    cases = [
        ("good-json", json.dumps(rows).encode(), "application/json", 200),
        ("good-npy", npy(np.array(rows, dtype=np.float32)), "application/x-npy", 200),
        ("good-csv", b"1,2,3", "text/csv", 200),
        ("bad-json", b"[[1, 2", "application/json", 400),
        ("pickled", npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), "application/x-npy", 400),
        ("bad-type", b"[[1, 2, 3]]", "text/plain", 415),
        ("predict-error", b"[[1, 2]]", "application/json", 500),
        ("too-big", b"[" + b" " * (LIMIT + 10) + b"]", "application/json", 413),
    ]
    weights = [10, 4, 4, 3, 2, 2, 2, 1]
    rng = random.Random(7)
    plan = rng.choices(cases, weights, k=320)
    pids_before = default_server.status()["worker_pids"]

    def client(part: list[tuple[str, bytes, str, int]]) -> list[str]:
        conn = http.client.HTTPConnection("127.0.0.1", default_server.port, timeout=60)
        problems = []
        try:
            for name, body, content_type, want_status in part:
                status, _, answer = default_server.invoke(body, content_type, conn=conn)
                if status != want_status:
                    problems.append(f"{name}: {status} {answer[:200]!r}")
                elif status == 200 and name != "good-csv":
                    got = json.loads(answer)
                    if not np.allclose(got, want, rtol=1e-6):
                        problems.append(f"{name}: wrong answer {got}")
                elif status >= 400 and b"Traceback" in answer:
                    problems.append(f"{name}: traceback in the response")
        finally:
            conn.close()
        return problems

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(client, [plan[i::16] for i in range(16)]))
    assert [p for part in results for p in part] == []
    assert default_server.request("GET", "/ping")[0] == 200
    assert default_server.invoke(json.dumps(rows))[0] == 200
    assert default_server.status()["worker_pids"] == pids_before and default_server.proc.poll() is None


# -- custom handlers, two workers ---------------------------------------------------------------------------
def test_ping_is_500_until_every_worker_has_loaded(custom_server):
    if custom_server.ping_while_loading is None:
        pytest.skip("the server was InService before the first look (a very fast machine)")
    status, _, body = custom_server.ping_while_loading
    assert (status, body) == (500, b'{\n  "status": "Unhealthy"\n}\n')
    assert custom_server.starting["status"] == "Starting"
    assert custom_server.request("GET", "/ping")[0] == 200


def test_two_workers_are_two_processes_each_calling_model_fn_once(custom_server):
    pids = custom_server.in_service["worker_pids"]
    assert len(set(pids)) == 2 and custom_server.in_service["workers"] == 2
    files = sorted(custom_server.calls.iterdir())
    assert sorted(int(f.name.split(".")[1]) for f in files) == sorted(pids)
    model_dir = str(custom_server.model_dir.resolve())
    for f in files:
        assert f.read_text().splitlines() == [f"{model_dir} {model_dir}"]  # once; cwd = the model dir
    seen = set()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for status, _, body in pool.map(lambda _: custom_server.invoke("1 2", "text/plain"), range(64)):
            assert status == 200
            seen.add(json.loads(body)["pid"])
    assert seen <= set(pids)


def test_custom_input_predict_output_with_context(custom_server):
    status, headers, body = custom_server.invoke(
        "1 2.5", "text/plain", headers={"X-Amzn-SageMaker-Custom-Attributes": "trace=abc"})
    assert status == 200 and headers["content-type"] == "application/vnd.test+json"  # from the tuple
    answer = json.loads(body)
    assert answer["y"] == [3.0, 7.5] and answer["attributes"] == "trace=abc"
    assert answer["accept"] == "application/json"  # no Accept: SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT
    log = custom_server.log()
    assert "predict_fn got '1 2.5'" in log and "predict_fn writes a line on stderr" in log  # all on stdout
    assert custom_server.stderr.read_text() == ""


def test_custom_handler_errors_are_500_one_line_and_serving_continues(custom_server):
    message = error_of(*custom_server.invoke("boom", "text/plain"), 500)
    assert message == "predict_fn raised RuntimeError: boom with a second line"
    message = error_of(*custom_server.invoke("1", "application/json"), 500)
    assert message == "input_fn raised ValueError: custom input_fn wants text/plain, got application/json"
    message = error_of(*custom_server.invoke("exit", "text/plain"), 500)  # sys.exit in user code
    assert message == "predict_fn raised SystemExit: 3"
    assert custom_server.invoke("2", "text/plain")[0] == 200
    assert custom_server.status()["worker_pids"] == custom_server.in_service["worker_pids"]


def test_a_worker_that_dies_or_times_out_is_replaced(custom_server):
    pids = custom_server.in_service["worker_pids"]
    # a worker that exits: the client loses its connection, the parent starts a replacement
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        custom_server.invoke("die", "text/plain")
    state = _wait_for_new_pids(custom_server, pids)
    # an invocation longer than SAGEMAKER_MODEL_SERVER_TIMEOUT (3 s): 504, and that worker is replaced
    status, headers, body = custom_server.invoke("sleep", "text/plain")
    assert "SAGEMAKER_MODEL_SERVER_TIMEOUT" in error_of(status, headers, body, 504)
    state = _wait_for_new_pids(custom_server, state["worker_pids"])
    assert len(list(custom_server.calls.iterdir())) == 4  # each replacement ran model_fn
    assert custom_server.invoke("1", "text/plain")[0] == 200 and custom_server.request("GET", "/ping")[0] == 200


def _wait_for_new_pids(server: ModelServer, old: list[int]) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        state = server.status()
        if state.get("status") == "InService" and set(state["worker_pids"]) != set(old):
            assert len(set(state["worker_pids"]) & set(old)) == 1
            return state
        time.sleep(0.1)
    raise AssertionError(f"no replacement worker: {server.status()}\n{server.log()}")


# -- transform_fn, context in model_fn ---------------------------------------------------------------------
def test_transform_fn_with_context_in_model_fn(transform_server):
    model_dir = str(transform_server.model_dir.resolve())
    status, headers, body = transform_server.invoke('{"a": 1}', "application/json", "application/json")
    assert status == 200 and headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["model"] == {"model_dir": model_dir, "ctx_model_dir": model_dir, "gpu_id": None,
                               "cwd": model_dir}
    assert (answer["type"], answer["data"], answer["content_type"]) == ("str", '{"a": 1}', "application/json")
    # other types arrive as bytearray; no Accept or */* → SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT (text/csv)
    for accept in (None, "*/*"):
        status, headers, body = transform_server.invoke(b"\x00\x01", "application/octet-stream", accept)
        answer = json.loads(body)
        assert (answer["type"], answer["data"], answer["accept"]) == ("bytearray", "0001", "text/csv")
        assert headers["content-type"] == "text/csv"


def test_workers_exit_when_the_main_process_is_killed(tmp_path):
    server = ModelServer(copy_fixture("transform", tmp_path / "model"), tmp_path, workers=2)
    try:
        pids = server.wait_for("InService")["worker_pids"]
        server.proc.kill()  # SIGKILL: no chance to stop its workers
        server.proc.wait(10)
        deadline = time.monotonic() + 15
        while _processes_serving(server.model_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_serving(server.model_dir) == [], pids
        assert "main process went away" in server.log()
    finally:
        for pid in _processes_serving(server.model_dir):
            os.kill(pid, signal.SIGKILL)


# -- start-up failures ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture, reason", [
    ("model_fn_raises", "ModelError: model_fn raised ValueError: no weights in this archive (a second line)"),
    ("conflict", "ModelError: ValueError: Cannot use transform_fn implementation in conjunction with "
                 "input_fn, predict_fn, and/or output_fn implementation"),
])
def test_a_model_that_cannot_load_fails_the_server_with_its_reason(tmp_path, fixture, reason):
    server = ModelServer(copy_fixture(fixture, tmp_path / "model"), tmp_path, workers=2)
    try:
        assert server.proc.wait(START_TIMEOUT) == 1
    finally:
        server.stop()
    state = server.status()
    assert state["status"] == "Failed" and state["reason"] == reason
    assert "\n" not in state["reason"] and server.status_file.read_text().count("\n") == 1
    time.sleep(0.5)
    assert not _processes_serving(server.model_dir)  # the other worker was stopped too


def test_default_model_fn_without_a_model_file(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "a.pt").write_bytes(b"x")
    (model_dir / "b.pth").write_bytes(b"x")
    server = ModelServer(model_dir, tmp_path)
    assert server.proc.wait(START_TIMEOUT) == 1
    assert server.status()["reason"] == ("ModelError: model_fn raised ValueError: Exactly one .pth or .pt file "
                                         "is required for PyTorch models: ['a.pt', 'b.pth']")


@pytest.mark.parametrize("args, env, words", [
    (["--model-dir", "/nonexistent/model"], {}, "is not a directory"),
    (["--workers", "0"], {}, "at least 1"),
    ([], {"SAGEMAKER_MODEL_SERVER_WORKERS": "two"}, "SAGEMAKER_MODEL_SERVER_WORKERS='two' is not a int"),
])
def test_configuration_errors_exit_2_with_a_server_error(tmp_path, args, env, words):
    status_file = tmp_path / "status.json"
    cmd = [sys.executable, "-m", "airflow_sm_pytorch.local.serving", "--model-dir", str(tmp_path), "--port", "0",
           "--status-file", str(status_file), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    state = json.loads(status_file.read_text())
    assert state["status"] == "Failed" and state["reason"].startswith("ServerError: ") and words in state["reason"]


@pytest.mark.parametrize("host, public", [(None, False), ("0.0.0.0", True)])
def test_the_default_bind_is_loopback_and_a_public_one_warns(tmp_path, host, public):
    """The model server has no authentication of its own (as SageMaker's, inside its container): with no
    --host it listens on 127.0.0.1 only; any other address is the user's explicit choice and warned about."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    save_tiny(model_dir / "model.pt")
    server = ModelServer(model_dir, tmp_path, host=host)
    try:
        state = server.wait_for("InService")
        assert state["host"] == (host or "127.0.0.1")
        warned = "every machine that reaches it can call the model" in server.log() + server.stderr.read_text()
        assert warned is public
    finally:
        server.stop()


def test_a_port_in_use_is_a_server_error(default_server, tmp_path):
    status_file = tmp_path / "status.json"
    cmd = [sys.executable, "-m", "airflow_sm_pytorch.local.serving", "--model-dir", str(tmp_path), "--port",
           str(default_server.port), "--status-file", str(status_file)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    state = json.loads(status_file.read_text())
    assert state["reason"].startswith(f"ServerError: cannot listen on 127.0.0.1:{default_server.port}")
    assert state["port"] is None


def _processes_serving(model_dir: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if str(model_dir.resolve()).encode() in cmdline and state != "Z":
                found.append(int(entry.name))
    return found
