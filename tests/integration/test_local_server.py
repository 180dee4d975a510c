"""The local runtime speaks the SageMaker and CloudWatch Logs protocols: checked with stock boto3 clients."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from airflow_sm_pytorch import __version__
from airflow_sm_pytorch.local.store import LOG_GROUP, Store
from tests.conftest import send_signed, wait_for_job

pytestmark = pytest.mark.integration

QUICK = "print('hello from train.py')\n"


def error_of(call, *args, **kwargs) -> dict:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    return info.value.response["Error"]


# -- the server itself ---------------------------------------------------------------------------
def test_ready_line_server_json_and_ping(local_runtime):
    root = local_runtime.root.resolve()
    assert local_runtime.ready_line == (
        f"airflow-sm-pytorch local runtime listening on {local_runtime.url} (root: {root})")
    assert json.loads((root / "server.json").read_text()) == {"pid": local_runtime.proc.pid,
                                                              "url": local_runtime.url}
    with urllib.request.urlopen(f"{local_runtime.url}/ping", timeout=5) as resp:
        assert resp.status == 200
        assert json.loads(resp.read()) == {"service": "airflow-sm-pytorch-local", "version": __version__}


def test_sigterm_stops_the_server_cleanly(local_runtime):
    assert local_runtime.terminate() == 0
    assert not (local_runtime.root / "server.json").exists()


def test_bind_failure_is_reported(local_runtime):
    cmd = [sys.executable, "-m", "airflow_sm_pytorch.cli", "local", "serve", "--port", str(local_runtime.port),
           "--root", str(local_runtime.root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "cannot listen on" in proc.stderr


def test_the_runtime_modules_stay_light():
    probe = (
        "import sys, json, tempfile, pathlib\n"
        "import airflow_sm_pytorch.local.supervisor\n"
        "light = sorted(m for m in ('boto3', 'botocore', 'starlette', 'uvicorn', 'torch') if m in sys.modules)\n"
        "from airflow_sm_pytorch.local.auth import Keys\n"
        "from airflow_sm_pytorch.local.server import create_app\n"
        "create_app(pathlib.Path(tempfile.mkdtemp()), keys=Keys('a', 'b', 'test'))\n"
        "print(json.dumps([light, 'torch' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[], False]


# -- protocol errors -------------------------------------------------------------------------------
def test_unknown_operations(local_runtime):
    sm, logs = local_runtime.client("sagemaker"), local_runtime.client("logs")
    err = error_of(sm.describe_processing_job, ProcessingJobName="p")
    assert err["Code"] == "UnknownOperationException" and "SageMaker.DescribeProcessingJob" in err["Message"]
    assert error_of(logs.create_log_group, logGroupName="g")["Code"] == "UnknownOperationException"


@pytest.mark.parametrize("body", [b"{nope", b"[1, 2]", b"[" * 100_000 + b"]" * 100_000,
                                  b'{"a":' * 5000 + b"1" + b"}" * 5000])
def test_a_body_that_is_not_a_json_object_is_a_serialization_exception(local_runtime, body):
    status, reply = send_signed(local_runtime.url, "SageMaker.ListTrainingJobs", body)
    assert (status, reply["__type"]) == (400, "SerializationException")
    assert send_signed(local_runtime.url, "SageMaker.ListTrainingJobs", b"{}")[0] == 200  # still serving


def test_requests_are_validated_server_side(local_runtime, training_request):
    sm = local_runtime.client("sagemaker", parameter_validation=False)
    err = error_of(sm.create_training_job, **training_request("bad_name", QUICK))
    assert err["Code"] == "ValidationException" and "TrainingJobName" in err["Message"]
    request = training_request("no-role", QUICK)
    del request["RoleArn"]
    err = error_of(sm.create_training_job, **request)
    assert err["Code"] == "ValidationException" and "RoleArn" in err["Message"]
    assert error_of(sm.list_training_jobs, MaxResults=0)["Code"] == "ValidationException"
    err = error_of(sm.list_training_jobs, SortBy="Bogus")
    assert err["Code"] == "ValidationException" and "'Bogus'" in err["Message"] and "CreationTime" in err["Message"]
    logs = local_runtime.client("logs", parameter_validation=False)
    err = error_of(logs.get_log_events, logGroupName=LOG_GROUP, logStreamName="x", limit=0)
    assert err["Code"] == "InvalidParameterException"
    # the local runtime takes file:// URIs where SageMaker takes s3:// ones; other schemes are refused
    request = training_request("bad-output", QUICK, OutputDataConfig={"S3OutputPath": "ftp://x/y"})
    assert error_of(sm.create_training_job, **request)["Code"] == "ValidationException"


def test_describe_and_stop_of_an_unknown_job(local_runtime):
    sm = local_runtime.client("sagemaker")
    for call in (sm.describe_training_job, sm.stop_training_job):
        err = error_of(call, TrainingJobName="no-such-job")
        assert err == {"Code": "ValidationException", "Message": "Requested resource not found."}


# -- jobs ------------------------------------------------------------------------------------------
def test_region_comes_from_the_credential_scope(local_runtime, training_request):
    import boto3

    sm = boto3.client("sagemaker", endpoint_url=local_runtime.url, region_name="eu-west-1",
                      aws_access_key_id="local", aws_secret_access_key="local")
    arn = sm.create_training_job(**training_request("Mixed-Case-Job", QUICK))["TrainingJobArn"]
    assert arn == "arn:aws:sagemaker:eu-west-1:000000000000:training-job/mixed-case-job"


def test_describe_echoes_the_request(local_runtime, training_request, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("1,2\n")
    request = training_request(
        "echo-job", QUICK,
        Environment={"MY_FLAG": "1"},
        InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": (tmp_path / "data").as_uri(),
            "S3DataDistributionType": "FullyReplicated"}}}],
        CheckpointConfig={"S3Uri": (tmp_path / "ckpt").as_uri()},
        Tags=[{"Key": "team", "Value": "ml"}],
    )
    sm = local_runtime.client("sagemaker")
    arn = sm.create_training_job(**request)["TrainingJobArn"]
    desc = sm.describe_training_job(TrainingJobName="echo-job")
    assert desc["TrainingJobArn"] == arn and desc["TrainingJobName"] == "echo-job"
    for key, value in request.items():
        if key not in ("TrainingJobName", "Tags"):
            assert desc[key] == value, key
    assert "Tags" not in desc
    assert desc["EnableNetworkIsolation"] is False
    assert isinstance(desc["CreationTime"], dt.datetime)
    assert desc["SecondaryStatusTransitions"][0]["Status"] == "Starting"
    done = wait_for_job(sm, "echo-job")
    assert done["TrainingJobStatus"] in ("Completed", "Failed")
    assert done["TrainingEndTime"] >= done["CreationTime"]
    assert done["SecondaryStatusTransitions"][-1]["Status"] == done["SecondaryStatus"]
    assert all("EndTime" in t for t in done["SecondaryStatusTransitions"])


def test_stopping_a_finished_job_is_rejected(local_runtime, training_request):
    sm = local_runtime.client("sagemaker")
    sm.create_training_job(**training_request("done-job", QUICK))
    status = wait_for_job(sm, "done-job")["TrainingJobStatus"]
    err = error_of(sm.stop_training_job, TrainingJobName="done-job")
    assert err == {"Code": "ValidationException",
                   "Message": f"The request was rejected because the training job is in status {status}."}


def test_list_training_jobs_filters_sorts_and_pages(local_runtime, training_request):
    sm = local_runtime.client("sagemaker")
    names = [f"list-{'ab'[i % 2]}-{i:02d}" for i in range(11)]
    for i, name in enumerate(names):
        script = QUICK if i % 3 else "raise SystemExit(3)\n"
        sm.create_training_job(**training_request(name, script))
    described = {n: wait_for_job(sm, n) for n in names}

    def listed(**kw):
        return [s["TrainingJobName"] for s in sm.list_training_jobs(**kw)["TrainingJobSummaries"]]

    first = sm.list_training_jobs()
    assert [s["TrainingJobName"] for s in first["TrainingJobSummaries"]] == names[:10]  # default 10, oldest first
    assert "NextToken" in first
    assert listed(NextToken=first["NextToken"]) == names[10:]
    pages = sm.get_paginator("list_training_jobs").paginate(PaginationConfig={"PageSize": 3})
    assert [s["TrainingJobName"] for p in pages for s in p["TrainingJobSummaries"]] == names
    assert listed(SortBy="Name", SortOrder="Descending", MaxResults=100) == sorted(names, reverse=True)
    assert listed(NameContains="LIST-B", MaxResults=100) == [n for n in names if "-b-" in n]
    by_status = listed(SortBy="Status", MaxResults=100)
    assert [described[n]["TrainingJobStatus"] for n in by_status] == sorted(
        described[n]["TrainingJobStatus"] for n in names)
    for status in {d["TrainingJobStatus"] for d in described.values()}:
        expected = [n for n in names if described[n]["TrainingJobStatus"] == status]
        assert listed(StatusEquals=status) == expected[:10]
        # documented: with MaxResults, that many jobs are taken first, then filtered by StatusEquals
        assert listed(StatusEquals=status, MaxResults=4) == [n for n in names[:4] if n in expected]
    middle = described[names[5]]["CreationTime"]
    assert listed(CreationTimeAfter=middle, MaxResults=100) == names[6:]
    assert listed(CreationTimeBefore=middle, MaxResults=100) == names[:5]
    latest = max(d["LastModifiedTime"] for d in described.values())
    assert listed(LastModifiedTimeAfter=latest) == []
    assert len(listed(LastModifiedTimeBefore=latest + dt.timedelta(seconds=1), MaxResults=100)) == 11
    summary = sm.list_training_jobs(NameContains=names[0])["TrainingJobSummaries"][0]
    assert summary["TrainingJobArn"] == described[names[0]]["TrainingJobArn"]
    assert summary["TrainingJobStatus"] == described[names[0]]["TrainingJobStatus"]
    assert error_of(sm.list_training_jobs, NextToken="garbage")["Code"] == "ValidationException"


def test_a_restarted_server_knows_every_job(local_runtime, training_request):
    sm = local_runtime.client("sagemaker")
    for name in ("keep-1", "keep-2"):
        sm.create_training_job(**training_request(name, QUICK))
    before = {n: wait_for_job(sm, n) for n in ("keep-1", "keep-2")}
    local_runtime.restart()
    sm = local_runtime.client("sagemaker")
    for name, desc in before.items():
        after = sm.describe_training_job(TrainingJobName=name)
        desc.pop("ResponseMetadata"), after.pop("ResponseMetadata")
        assert after == desc
    assert len(sm.list_training_jobs()["TrainingJobSummaries"]) == 2


# -- CloudWatch Logs -------------------------------------------------------------------------------
def inject(root, stream: str, messages: list[str], start_ms: int = 1_700_000_000_000) -> None:
    store = Store(root)
    store.append_logs(stream.split("/")[0], [(stream, start_ms + i, m) for i, m in enumerate(messages)])
    store.close()


def test_describe_log_streams(local_runtime):
    inject(local_runtime.root, "b-job/algo-1-200", ["x"], start_ms=1_000)
    inject(local_runtime.root, "a-job/algo-1-100", ["x", "y"], start_ms=5_000)
    inject(local_runtime.root, "b-job/algo-2-200", ["x"], start_ms=3_000)
    logs = local_runtime.client("logs")

    def names(**kw):
        return [s["logStreamName"] for s in logs.describe_log_streams(logGroupName=LOG_GROUP, **kw)["logStreams"]]

    assert names() == ["a-job/algo-1-100", "b-job/algo-1-200", "b-job/algo-2-200"]
    assert names(logStreamNamePrefix="b-job/") == ["b-job/algo-1-200", "b-job/algo-2-200"]
    assert names(logStreamNamePrefix="b-job/", descending=True) == ["b-job/algo-2-200", "b-job/algo-1-200"]
    assert names(orderBy="LastEventTime") == ["b-job/algo-1-200", "b-job/algo-2-200", "a-job/algo-1-100"]
    page = logs.describe_log_streams(logGroupName=LOG_GROUP, limit=2)
    assert len(page["logStreams"]) == 2 and names(limit=2, nextToken=page["nextToken"]) == ["b-job/algo-2-200"]
    stream = logs.describe_log_streams(logGroupIdentifier=f"arn:aws:logs:us-east-1:000000000000:log-group:"
                                                          f"{LOG_GROUP}", logStreamNamePrefix="a-job/")
    (a,) = stream["logStreams"]
    assert (a["firstEventTimestamp"], a["lastEventTimestamp"]) == (5_000, 5_001)
    assert a["lastIngestionTime"] >= a["creationTime"] > 0
    assert a["arn"].endswith(f"log-group:{LOG_GROUP}:log-stream:a-job/algo-1-100")
    err = error_of(logs.describe_log_streams, logGroupName=LOG_GROUP, orderBy="LastEventTime",
                   logStreamNamePrefix="a")
    assert err["Code"] == "InvalidParameterException"
    err = error_of(logs.describe_log_streams, logGroupName="/aws/other")
    assert err == {"Code": "ResourceNotFoundException", "Message": "The specified log group does not exist."}


def test_get_log_events_tokens_follow_cloudwatch(local_runtime):
    stream = "tok-job/algo-1-1"
    inject(local_runtime.root, stream, [f"m{i}" for i in range(25)])
    logs = local_runtime.client("logs")

    def get(**kw):
        resp = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, **kw)
        return [e["message"] for e in resp["events"]], resp["nextForwardToken"], resp["nextBackwardToken"]

    seen, token = [], None
    first, token, _ = get(startFromHead=True, limit=10)
    seen += first
    for _ in range(5):
        page, new_token, _ = get(nextToken=token, startFromHead=True, limit=10)
        seen += page
        if new_token == token:
            break
        token = new_token
    assert seen == [f"m{i}" for i in range(25)]
    page, same, _ = get(nextToken=token, startFromHead=True)
    assert page == [] and same == token  # nothing newer: the same forward token comes back
    inject(local_runtime.root, stream, ["late-1", "late-2"])  # a tailer picks up exactly the new lines
    page, token2, _ = get(nextToken=token, startFromHead=True)
    assert page == ["late-1", "late-2"] and token2 != token
    assert get(nextToken=token2, startFromHead=True)[:2] == ([], token2)
    # the default reads from the end, and backward tokens page towards the start
    tail, fwd, back = get(limit=5)
    assert tail == ["m22", "m23", "m24", "late-1", "late-2"]
    older, _, back2 = get(nextToken=back, limit=5)
    assert older == [f"m{i}" for i in range(17, 22)]
    assert get(nextToken=fwd)[0] == []
    events = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True,
                                 startTime=1_700_000_000_003, endTime=1_700_000_000_006)["events"]
    assert [e["message"] for e in events] == ["m3", "m4", "m5"]
    assert {"timestamp", "message", "ingestionTime"} <= set(events[0])
    err = error_of(logs.get_log_events, logGroupName=LOG_GROUP, logStreamName="tok-job/nope")
    assert err == {"Code": "ResourceNotFoundException", "Message": "The specified log stream does not exist."}
    err = error_of(logs.get_log_events, logGroupName=LOG_GROUP, logStreamName=stream, nextToken="x/1")
    assert err["Code"] == "InvalidParameterException"


def test_filter_log_events(local_runtime):
    inject(local_runtime.root, "f-job/algo-1-1", ["INFO start", "ERROR disk full", "debug ERROR x", "INFO end"])
    inject(local_runtime.root, "g-job/algo-1-1", ["ERROR elsewhere"])
    logs = local_runtime.client("logs")

    def messages(**kw):
        return [e["message"] for e in logs.filter_log_events(logGroupName=LOG_GROUP, **kw)["events"]]

    assert messages(logStreamNamePrefix="f-job/", filterPattern="ERROR") == ["ERROR disk full", "debug ERROR x"]
    assert messages(filterPattern="ERROR -debug") == ["ERROR disk full", "ERROR elsewhere"]
    assert messages(filterPattern='"disk full"') == ["ERROR disk full"]
    assert messages(logStreamNames=["g-job/algo-1-1"]) == ["ERROR elsewhere"]
    page = logs.filter_log_events(logGroupName=LOG_GROUP, logStreamNamePrefix="f-job/", limit=3)
    assert len(page["events"]) == 3 and page["events"][0]["logStreamName"] == "f-job/algo-1-1"
    assert messages(logStreamNamePrefix="f-job/", nextToken=page["nextToken"]) == ["INFO end"]
    err = error_of(logs.filter_log_events, logGroupName=LOG_GROUP, logStreamNames=["a"], logStreamNamePrefix="a")
    assert err["Code"] == "InvalidParameterException"


def test_local_status_and_stop(local_runtime):
    cli = [sys.executable, "-m", "airflow_sm_pytorch.cli", "local"]
    root = ["--root", str(local_runtime.root)]
    status = subprocess.run([*cli, "status", *root], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert f"serves {local_runtime.root.resolve()} at {local_runtime.url}" in status.stdout
    assert "0 training job(s) in progress, 0 endpoint(s)" in status.stdout
    stop = subprocess.run([*cli, "stop", *root], capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0 and "stopped the local runtime" in stop.stdout, stop.stderr
    local_runtime.proc.wait(timeout=10)
    again = subprocess.run([*cli, "status", *root], capture_output=True, text=True, timeout=60)
    assert again.returncode == 3 and "no local runtime serves" in again.stdout
