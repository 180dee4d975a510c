"""``build_training_plan`` against the requests SageMaker SDK v2.257.6 was seen to send (sdk-requests §1)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from airflow_sm_pytorch.builders.training import Session, TrainingPlan, build_training_plan
from airflow_sm_pytorch.builders.validation import validate_request
from airflow_sm_pytorch.exceptions import SpecError
from airflow_sm_pytorch.packaging import sourcedir_bytes
from airflow_sm_pytorch.specs import TrainingSpec

pytestmark = pytest.mark.fast  # the quick lane: scripts/test.sh -m fast

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "builders"
SRC = str(FIXTURES / "src")
JOB = "pytorch-training-2024-01-02-03-04-05-678"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BUCKET = "sagemaker-us-west-2-123456789012"
US_WEST_2 = Session(region="us-west-2", default_bucket=BUCKET)
CODE_URI = f"s3://{BUCKET}/{JOB}/source/sourcedir.tar.gz"
#: The SDK's verified archive (§1.4) holds these members; tarfile lists a directory, then its children.
SDK_MEMBERS = ["requirements.txt", "utils", "utils/helpers.py", "train.py"]
HPS = {"epochs": 10, "lr": 0.01, "model_name": "resnet", "flag": True, "lst": [1, 2]}


def expected(name: str) -> dict[str, Any]:
    data = json.loads((FIXTURES / "expected" / f"{name}.json").read_text())
    data.pop("_comment")
    return data


def spec(**overrides: Any) -> TrainingSpec:
    base: dict[str, Any] = dict(
        entry_point="train.py", source_dir=SRC, role=ROLE, instance_type="ml.p3.2xlarge", instance_count=1,
        framework_version="2.3.0", py_version="py311",
    )
    base.update(overrides)
    return TrainingSpec(**base)


def build(session: Session = US_WEST_2, job_name: str = JOB, **overrides: Any) -> TrainingPlan:
    return build_training_plan(spec(**overrides), session, job_name=job_name)


def request(session: Session = US_WEST_2, **overrides: Any) -> dict[str, Any]:
    return build(session, **overrides).request


# ------------------------------------------------------------------------------ parity
def test_captured_request_1_1() -> None:
    plan = build(hyperparameters=HPS, inputs={"train": "s3://my-bucket/train", "test": "s3://my-bucket/test"})
    assert plan.request == expected("sdk_1_1_us_west_2")
    assert list(plan.request) == list(expected("sdk_1_1_us_west_2"))  # the SDK's key order too
    validate_request("CreateTrainingJob", plan.request)
    [upload] = plan.uploads
    assert upload.uri == CODE_URI
    assert sorted(upload.members) == sorted(SDK_MEMBERS)
    assert upload.members == ["requirements.txt", "train.py", "utils", "utils/helpers.py"]
    assert upload.extra_args == {"ServerSideEncryption": "aws:kms"}
    assert plan.to_json() == {"CreateTrainingJob": plan.request,
                              "uploads": [{"uri": CODE_URI, "members": upload.members}]}


def test_archive_written_from_the_plan_lists_the_sdk_members() -> None:
    data, _ = sourcedir_bytes(build().uploads[0].files)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == sorted(SDK_MEMBERS)
        assert tar.getnames() == build().uploads[0].members


def test_network_isolation() -> None:
    plan = build(hyperparameters=HPS, enable_network_isolation=True,
                 inputs={"train": "s3://my-bucket/train", "test": "s3://my-bucket/test"})
    assert plan.request == expected("network_isolation")
    assert plan.uploads[0].uri == CODE_URI


def test_verified_combined_example() -> None:
    plan = build(
        instance_type="ml.m5.xlarge", hyperparameters={"epochs": 2},
        output_kms_key="arn:aws:kms:us-west-2:123456789012:key/output-key",
        volume_kms_key="arn:aws:kms:us-west-2:123456789012:key/volume-key",
        keep_alive_period_in_seconds=600, max_run=3600, use_spot_instances=True, max_wait=7200,
        checkpoint_s3_uri="s3://my-bucket/checkpoints", checkpoint_local_path="/opt/ml/checkpoints",
        max_retry_attempts=3, tags={"team": "ml", "project": "demo"},
        subnets=("subnet-0123456789abcdef0",), security_group_ids=("sg-0123456789abcdef0",),
        environment={"MY_FLAG": "1", "LOG_LEVEL": "debug"},
        metric_definitions=({"Name": "train:loss", "Regex": "loss=([0-9\\.]+)"},),
        disable_profiler=True, encrypt_inter_container_traffic=True,
        inputs={"s3_data": "s3://my-bucket/data", "input_mode": "FastFile", "distribution": "ShardedByS3Key",
                "content_type": "text/csv"},
    )
    assert plan.request == expected("combined")
    assert plan.uploads[0].extra_args == {"ServerSideEncryption": "aws:kms",
                                          "SSEKMSKeyId": "arn:aws:kms:us-west-2:123456789012:key/output-key"}


def test_china_region() -> None:
    session = Session(region="cn-north-1", default_bucket="sagemaker-cn-north-1-123456789012")
    plan = build(session, instance_type="ml.m5.xlarge", inputs="s3://my-cn-bucket/train",
                 role="arn:aws-cn:iam::123456789012:role/SageMakerRole")
    assert plan.request == expected("china")
    assert plan.uploads[0].uri == f"s3://sagemaker-cn-north-1-123456789012/{JOB}/source/sourcedir.tar.gz"


# ------------------------------------------------------------------------------ code location
def test_output_path_bucket_is_used_without_its_prefix() -> None:
    plan = build(output_path="s3://out-bkt/some/prefix")
    assert plan.request["OutputDataConfig"] == {"S3OutputPath": "s3://out-bkt/some/prefix"}
    assert plan.uploads[0].uri == f"s3://out-bkt/{JOB}/source/sourcedir.tar.gz"
    assert plan.request["DebugHookConfig"]["S3OutputPath"] == "s3://out-bkt/some/prefix"


def test_code_location_keeps_its_prefix() -> None:
    plan = build(code_location="s3://code-bkt/p/q", output_kms_key="key-1")
    assert plan.uploads[0].uri == f"s3://code-bkt/p/q/{JOB}/source/sourcedir.tar.gz"
    assert plan.uploads[0].extra_args == {"ServerSideEncryption": "aws:kms"}  # not the output bucket
    same = build(code_location=f"s3://{BUCKET}/code", output_kms_key="key-1")
    assert same.uploads[0].extra_args == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "key-1"}


def test_default_bucket_prefix() -> None:
    plan = build(Session("us-west-2", BUCKET, default_bucket_prefix="team/a/"))
    assert plan.request["OutputDataConfig"]["S3OutputPath"] == f"s3://{BUCKET}/team/a/"
    assert plan.uploads[0].uri == f"s3://{BUCKET}/team/a/{JOB}/source/sourcedir.tar.gz"


def test_s3_source_dir_is_used_as_is() -> None:
    plan = build(source_dir="s3://code-bkt/prebuilt/sourcedir.tar.gz", entry_point="sub/train.py")
    assert plan.uploads == []
    hps = plan.request["HyperParameters"]
    assert hps["sagemaker_submit_directory"] == '"s3://code-bkt/prebuilt/sourcedir.tar.gz"'
    assert hps["sagemaker_program"] == '"sub/train.py"'


def test_no_source_dir_packages_the_entry_point_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES / "src" / "utils")
    for entry_point in ("../train.py", "helpers.py"):  # the file is packaged under its basename
        plan = build(source_dir=None, entry_point=entry_point)
        name = entry_point.rsplit("/", 1)[-1]
        assert plan.uploads[0].members == [name]
        assert plan.request["HyperParameters"]["sagemaker_program"] == f'"{name}"'


def test_entry_point_relative_to_source_dir() -> None:
    plan = build(entry_point="utils/helpers.py")
    assert plan.request["HyperParameters"]["sagemaker_program"] == '"utils/helpers.py"'


# ------------------------------------------------------------------------------ fields
def test_image_uri_overrides_and_metrics_need_a_version() -> None:
    req = request(image_uri="123.dkr.ecr.us-west-2.amazonaws.com/mine:1", framework_version=None,
                  py_version=None)
    assert req["AlgorithmSpecification"] == {"TrainingInputMode": "File",
                                             "TrainingImage": "123.dkr.ecr.us-west-2.amazonaws.com/mine:1"}
    req = request(image_uri="x/mine:1", framework_version="1.2.0")
    assert "EnableSageMakerMetricsTimeSeries" not in req["AlgorithmSpecification"]
    req = request(enable_sagemaker_metrics=False)
    assert req["AlgorithmSpecification"]["EnableSageMakerMetricsTimeSeries"] is False


def test_debugger_and_profiler_rules() -> None:
    assert "DebugHookConfig" not in request(debugger_hook_config=False)
    only_s3 = request(checkpoint_s3_uri="s3://b-1/ck")
    assert only_s3["DebugHookConfig"] == {"S3OutputPath": f"s3://{BUCKET}/", "CollectionConfigurations": []}
    assert only_s3["CheckpointConfig"] == {"S3Uri": "s3://b-1/ck"}
    custom = request(debugger_hook_config={"LocalPath": "/opt/ml/debug"})
    assert custom["DebugHookConfig"] == {"LocalPath": "/opt/ml/debug", "S3OutputPath": f"s3://{BUCKET}/",
                                         "CollectionConfigurations": []}
    trn = request(instance_type="ml.trn1.32xlarge", image_uri="x/pytorch-training-neuronx:2.1")
    assert trn["ProfilerConfig"] == {"DisableProfiler": True}
    assert "DebugHookConfig" in trn


def test_unsupported_debugger_region() -> None:
    session = Session("ap-southeast-3", "sagemaker-ap-southeast-3-123456789012")
    req = request(session, instance_type="ml.m5.xlarge")
    assert "DebugHookConfig" not in req
    assert req["ProfilerConfig"] == {"DisableProfiler": True}
    with pytest.raises(SpecError, match="does not support debugger"):
        request(session, instance_type="ml.m5.xlarge", debugger_hook_config={"LocalPath": "/x"})


def test_tags_output_compression_and_retry() -> None:
    assert request(tags=[{"Key": "a", "Value": "b"}])["Tags"] == [{"Key": "a", "Value": "b"}]
    assert request(tags={"n": 1})["Tags"] == [{"Key": "n", "Value": "1"}]
    req = request(disable_output_compression=True)
    assert req["OutputDataConfig"] == {"S3OutputPath": f"s3://{BUCKET}/", "CompressionType": "NONE"}
    for absent in ("Tags", "VpcConfig", "Environment", "RetryStrategy", "CheckpointConfig",
                   "EnableNetworkIsolation", "EnableManagedSpotTraining", "InputDataConfig"):
        assert absent not in request()


def test_training_input_fields() -> None:
    req = request(input_mode="Pipe", inputs={
        "train": {"s3_data": "s3://b-1/manifest", "s3_data_type": "AugmentedManifestFile",
                  "attribute_names": ["source-ref", "label"], "compression": "Gzip",
                  "record_wrapping": "RecordIO", "input_mode": "File", "shuffle_config": {"seed": 7}},
        "test": "s3://b-1/test"})
    assert req["AlgorithmSpecification"]["TrainingInputMode"] == "Pipe"  # a dict does not override it
    assert req["InputDataConfig"][0] == {
        "DataSource": {"S3DataSource": {"S3DataType": "AugmentedManifestFile", "S3Uri": "s3://b-1/manifest",
                                        "S3DataDistributionType": "FullyReplicated",
                                        "AttributeNames": ["source-ref", "label"]}},
        "CompressionType": "Gzip", "RecordWrapperType": "RecordIO", "InputMode": "File",
        "ShuffleConfig": {"Seed": 7}, "ChannelName": "train"}


# ------------------------------------------------------------------------------ local runtime
def test_local_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    session = Session("us-west-2", f"file://{tmp_path}/store", default_bucket_prefix="p", local=True)
    plan = build(session, instance_type="local",
                 inputs={"train": "data", "test": f"file://{tmp_path}/test", "s3": "s3://b-1/x"})
    req = plan.request
    uris = [c["DataSource"]["S3DataSource"]["S3Uri"] for c in req["InputDataConfig"]]
    assert uris == [f"file://{tmp_path}/data", f"file://{tmp_path}/test", "s3://b-1/x"]
    assert req["AlgorithmSpecification"]["TrainingImage"].endswith("pytorch-training:2.3.0-cpu-py311")
    assert req["OutputDataConfig"]["S3OutputPath"] == f"file://{tmp_path}/store/p/"
    assert plan.uploads[0].uri == f"file://{tmp_path}/store/p/{JOB}/source/sourcedir.tar.gz"
    assert plan.uploads[0].extra_args == {}
    gpu = request(session, instance_type="local_gpu")
    assert gpu["AlgorithmSpecification"]["TrainingImage"].endswith("2.3.0-gpu-py311")


@pytest.mark.parametrize("inputs, field, words", [
    ("file:///data/train", "inputs", "upload_data"),
    ({"train": "data/train"}, "inputs[train]", "upload_data"),
    ({"train": {"s3_data": "file:///x"}}, "inputs[train].s3_data", "upload_data"),
])
def test_local_inputs_refused_on_aws(inputs: Any, field: str, words: str) -> None:
    with pytest.raises(SpecError, match=words) as err:
        build(inputs=inputs)
    assert err.value.field == field


@pytest.mark.parametrize("overrides, session, field", [
    ({"output_path": "file:///tmp/out"}, US_WEST_2, "output_path"),
    ({"instance_type": "local"}, US_WEST_2, "instance_type"),
    ({}, Session("us-west-2", "file:///tmp/store"), "default_bucket"),
    ({}, Session("us-west-2", ""), "default_bucket"),
    ({}, Session("us-west-2", "s3://bucket"), "default_bucket"),
    ({}, Session("mars", BUCKET), "region"),
])
def test_session_errors(overrides: dict[str, Any], session: Session, field: str) -> None:
    with pytest.raises(SpecError) as err:
        build(session, **overrides)
    assert err.value.field == field


# ------------------------------------------------------------------------------ errors needing files / data
def test_unknown_framework_version_lists_supported() -> None:
    with pytest.raises(SpecError, match=r"Supported .*2\.3\.0") as err:
        build(framework_version="9.9.9")
    assert err.value.field == "framework_version"


def test_py_version_not_available() -> None:
    with pytest.raises(SpecError, match="py311") as err:
        build(framework_version="1.8.0", py_version="py311")
    assert err.value.field == "py_version"


def test_entry_point_not_in_source_dir() -> None:
    with pytest.raises(SpecError) as err:
        build(entry_point="missing.py")
    assert f'No file named "missing.py" was found in directory "{SRC}".' in str(err.value)


def test_source_dir_missing(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist") as err:
        build(source_dir=str(tmp_path / "nope"))
    assert err.value.field == "source_dir"


def test_job_name_checked() -> None:
    with pytest.raises(SpecError, match="63"):
        build(job_name="x" * 64)
    with pytest.raises(SpecError, match="pattern|letters"):
        build(job_name="bad_name")


def test_too_many_hyperparameters_counting_reserved_ones() -> None:
    build(hyperparameters={f"k{i}": i for i in range(95)})
    with pytest.raises(SpecError, match="at most 100"):
        build(hyperparameters={f"k{i}": i for i in range(96)})


# ------------------------------------------------------------------------------ programs and fields
def test_entry_point_symlinked_out_of_source_dir_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.py").write_text("print('evil')\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("print('ok')\n")
    (src / "evil.py").symlink_to(outside / "evil.py")
    (src / "lib").symlink_to(outside)
    for entry_point in ("evil.py", "lib/evil.py"):
        with pytest.raises(SpecError, match="resolves outside source_dir") as err:
            build(source_dir=str(src), entry_point=entry_point)
        assert err.value.field == "entry_point" and err.value.value == entry_point
        assert str(outside / "evil.py") in str(err.value)
    assert build(source_dir=str(src)).request["HyperParameters"]["sagemaker_program"] == '"train.py"'


@pytest.mark.parametrize("overrides, field, words", [
    ({"role": "arn:aws:iam::123456789012:role/" + "r" * 2100}, "role", "at most 2048"),
    ({"role": "arn:aws:iam::12:role/x"}, "role", "pattern"),
    ({"image_uri": "i" * 256}, "image_uri", "at most 255"),
    ({"tags": {f"k{i}": "v" for i in range(51)}}, "tags", "at most 50 (it has 51)"),
    ({"tags": {"aws:cost-center": "1"}}, "tags", "reserved for AWS"),
    ({"max_run": 29 * 24 * 3600}, "max_run", "28 days"),
    ({"max_retry_attempts": 31}, "max_retry_attempts", "at most 30"),
    ({"max_retry_attempts": 0}, "max_retry_attempts", "at least 1"),
    ({"instance_type": "ml.m5.xlarg"}, "instance_type", "did you mean 'ml.m5.xlarge'"),
    ({"keep_alive_period_in_seconds": 21601}, "keep_alive_period_in_seconds", "at most 21600"),
    ({"metric_definitions": ({"Name": "loss", "Regex": "loss=(["},)}, "metric_definitions", "'loss'"),
    ({"inputs": {"train": {"s3_data": "s3://b-1/x", "content_type": "c" * 257}}}, "inputs[train]",
     "at most 256"),
    ({"subnets": tuple(f"s-{i}" for i in range(17)), "security_group_ids": ("sg-1",)}, "subnets", "at most 16"),
])
def test_errors_name_the_argument_the_user_gave(overrides: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        build(**overrides)
    assert err.value.field == field
    assert words in str(err.value) and "(as CreateTrainingJob." in str(err.value)
    assert "\n" not in str(err.value)


def test_a_bad_job_name_is_blamed_on_what_it_was_made_from() -> None:
    with pytest.raises(SpecError) as err:
        build(job_name="bad_base-2024-01-02-03-04-05-678", base_job_name="bad_base")
    assert (err.value.field, err.value.value) == ("base_job_name", "bad_base")
    image = "123456789012.dkr.ecr.us-west-2.amazonaws.com/my_repo:1"
    with pytest.raises(SpecError) as err:
        build(job_name="my_repo-2024-01-02-03-04-05-678", image_uri=image)
    assert (err.value.field, err.value.value) == ("image_uri", image)
    assert "set base_job_name" in str(err.value)
    with pytest.raises(SpecError) as err:
        build(job_name="bad_name", base_job_name="good")
    assert err.value.field == "job_name"
