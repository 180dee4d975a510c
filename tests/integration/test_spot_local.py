"""Spot interruptions rehearsed on the local runtime: SIGTERM, checkpoints synced out and restored, the
statuses SageMaker shows, MaxWaitTimeInSeconds, and a resumed model equal to an uninterrupted one."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from botocore.exceptions import ClientError

from airflow_sm_pytorch.local.training import spot
from airflow_sm_pytorch.local.training.runner import JobEvents, run_training_job
from airflow_sm_pytorch.storage import Storage
from tests.conftest import wait_for_job

pytestmark = pytest.mark.integration

CODE = Path(__file__).resolve().parents[2] / "dags" / "code"

#: Runs until killed; on SIGTERM it writes a checkpoint (its attempt number) and exits, as a spot-aware
#: script does. Each attempt appends the checkpoint it found, so that a test sees what was restored.
LOOP = """\
import json, os, signal, sys, time
with open(os.path.join(os.environ["SM_INPUT_CONFIG_DIR"], "checkpointconfig.json")) as f:
    ckpt = os.path.join(json.load(f)["LocalPath"], "state.txt")
os.makedirs(os.path.dirname(ckpt), exist_ok=True)
found = open(ckpt).read() if os.path.exists(ckpt) else ""
print(f"attempt sees checkpoint {found!r}", flush=True)
def on_term(*_):
    with open(ckpt, "w") as f:
        f.write(found + "x")
    print("SIGTERM: checkpoint saved", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
while True:
    time.sleep(0.05)
"""


def _dataset(folder: Path) -> dict[str, str]:
    sys.path.insert(0, str(CODE))
    try:
        from data import moons
    finally:
        sys.path.remove(str(CODE))
    uris = {}
    for channel, (n, seed) in {"train": (2000, 1), "test": (500, 2)}.items():
        (folder / channel).mkdir(parents=True)
        np.savetxt(folder / channel / "data.csv", moons(n, seed), delimiter=",", fmt="%.6f")
        uris[channel] = (folder / channel).as_uri()
    return uris


def _request(name: str, work: Path, program: str, *, hyperparameters: dict | None = None,
             channels: dict[str, str] | None = None, spot_job: bool = True, max_run: int = 600,
             max_wait: int | None = 1200, tag: str | None = None, checkpoint: bool = True) -> dict:
    hp = {"sagemaker_program": json.dumps(program), "sagemaker_submit_directory": json.dumps((work / "code").as_uri())}
    hp.update({k: json.dumps(v) for k, v in (hyperparameters or {}).items()})
    request = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": "local-pytorch", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::000000000000:role/SageMakerRole",
        "HyperParameters": hp,
        "OutputDataConfig": {"S3OutputPath": (work / "output").as_uri()},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_run},
    }
    if channels:
        request["InputDataConfig"] = [{"ChannelName": ch, "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}
            for ch, uri in channels.items()]
    if spot_job:
        request["EnableManagedSpotTraining"] = True
        if max_wait is not None:
            request["StoppingCondition"]["MaxWaitTimeInSeconds"] = max_wait
    if checkpoint:
        request["CheckpointConfig"] = {"S3Uri": (work / "checkpoints" / name).as_uri(),
                                       "LocalPath": "/opt/ml/checkpoints"}
    if tag is not None:
        request["Tags"] = [{"Key": spot.TAG, "Value": tag}]
    return request


def _code(work: Path, **files: str | Path) -> None:
    (work / "code").mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copy(content, work / "code" / name)
        else:
            (work / "code" / name).write_text(content)


def _model(desc: dict) -> dict:
    import torch

    with tarfile.open(unquote(urlparse(desc["ModelArtifacts"]["S3ModelArtifacts"]).path)) as tar:
        return torch.load(io.BytesIO(tar.extractfile("model.pth").read()))


def _statuses(desc: dict) -> list[str]:
    return [t["Status"] for t in desc["SecondaryStatusTransitions"]]


def _log(runtime, job: str) -> str:
    logs = runtime.client("logs")
    group = "/aws/sagemaker/TrainingJobs"
    lines = []
    for stream in logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=f"{job}/")["logStreams"]:
        token = None
        while True:
            page = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"],
                                       startFromHead=True, **({"nextToken": token} if token else {}))
            lines += [e["message"] for e in page["events"]]
            if not page["events"] or page["nextForwardToken"] == token:
                break
            token = page["nextForwardToken"]
    return "\n".join(lines)


def _wait_for_log(runtime, job: str, predicate, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = _log(runtime, job)
        if predicate(log):
            return log
        assert time.monotonic() < deadline, log
        time.sleep(0.2)


def test_an_interrupted_spot_job_resumes_from_its_checkpoint_to_the_same_model(local_runtime, tmp_path):
    """Interrupted twice, each time once the script has checkpointed (``interrupt-spot`` in the job's
    directory), the job stays InProgress, shows Interrupted -> Starting -> Downloading -> Training each time,
    and its final weights equal an uninterrupted run's. The uninterrupted run is not a spot job: neither its
    tag nor the file interrupts it."""
    began = time.monotonic()
    work = tmp_path / "work"
    _code(work, **{"train.py": CODE / "train.py", "train_spot.py": CODE / "train_spot.py"})
    channels = _dataset(tmp_path / "data")
    hps = {"epochs": 20, "epoch-seconds": 0.2}
    one_thread = {"OMP_NUM_THREADS": "1"}  # a tiny model: one thread is faster on a busy machine
    sm = local_runtime.client("sagemaker")
    sm.create_training_job(**_request("spot-twice", work, "train_spot.py", hyperparameters=hps,
                                      channels=channels), Environment=one_thread)
    sm.create_training_job(**_request("on-demand", work, "train_spot.py", hyperparameters=hps,
                                      channels=channels, spot_job=False, tag="0.5x5"), Environment=one_thread)
    jobs = local_runtime.root / "jobs"
    seen: set[str] = set()

    def interrupt_after(predicate) -> None:
        _wait_for_log(local_runtime, "spot-twice", predicate)
        seen.add(sm.describe_training_job(TrainingJobName="spot-twice")["TrainingJobStatus"])
        (jobs / "spot-twice" / spot.INTERRUPT_FILE).touch()
        (jobs / "on-demand" / spot.INTERRUPT_FILE).touch()

    interrupt_after(lambda log: log.count("epoch=") >= 3)  # checkpoints of epochs 1..3 are written
    interrupt_after(lambda log: "resumed from" in log and log.rsplit("resumed from", 1)[1].count("epoch=") >= 2)
    while True:
        desc = sm.describe_training_job(TrainingJobName="spot-twice")
        seen.add(desc["TrainingJobStatus"])
        if desc["TrainingJobStatus"] != "InProgress":
            break
        assert time.monotonic() - began < 90, desc["SecondaryStatusTransitions"]
        time.sleep(0.1)
    plain = wait_for_job(sm, "on-demand", timeout=30)
    elapsed = time.monotonic() - began
    log = _log(local_runtime, "spot-twice")
    assert desc["TrainingJobStatus"] == "Completed", (desc.get("FailureReason"), log)
    assert seen == {"InProgress", "Completed"}  # a waiting task keeps waiting through the interruptions
    restart = ["Interrupted", "Starting", "Downloading", "Training"]
    assert _statuses(desc) == ["Starting", "Downloading", "Training", *restart, *restart, "Uploading", "Completed"]
    interrupted = [t for t in desc["SecondaryStatusTransitions"] if t["Status"] == "Interrupted"]
    assert all("spot" in t["StatusMessage"] and t["EndTime"] > t["StartTime"] for t in interrupted)
    assert log.count("SIGTERM: checkpoint of epoch") == 2 and log.count("resumed from") == 2, log
    assert log.count("Restored 1 checkpoint file(s)") == 2 and log.count("Checkpoints synced out in") == 2
    assert desc["EnableManagedSpotTraining"] is True
    assert desc["BillableTimeInSeconds"] < desc["TrainingTimeInSeconds"]  # spot savings
    assert plain["TrainingJobStatus"] == "Completed" and "Interrupted" not in _statuses(plain)
    assert plain["BillableTimeInSeconds"] == plain["TrainingTimeInSeconds"]
    assert (jobs / "on-demand" / spot.INTERRUPT_FILE).exists()  # never consumed: not a spot job
    resumed, uninterrupted = _model(desc), _model(plain)
    assert resumed.keys() == uninterrupted.keys()
    import torch

    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    assert (work / "checkpoints" / "spot-twice" / "last.pt").is_file()
    print(f"\nspot job {elapsed:.1f}s; {[(t['Status'], t['StatusMessage']) for t in desc['SecondaryStatusTransitions']]}")
    print(f"Training {desc['TrainingTimeInSeconds']}s, Billable {desc['BillableTimeInSeconds']}s")
    print("\n".join(line for line in log.splitlines() if "synced out" in line or "Restored" in line))
    assert elapsed < 90


def test_max_wait_time_ends_a_job_that_keeps_being_interrupted(local_runtime, tmp_path):
    work = tmp_path / "work"
    _code(work, **{"loop.py": LOOP})
    sm = local_runtime.client("sagemaker")
    request = _request("never-done", work, "loop.py", max_run=5, max_wait=6, tag="1x50")
    began = time.monotonic()
    sm.create_training_job(**request)
    desc = wait_for_job(sm, "never-done", timeout=30)
    assert (desc["TrainingJobStatus"], desc["SecondaryStatus"]) == ("Stopped", "MaxWaitTimeExceeded"), desc
    assert desc["FailureReason"].startswith("MaxWaitTimeExceeded")
    statuses = _statuses(desc)
    assert statuses[-1] == "MaxWaitTimeExceeded" and statuses.count("Interrupted") >= 2, statuses
    assert 6 <= time.monotonic() - began < 15
    assert desc["BillableTimeInSeconds"] < desc["TrainingTimeInSeconds"]


def test_spot_requests_are_checked(local_runtime, tmp_path):
    work = tmp_path / "work"
    _code(work, **{"loop.py": LOOP})
    sm = local_runtime.client("sagemaker")
    with pytest.raises(ClientError) as err:
        sm.create_training_job(**_request("no-wait", work, "loop.py", max_wait=None))
    assert "MaxWaitTimeInSeconds is required" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        sm.create_training_job(**_request("bad-tag", work, "loop.py", tag="soon"))
    assert spot.TAG in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError):
        sm.describe_training_job(TrainingJobName="bad-tag")  # nothing was created


class _Recorder:
    def __init__(self, stop_on: str | None = None) -> None:
        self.statuses: list[str] = []
        self.lines: list[str] = []
        self.stop_on = stop_on

    def events(self) -> JobEvents:
        return JobEvents(log=lambda h, m, t: self.lines.append(m), status=lambda s, m: self.statuses.append(s),
                         stop_requested=lambda: self.stop_on in self.statuses)


def _run(tmp_path: Path, request: dict, rec: _Recorder, **kwargs):
    return run_training_job(request, tmp_path / "jobs" / request["TrainingJobName"], rec.events(),
                            storage=Storage(), cache_dir=tmp_path / "venvs", **kwargs)


def test_checkpoints_come_back_only_through_the_checkpoint_uri_and_a_stop_while_interrupted_ends_it(tmp_path):
    """Each attempt runs on fresh instances: its checkpoint directory holds what the last one synced out."""
    work = tmp_path / "work"
    _code(work, **{"loop.py": LOOP})
    request = _request("stop-while-waiting", work, "loop.py", max_wait=40)  # bounds the test if no stop came
    rec = _Recorder()

    def watch(status: str, message: str) -> None:
        rec.statuses.append(status)
        if rec.statuses.count("Interrupted") == 2:
            rec.stop_on = "Interrupted"  # stop while waiting for capacity after the second interruption

    events = rec.events()
    events.status = watch
    result = run_training_job(request, tmp_path / "jobs" / "s", events, storage=Storage(),
                              cache_dir=tmp_path / "venvs", grace_period=2,
                              interruptions=spot.SpotInterruptions(0.5, 3), capacity_wait=0.5)
    assert (result.status, result.secondary_status, result.interruptions) == ("Stopped", "Stopped", 2)
    assert result.model_artifacts is None  # no instance ran when it ended: nothing to upload
    seen = [line for line in rec.lines if line.startswith("attempt sees")]
    assert seen == ["attempt sees checkpoint ''", "attempt sees checkpoint 'x'"]
    assert (work / "checkpoints" / "stop-while-waiting" / "state.txt").read_text() == "xx"


def test_an_on_demand_job_is_never_interrupted_and_max_runtime_excludes_the_waits(tmp_path):
    work = tmp_path / "work"
    _code(work, **{"quick.py": "import time; time.sleep(1.5); print('done', flush=True)\n", "loop.py": LOOP})
    rec = _Recorder()
    plain = _run(tmp_path, _request("plain", work, "quick.py", spot_job=False), rec,
                 interruptions=spot.SpotInterruptions(0.2, 5))
    assert (plain.status, plain.interruptions, plain.billable_seconds) == ("Completed", 0, None)
    assert "Interrupted" not in rec.statuses

    request = _request("runtime", work, "loop.py", max_run=3, max_wait=100)
    rec = _Recorder()
    began = time.monotonic()
    result = _run(tmp_path, request, rec, grace_period=2, interruptions=spot.SpotInterruptions(1, 10),
                  capacity_wait=1.0)
    took = time.monotonic() - began
    assert (result.status, result.secondary_status) == ("Stopped", "MaxRuntimeExceeded"), rec.lines
    assert result.interruptions >= 2
    assert took >= 3 + result.interruptions * 1.0  # the Interrupted waits did not count as runtime


#: Counts 25 steps of 0.1 s, keeping its count in the checkpoint directory; on SIGTERM it saves and exits.
STEPS = """\
import json, os, signal, sys, time
with open(os.path.join(os.environ["SM_INPUT_CONFIG_DIR"], "checkpointconfig.json")) as f:
    ckpt = os.path.join(json.load(f)["LocalPath"], "step.txt")
step = int(open(ckpt).read()) if os.path.exists(ckpt) else 0
print(f"starting at step {step}", flush=True)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
while step < 25 and not stop:
    time.sleep(0.1)
    step += 1
    with open(ckpt, "w") as f:
        f.write(str(step))
print(f"stopped at step {step}" if stop else "done", flush=True)
open(os.path.join(os.environ["SM_MODEL_DIR"], "steps.txt"), "w").write(str(step))
"""


def test_a_task_keeps_waiting_through_an_interruption(local_conn, local_runtime, tmp_path):
    """What a DAG does: PyTorchTrainOperator(use_spot_instances=True, max_wait=..., checkpoint_s3_uri=...,
    tags={spot.TAG: "1"}); the task waits through the interruption and returns the completed job."""
    from types import SimpleNamespace

    from airflow_sm_pytorch.local.store import Store
    from airflow_sm_pytorch.operators.train import PyTorchTrainOperator

    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(STEPS)
    op = PyTorchTrainOperator(
        task_id="train", aws_conn_id=local_conn, entry_point="train.py", source_dir=str(src),
        role="arn:aws:iam::000000000000:role/local", instance_type="ml.m5.xlarge", instance_count=1,
        framework_version="2.6.0", py_version="py312", poll_interval=0.2, use_spot_instances=True,
        max_run=300, max_wait=600, checkpoint_s3_uri=(tmp_path / "ckpt").as_uri(),
        output_path=(tmp_path / "out").as_uri(), tags={spot.TAG: "1"})
    ti = SimpleNamespace(dag_id="d", task_id="train", run_id="manual__spot", map_index=-1, try_number=1)
    result = op.execute({"ti": ti})
    assert result["TrainingJobStatus"] == "Completed"
    job = Store(local_runtime.root).get_job(result["TrainingJobName"])
    statuses = [t["status"] for t in job["transitions"]]
    assert statuses.count("Interrupted") == 1 and statuses[-1] == "Completed", statuses
    assert job["billable_seconds"] < job["training_seconds"]
    assert (tmp_path / "ckpt" / "step.txt").read_text() == "25"


class _Planted:
    """A pickle that, when unpickled, writes a file: what a tampered checkpoint in S3 could hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_a_tampered_checkpoint_is_refused_not_unpickled(tmp_path):
    """Checkpoints come back from the checkpoint URI (S3 on AWS), which other principals may write: the example
    restores them with ``weights_only=True``, so a planted pickle fails the script instead of running."""
    import torch

    channels = _dataset(tmp_path / "data")
    checkpoints, marker = tmp_path / "checkpoints", tmp_path / "planted-code-ran"
    checkpoints.mkdir()
    torch.save({"model": _Planted(marker), "epoch": 1}, checkpoints / "last.pt")
    proc = subprocess.run(
        [sys.executable, str(CODE / "train_spot.py"), "--epochs", "2", "--checkpoint-dir", str(checkpoints),
         "--train", unquote(urlparse(channels["train"]).path), "--test", unquote(urlparse(channels["test"]).path),
         "--model-dir", str(tmp_path / "model")],
        cwd=CODE, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Weights only load failed" in proc.stderr, proc.stderr[-3000:]
    assert not marker.exists()
