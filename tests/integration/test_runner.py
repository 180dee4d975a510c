"""run_training_job end to end: real processes, real pip, real torch, s3:// through moto as a server."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from airflow_sm_pytorch.local.training.runner import JobEvents, run_training_job
from airflow_sm_pytorch.storage import Storage

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "runner"
pytestmark = pytest.mark.integration


class Recorder:
    def __init__(self, stop_when: str | None = None) -> None:
        self.lines: list[tuple[str, str, int]] = []
        self.statuses: list[tuple[str, str]] = []
        self.stop_when = stop_when

    def events(self) -> JobEvents:
        return JobEvents(
            log=lambda h, m, t: self.lines.append((h, m, t)),
            status=lambda s, m: self.statuses.append((s, m)),
            stop_requested=self._stop,
        )

    def _stop(self) -> bool:
        return self.stop_when is not None and any(self.stop_when in m for _, m, _ in self.lines)

    @property
    def text(self) -> str:
        return "\n".join(m for _, m, _ in self.lines)

    @property
    def secondary(self) -> list[str]:
        return [s for s, _ in self.statuses]


def _targz(files: dict[str, bytes | Path]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, content in files.items():
            data = content.read_bytes() if isinstance(content, Path) else content
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _wheel(dest: Path, name: str = "tinypkg", value: int = 42) -> Path:
    """A minimal pure-python wheel, so that requirements install offline."""
    files = {
        f"{name}/__init__.py": f"VALUE = {value}\n".encode(),
        f"{name}-0.1.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n".encode(),
        f"{name}-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = (
        "".join(
            f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}\n"
            for n, d in files.items()
        )
        + f"{name}-0.1.dist-info/RECORD,,\n"
    )
    path = dest / f"{name}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in files.items():
            zf.writestr(n, d)
        zf.writestr(f"{name}-0.1.dist-info/RECORD", record)
    return path


def _request(
    name: str,
    code_uri: str,
    program: str,
    out_uri: str,
    hps: dict[str, str] | None = None,
    channels: dict[str, str] | None = None,
    **extra,
) -> dict:
    hp = dict(hps or {})
    hp.update(
        {
            "sagemaker_program": json.dumps(program),
            "sagemaker_submit_directory": json.dumps(code_uri),
            "sagemaker_container_log_level": "20",
            "sagemaker_job_name": json.dumps(name),
            "sagemaker_region": json.dumps("us-east-1"),
        }
    )
    req = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-cpu-py311",
            "TrainingInputMode": "File",
        },
        "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
        "OutputDataConfig": {"S3OutputPath": out_uri},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
        "HyperParameters": hp,
        "InputDataConfig": [
            {
                "ChannelName": ch,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
            for ch, uri in (channels or {}).items()
        ],
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(req.get(key), dict):
            req[key].update(value)
        else:
            req[key] = value
    return req


def _code(tmp_path: Path, files: dict[str, bytes | Path], name: str = "sourcedir.tar.gz") -> str:
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_targz(files))
    return path.as_uri()


def _run(
    tmp_path: Path,
    request: dict,
    rec: Recorder,
    cache: Path | None = None,
    storage: Storage | None = None,
    grace: float = 10.0,
):
    job_dir = tmp_path / "jobs" / request["TrainingJobName"]
    result = run_training_job(
        request,
        job_dir,
        rec.events(),
        storage=storage or Storage(),
        cache_dir=cache or tmp_path / "venvs",
        grace_period=grace,
    )
    return result, job_dir / "algo-1" / "opt" / "ml"


def _members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}


# ------------------------------------------------------------------ the contract, seen from inside
def test_probe_sees_the_whole_contract(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "runtime-secret")
    wheel = _wheel(tmp_path)
    code = _code(
        tmp_path, {"probe.py": FIXTURES / "probe.py", "requirements.txt": f"--no-index\n{wheel}\n".encode()}
    )
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.csv").write_text("1,2\n")
    (data / "sub" / "b.csv").write_text("3,4\n")
    hps = {"epochs": "2", "lr": "0.01", "name": '"a b"', "flag": "true"}
    req = _request(
        "probe-job",
        code,
        "probe.py",
        (tmp_path / "out").as_uri() + "/",
        hps,
        {"training": data.as_uri()},
        Environment={"MY_VAR": "x y"},
        CheckpointConfig={"S3Uri": (tmp_path / "ckpt").as_uri()},
        AlgorithmSpecification={"MetricDefinitions": [{"Name": "loss", "Regex": "loss=([0-9.]+)"}]},
    )
    rec = Recorder()
    started = time.time()
    result, ml = _run(tmp_path, req, rec)
    assert (result.status, result.secondary_status, result.failure_reason) == (
        "Completed",
        "Completed",
        None,
    ), rec.text
    assert rec.secondary == ["Downloading", "Training", "Uploading"]
    assert result.final_metrics[0]["MetricName"] == "loss" and result.final_metrics[0]["Value"] == 0.25
    assert started <= result.training_start_time <= result.training_end_time <= time.time()
    assert all(h == "algo-1" for h, _, _ in rec.lines) and "probe: first line" in rec.text

    report = json.loads((ml / "output/data/probe.json").read_text())
    env, base = report["env"], str(ml)
    assert report["argv"][1:] == ["--epochs", "2", "--flag", "True", "--lr", "0.01", "--name", "a b"]
    assert report["argv"][0] == "probe.py" and report["cwd"] == f"{base}/code"
    assert sorted(report["code_files"]) == ["probe.py", "requirements.txt"]
    assert report["channel_files"] == {"training": ["a.csv", "sub/b.csv"]}
    assert report["config_files"] == [
        "checkpointconfig.json",
        "hyperparameters.json",
        "inputdataconfig.json",
        "metric-definition-regex.json",
        "resourceconfig.json",
    ]
    assert env["SM_HOSTS"] == '["algo-1"]' and env["SM_CURRENT_HOST"] == "algo-1"
    assert env["SM_HPS"] == '{"epochs":2,"flag":true,"lr":0.01,"name":"a b"}'
    assert env["SM_USER_ARGS"] == '["--epochs","2","--flag","True","--lr","0.01","--name","a b"]'
    assert (env["SM_HP_NAME"], env["SM_HP_FLAG"], env["SM_HP_EPOCHS"]) == ("a b", "true", "2")
    assert (
        env["SM_CHANNEL_TRAINING"] == f"{base}/input/data/training" and env["SM_CHANNELS"] == '["training"]'
    )
    assert env["SM_MODEL_DIR"] == f"{base}/model" and env["SM_OUTPUT_DATA_DIR"] == f"{base}/output/data"
    assert env["SM_MODULE_DIR"] == code and env["SM_USER_ENTRY_POINT"] == "probe.py"
    assert env["SM_NUM_CPUS"] == str(os.cpu_count())
    assert env["SM_NUM_GPUS"] == ("0" if shutil.which("nvidia-smi") is None else env["SM_NUM_GPUS"])
    assert env["SM_CURRENT_INSTANCE_TYPE"] == "ml.m5.xlarge" and env["SM_FRAMEWORK_PARAMS"] == "{}"
    assert len(json.loads(env["SM_TRAINING_ENV"])) == 37
    assert env["PYTHONPATH"].split(":")[0] == f"{base}/code" and env["SAGEMAKER_BASE_DIR"] == base
    assert (env["MASTER_ADDR"], env["NCCL_SOCKET_IFNAME"]) == ("127.0.0.1", "lo")
    assert env["MASTER_PORT"].isdigit() and env["MASTER_PORT"] != "7777"  # the job's own port
    assert env["TRAINING_JOB_NAME"] == "probe-job" and env["SAGEMAKER_REGION"] == "us-east-1"
    assert env["SM_DLC_TORCH_VERSION"] == report["torch"][0] and env["PYTHONUNBUFFERED"] == "1"
    assert env["MY_VAR"] == "x y" and "AWS_SECRET_ACCESS_KEY" not in env

    cfg = ml / "input/config"
    assert json.loads((cfg / "hyperparameters.json").read_text()) == req["HyperParameters"]
    assert json.loads((cfg / "resourceconfig.json").read_text())["network_interface_name"] == "lo"
    assert json.loads((cfg / "inputdataconfig.json").read_text()) == {
        "training": {
            "RecordWrapperType": "None",
            "S3DistributionType": "FullyReplicated",
            "TrainingInputMode": "File",
        }
    }
    assert json.loads((cfg / "checkpointconfig.json").read_text()) == {
        "LocalPath": f"{base}/checkpoints",
        "S3Uri": (tmp_path / "ckpt").as_uri(),
    }

    # requirements: importable by the job, from the cached venv, and NOT in the runtime's interpreter
    assert report["tinypkg"][0] == 42 and report["tinypkg"][1].startswith(str(tmp_path / "venvs"))
    assert report["prefix"].startswith(str(tmp_path / "venvs"))
    probe = subprocess.run([sys.executable, "-c", "import tinypkg"], capture_output=True)
    assert probe.returncode != 0
    base_site = [p for p in sys.path if p.endswith("site-packages")]
    assert any(
        report["torch"][1].startswith(p) for p in base_site
    )  # torch from the base env, not reinstalled
    assert not list((tmp_path / "venvs").glob("*/lib/python*/site-packages/torch"))

    out = tmp_path / "out" / "probe-job" / "output"
    assert result.model_artifacts == f"{(tmp_path / 'out').as_uri()}/probe-job/output/model.tar.gz"
    assert _members(out / "model.tar.gz") == {"marker.txt": b"model"}
    assert "probe.json" in _members(out / "output.tar.gz")
    assert (ml / "output/success").exists() and not (ml / "output/failure").exists()


def test_requirements_venv_is_cached_between_jobs(tmp_path):
    wheel = _wheel(tmp_path, value=7)
    files = {
        "uses_tinypkg.py": FIXTURES / "uses_tinypkg.py",
        "requirements.txt": f"--no-index\n{wheel}\n".encode(),
    }
    out = (tmp_path / "out").as_uri()
    first, second = Recorder(), Recorder()
    r1, _ = _run(tmp_path, _request("cache-1", _code(tmp_path, files), "uses_tinypkg.py", out), first)
    r2, _ = _run(tmp_path, _request("cache-2", _code(tmp_path, files), "uses_tinypkg.py", out), second)
    assert r1.status == r2.status == "Completed", second.text
    assert "tinypkg=7" in first.text and "tinypkg=7" in second.text
    assert (
        "Reusing the cached virtual environment" in second.text
        and "pip" not in second.text.split("Reusing")[1]
    )
    assert len([p for p in (tmp_path / "venvs").iterdir() if p.is_dir()]) == 1


def test_concurrent_jobs_share_one_venv_build(tmp_path):
    import threading

    wheel = _wheel(tmp_path, value=9)
    files = {
        "uses_tinypkg.py": FIXTURES / "uses_tinypkg.py",
        "requirements.txt": f"--no-index\n{wheel}\n".encode(),
    }
    out = (tmp_path / "out").as_uri()
    recs = [Recorder(), Recorder()]
    results: dict[int, object] = {}

    def job(i: int) -> None:
        req = _request(f"conc-{i}", _code(tmp_path, files, f"s{i}.tar.gz"), "uses_tinypkg.py", out)
        results[i] = _run(tmp_path, req, recs[i])[0]

    threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert [results[i].status for i in range(2)] == ["Completed", "Completed"], recs[0].text + recs[1].text
    assert all("tinypkg=9" in r.text for r in recs)
    assert sum("Reusing the cached virtual environment" in r.text for r in recs) == 1
    assert len([p for p in (tmp_path / "venvs").iterdir() if p.is_dir()]) == 1


# ------------------------------------------------------------------ failures
def test_failing_script_reports_the_toolkit_message(tmp_path):
    rec = Recorder()
    req = _request(
        "fail-job", _code(tmp_path, {"fail.py": FIXTURES / "fail.py"}), "fail.py", (tmp_path / "out").as_uri()
    )
    result, ml = _run(tmp_path, req, rec)
    assert (result.status, result.secondary_status) == ("Failed", "Failed")
    failure = (ml / "output/failure").read_text()
    assert failure.startswith('ExecuteUserScriptError:\nExitCode 1\nErrorMessage "')
    assert "ValueError: boom: bad value" in failure and "second line" in failure
    assert failure.endswith(f'Command "{sys.executable} fail.py"')
    assert result.failure_reason == f"AlgorithmError: {failure}, exit code: 1"
    assert "Traceback" in rec.text and "about to fail" in rec.text  # stderr merged into the log
    assert rec.secondary == ["Downloading", "Training", "Uploading"]
    assert (tmp_path / "out/fail-job/output/model.tar.gz").exists()


def test_script_written_failure_file_wins(tmp_path):
    req = _request(
        "own-failure",
        _code(tmp_path, {"own_failure.py": FIXTURES / "own_failure.py"}),
        "own_failure.py",
        (tmp_path / "out").as_uri(),
    )
    result, ml = _run(tmp_path, req, Recorder())
    assert result.status == "Failed"
    assert (ml / "output/failure").read_text().startswith("MyError: the data was bad\nxxx")
    assert result.failure_reason.startswith("AlgorithmError: MyError: the data was bad\nxxx")
    assert result.failure_reason.endswith(", exit code: 1") and len(result.failure_reason) == 1024


def test_uninstallable_requirement_fails_with_pips_reason(tmp_path):
    files = {"probe.py": FIXTURES / "probe.py", "requirements.txt": b"--no-index\nno-such-package-zzz==1.0\n"}
    req = _request("bad-req", _code(tmp_path, files), "probe.py", (tmp_path / "out").as_uri())
    rec = Recorder()
    result, ml = _run(tmp_path, req, rec)
    assert result.status == "Failed", rec.text
    assert result.failure_reason.startswith(
        "AlgorithmError: InstallRequirementsError:\nExitCode 1\nErrorMessage"
    )
    assert "no-such-package-zzz" in result.failure_reason
    assert "No matching distribution" in result.failure_reason or "Could not find" in result.failure_reason
    assert "probe: first line" not in rec.text
    assert not [p for p in (tmp_path / "venvs").iterdir() if p.is_dir()]  # the broken venv is not cached


@pytest.mark.parametrize("evil", ["traversal", "absolute", "symlink"])
def test_malicious_sourcedir_is_refused_before_running(tmp_path, evil):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        script = (FIXTURES / "probe.py").read_bytes()
        info = tarfile.TarInfo("probe.py")
        info.size = len(script)
        tf.addfile(info, io.BytesIO(script))
        bad = tarfile.TarInfo(
            {"traversal": "../../../escaped.txt", "absolute": str(tmp_path / "abs.txt"), "symlink": "link"}[
                evil
            ]
        )
        if evil == "symlink":
            bad.type, bad.linkname = tarfile.SYMTYPE, str(tmp_path)
            tf.addfile(bad)
        else:
            bad.size = 1
            tf.addfile(bad, io.BytesIO(b"x"))
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(buf.getvalue())
    rec = Recorder()
    result, ml = _run(
        tmp_path, _request(f"evil-{evil}", archive.as_uri(), "probe.py", (tmp_path / "out").as_uri()), rec
    )
    assert (result.status, result.secondary_status) == ("Failed", "Failed")
    assert result.failure_reason.startswith("ClientError: refusing to extract")
    assert "unsafe archive member" in result.failure_reason and "nothing was run" in result.failure_reason
    assert rec.secondary == ["Downloading"] and "probe: first line" not in rec.text
    assert not any((ml / "code").iterdir())
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "abs.txt").exists()
    assert not (tmp_path / "out").exists() and result.model_artifacts is None


# ------------------------------------------------------------------ stop and MaxRuntime
def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_stop_kills_a_sigterm_ignoring_group_after_the_grace_period(tmp_path):
    rec = Recorder(stop_when="ready")
    req = _request(
        "stop-job",
        _code(tmp_path, {"ignore_sigterm.py": FIXTURES / "ignore_sigterm.py"}),
        "ignore_sigterm.py",
        (tmp_path / "out").as_uri(),
    )
    t0 = time.monotonic()
    result, ml = _run(tmp_path, req, rec, grace=1.5)
    elapsed = time.monotonic() - t0
    assert (result.status, result.secondary_status, result.failure_reason) == ("Stopped", "Stopped", None)
    assert 1.5 <= elapsed < 30
    assert "Stopping" in rec.secondary and rec.secondary[-1] == "Uploading"
    main_pid, child_pid = map(int, (ml / "model/pids.txt").read_text().split())
    deadline = time.monotonic() + 5
    while not (_gone(main_pid) and _gone(child_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(main_pid) and _gone(child_pid)  # the whole process group, grandchild included
    assert "pids.txt" in _members(tmp_path / "out/stop-job/output/model.tar.gz")


def test_max_runtime_sends_sigterm_and_keeps_what_the_script_saved(tmp_path):
    req = _request(
        "slow-job",
        _code(tmp_path, {"sleeper.py": FIXTURES / "sleeper.py"}),
        "sleeper.py",
        (tmp_path / "out").as_uri(),
        StoppingCondition={"MaxRuntimeInSeconds": 2},
    )
    rec = Recorder()
    result, ml = _run(tmp_path, req, rec)
    assert (result.status, result.secondary_status) == ("Stopped", "MaxRuntimeExceeded"), rec.text
    assert "MaxRuntimeInSeconds=2" in result.failure_reason
    assert "got SIGTERM, saved" in rec.text
    assert _members(tmp_path / "out/slow-job/output/model.tar.gz") == {"saved-on-sigterm.txt": b"saved"}


# ------------------------------------------------------------------ real torch over S3 (moto)
@pytest.fixture(scope="module")
def moto_s3(moto_url):
    import boto3

    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket="bkt")
    return client


def test_real_torch_training_on_s3_with_metrics_and_checkpoints(tmp_path, moto_s3):
    import torch

    storage = Storage(s3_client=lambda: moto_s3)
    storage.upload_bytes(
        _targz({"train_torch.py": FIXTURES / "train_torch.py"}), "s3://bkt/torch-job/source/sourcedir.tar.gz"
    )
    storage.upload_bytes(
        b"".join(f"{x},{3 * x + 1}\n".encode() for x in range(-5, 6)), "s3://bkt/data/train/d.csv"
    )
    metrics = [{"Name": "train:loss", "Regex": r"loss=([0-9.]+)"}, {"Name": "bad", "Regex": "("}]

    def request(name: str) -> dict:
        return _request(
            name,
            "s3://bkt/torch-job/source/sourcedir.tar.gz",
            "train_torch.py",
            "s3://bkt/output",
            {"epochs": "3", "lr": "0.05"},
            {"train": "s3://bkt/data/train"},
            CheckpointConfig={"S3Uri": "s3://bkt/checkpoints/torch"},
            AlgorithmSpecification={"MetricDefinitions": metrics},
        )

    rec = Recorder()
    result, ml = _run(tmp_path, request("torch-job"), rec, storage=storage)
    assert result.status == "Completed", rec.text
    assert result.model_artifacts == "s3://bkt/output/torch-job/output/model.tar.gz"
    losses = [float(line.split("loss=")[1]) for _, line, _ in rec.lines if "loss=" in line]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert result.final_metrics == [
        {"MetricName": "train:loss", "Value": losses[-1], "Timestamp": result.final_metrics[0]["Timestamp"]}
    ]
    storage.download_file(result.model_artifacts, tmp_path / "model.tar.gz")
    state = torch.load(io.BytesIO(_members(tmp_path / "model.tar.gz")["model.pth"]))
    assert set(state) == {"weight", "bias"}
    assert storage.exists("s3://bkt/output/torch-job/output/output.tar.gz")
    assert storage.exists("s3://bkt/checkpoints/torch/last.pt")

    rec2 = Recorder()
    again, _ = _run(tmp_path, request("torch-job-2"), rec2, storage=storage)
    assert (
        again.status == "Completed" and "resumed from epoch 2" in rec2.text
    )  # restored from the S3 checkpoint


# ------------------------------------------------------------------ other entry points
def test_shell_entry_point_keeps_each_value_one_argument(tmp_path):
    rec = Recorder()
    req = _request(
        "sh-job",
        _code(tmp_path, {"run.sh": FIXTURES / "run.sh"}),
        "run.sh",
        (tmp_path / "out").as_uri(),
        {"msg": '"two words; $(echo INJECTED)"'},
    )
    result, _ = _run(tmp_path, req, rec)
    assert result.status == "Completed", rec.text
    assert "shell entry: 2 args" in rec.text and "arg=[two words; $(echo INJECTED)]" in rec.text
    assert f"python={os.path.dirname(sys.executable)}/python" in rec.text


def test_setup_py_package_is_installed_and_run_as_a_module(tmp_path):
    files = {n: FIXTURES / "package" / n for n in ("setup.py", "train.py", "helper.py")}
    rec = Recorder()
    result, _ = _run(
        tmp_path,
        _request("pkg-job", _code(tmp_path, files), "train.py", (tmp_path / "out").as_uri(), {"epochs": "1"}),
        rec,
    )
    assert result.status == "Completed", rec.text
    assert "package entry: __name__=__main__ argv=['--epochs', '1'] from helper" in rec.text
    assert f"{tmp_path}/jobs/pkg-job/venv/bin/python -m train --epochs 1" in rec.text


def test_torch_distributed_runs_torchrun_on_one_node(tmp_path):
    rec = Recorder()
    req = _request(
        "dist-job",
        _code(tmp_path, {"dist.py": FIXTURES / "dist.py"}),
        "dist.py",
        (tmp_path / "out").as_uri(),
        {"sagemaker_torch_distributed_enabled": "true"},
    )
    result, _ = _run(tmp_path, req, rec)
    assert result.status == "Completed", rec.text
    assert "-m torch.distributed.run --nnodes 1 --nproc_per_node 1 dist.py" in rec.text
    assert "dist: 0 1 0" in rec.text


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ResourceConfig": {"InstanceType": "ml.trn1.32xlarge", "InstanceCount": 1}}, "no Neuron devices"),
        (
            {
                "HyperParameters": {
                    "sagemaker_program": json.dumps("probe.py"),
                    "sagemaker_pytorch_xla_multi_worker_enabled": "true",
                }
            },
            "XLA",
        ),
        (
            {
                "InputDataConfig": [
                    {
                        "ChannelName": "m",
                        "DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": "s3://b/m"}},
                    }
                ]
            },
            "ManifestFile",
        ),
    ],
)
def test_unsupported_requests_fail_clearly(tmp_path, change, message):
    req = _request(
        "unsupported",
        _code(tmp_path, {"probe.py": FIXTURES / "probe.py"}),
        "probe.py",
        (tmp_path / "out").as_uri(),
        **change,
    )
    result, _ = _run(tmp_path, req, Recorder())
    assert result.status == "Failed" and result.failure_reason.startswith("ClientError:")
    assert message in result.failure_reason


def test_missing_channel_data_fails_the_download(tmp_path):
    req = _request(
        "no-data",
        _code(tmp_path, {"probe.py": FIXTURES / "probe.py"}),
        "probe.py",
        (tmp_path / "out").as_uri(),
        channels={"train": (tmp_path / "nothing").as_uri()},
    )
    result, _ = _run(tmp_path, req, Recorder())
    assert result.status == "Failed"
    assert result.failure_reason.startswith("ClientError: Data download failed: channel 'train'")


def test_file_uri_source_directory_and_stop_before_start(tmp_path):
    src = tmp_path / "srcdir"
    src.mkdir()
    shutil.copy(FIXTURES / "uses_tinypkg.py", src / "entry.py")
    (src / "entry.py").write_text("print('from a directory')\n")
    rec = Recorder()
    result, _ = _run(
        tmp_path, _request("dir-job", src.as_uri(), "entry.py", (tmp_path / "out").as_uri()), rec
    )
    assert result.status == "Completed" and "from a directory" in rec.text
    early = Recorder(stop_when="")
    early.lines.append(("algo-1", "", 0))
    stopped, _ = _run(
        tmp_path, _request("early", src.as_uri(), "entry.py", (tmp_path / "out").as_uri()), early
    )
    assert (stopped.status, stopped.secondary_status) == ("Stopped", "Stopped")


def test_an_entry_point_outside_the_code_dir_is_never_chmodded_or_run(tmp_path):
    outside = tmp_path / "outside.sh"
    outside.write_text("#!/bin/sh\necho RAN-OUTSIDE\n")
    outside.chmod(0o644)
    code = _code(tmp_path, {"run.sh": FIXTURES / "run.sh"})
    for name, program in (("abs-entry", str(outside)), ("up-entry", "../../../../../../outside.sh")):
        rec = Recorder()
        result, ml = _run(tmp_path, _request(name, code, program, (tmp_path / "out").as_uri()), rec)
        assert (ml / "code" / program).resolve() == outside.resolve()  # the path does lead there
        assert result.status == "Failed" and program in result.failure_reason, result.failure_reason
        assert "RAN-OUTSIDE" not in rec.text
        assert outside.stat().st_mode & 0o777 == 0o644
