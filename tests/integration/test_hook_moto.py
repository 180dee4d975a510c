"""The hook on the AWS path, against moto's server mode on loopback through an AIRFLOW_CONN_* connection."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from airflow_sm_pytorch.exceptions import RequestRejected, SpecError
from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook
from airflow_sm_pytorch.specs import TrainingSpec
from tests.conftest import boto_client

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


def _spec(source_dir, **overrides):
    kwargs = dict(entry_point="train.py", source_dir=str(source_dir), role=ROLE, instance_type="ml.m5.xlarge",
                  instance_count=1, framework_version="2.6.0", py_version="py312", hyperparameters={"epochs": 2},
                  inputs={"train": "s3://data-bucket/train"})
    kwargs.update(overrides)
    return TrainingSpec.from_dict(kwargs)


@pytest.fixture
def source_dir(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("print('hi')\n")
    (src / "requirements.txt").write_text("numpy\n")
    return src


def _keys(url, bucket):
    return [o["Key"] for o in boto_client("s3", url).list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_default_bucket_is_the_sdks_and_is_created_by_the_first_upload_only(moto_conn, moto_reset, tmp_path):
    hook = SageMakerPyTorchHook(aws_conn_id=moto_conn)
    assert hook.default_bucket == "sagemaker-us-east-1-123456789012"
    assert not hook.is_local
    s3 = boto_client("s3", moto_reset)
    with pytest.raises(ClientError):  # naming it created nothing
        s3.head_bucket(Bucket=hook.default_bucket)
    (tmp_path / "a.csv").write_text("1\n")
    hook.upload_data(tmp_path / "a.csv", key_prefix="x")
    s3.head_bucket(Bucket=hook.default_bucket)


def test_submit_creates_once_then_attaches(moto_conn, moto_reset, source_dir):
    hook = SageMakerPyTorchHook(aws_conn_id=moto_conn)
    plan = hook.plan_training(_spec(source_dir), job_name="job-once")
    first, created = hook.submit_training(plan)
    assert created and first["TrainingJobName"] == "job-once"
    # moto accepted the exact request: what it stored is what we sent
    assert first["HyperParameters"] == plan.request["HyperParameters"]
    assert first["AlgorithmSpecification"]["TrainingImage"] == plan.request["AlgorithmSpecification"]["TrainingImage"]

    again, created = SageMakerPyTorchHook(aws_conn_id=moto_conn).submit_training(plan)
    assert not created and again["TrainingJobArn"] == first["TrainingJobArn"]
    jobs = boto_client("sagemaker", moto_reset).list_training_jobs()["TrainingJobSummaries"]
    assert [j["TrainingJobName"] for j in jobs] == ["job-once"]


def test_upload_is_skipped_when_the_same_content_is_there(moto_conn, moto_reset, source_dir):
    hook = SageMakerPyTorchHook(aws_conn_id=moto_conn)
    plan = hook.plan_training(_spec(source_dir), job_name="job-upload")
    assert hook.upload_plan(plan) == [plan.uploads[0].uri]
    assert hook.upload_plan(hook.plan_training(_spec(source_dir), job_name="job-upload")) == []
    (source_dir / "train.py").write_text("print('changed')\n")
    changed = hook.plan_training(_spec(source_dir), job_name="job-upload")
    assert hook.upload_plan(changed) == [changed.uploads[0].uri]
    head = boto_client("s3", moto_reset).head_object(Bucket=hook.default_bucket,
                                                    Key="job-upload/source/sourcedir.tar.gz")
    assert head["ServerSideEncryption"] == "aws:kms"


def test_bad_input_fails_before_anything_is_uploaded(moto_conn, moto_reset, source_dir):
    hook = SageMakerPyTorchHook(aws_conn_id=moto_conn)
    with pytest.raises(SpecError, match="hyperparameters"):
        hook.plan_training(_spec(source_dir, hyperparameters={"sagemaker_program": "x.py"}), job_name="bad")
    with pytest.raises(SpecError, match="upload it first"):
        hook.plan_training(_spec(source_dir, inputs=str(source_dir)), job_name="bad")
    with pytest.raises(ClientError):  # planning never creates the bucket, let alone uploads
        boto_client("s3", moto_reset).head_bucket(Bucket=hook.default_bucket)


def test_service_errors_are_translated_at_the_hook(moto_conn):
    hook = SageMakerPyTorchHook(aws_conn_id=moto_conn)
    assert hook.find_training_job("does-not-exist") is None
    with pytest.raises(RequestRejected) as err:
        hook.describe_training_job("does-not-exist")
    assert err.value.code == "ValidationException"


def test_upload_data_returns_the_sdk_style_uri(moto_conn, moto_reset, tmp_path):
    data = tmp_path / "train"
    (data / "sub").mkdir(parents=True)
    (data / "a.csv").write_text("1\n")
    (data / "sub" / "b.csv").write_text("2\n")
    hook = SageMakerPyTorchHook(aws_conn_id=moto_conn)
    uri = hook.upload_data(data, key_prefix="data/train")
    assert uri == "s3://sagemaker-us-east-1-123456789012/data/train"
    assert sorted(_keys(moto_reset, hook.default_bucket)) == ["data/train/a.csv", "data/train/sub/b.csv"]
    assert hook.upload_data(data / "a.csv", key_prefix="one") == \
        "s3://sagemaker-us-east-1-123456789012/one/a.csv"


def test_uploads_to_the_generated_default_bucket_name_its_owner_as_the_sdk_does(moto_conn, source_dir):
    hook = SageMakerPyTorchHook(aws_conn_id=moto_conn)
    plan = hook.plan_training(_spec(source_dir), job_name="job-owner")
    assert "ExpectedBucketOwner" not in plan.uploads[0].extra_args  # plan is offline
    assert hook._upload_args(plan.uploads[0]) == {"ServerSideEncryption": "aws:kms",
                                                  "ExpectedBucketOwner": "123456789012"}
    assert hook.upload_plan(plan) == [plan.uploads[0].uri]  # moto accepts the owner check


IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.6.0-cpu-py312"


def test_one_generic_path_creates_any_resource_once_and_waits_on_its_acceptors(moto_conn):
    """airflow_sm_pytorch.hooks.resources: models, configs and endpoints go the training job's way."""
    from airflow_sm_pytorch.hooks.resources import RESOURCES

    hook = SageMakerPyTorchHook(aws_conn_id=moto_conn)
    assert hook.describe("Endpoint", "nope") is None and hook.describe("Model", "nope") is None
    model = {"ModelName": "m1", "ExecutionRoleArn": ROLE,
             "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": "s3://data-bucket/model.tar.gz"}}
    first, created = hook.create_once("Model", model)
    assert created and first["ModelName"] == "m1"
    again, created = SageMakerPyTorchHook(aws_conn_id=moto_conn).create_once("Model", model)
    assert not created and again["ModelArn"] == first["ModelArn"]
    config = {"EndpointConfigName": "c1", "ProductionVariants": [
        {"VariantName": "AllTraffic", "ModelName": "m1", "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.xlarge", "InitialVariantWeight": 1}]}
    hook.create_once("EndpointConfig", config)
    hook.create_once("Endpoint", {"EndpointName": "e1", "EndpointConfigName": "c1"})
    desc = hook.wait_for("Endpoint", "e1", poll_interval=0.01, timeout=30)
    assert desc["EndpointStatus"] == "InService" and RESOURCES["Endpoint"].outcome(desc) == "success"
    assert RESOURCES["Endpoint"].outcome({"EndpointStatus": "Creating"}) == "retry"
    assert RESOURCES["TrainingJob"].outcome({"TrainingJobStatus": "Stopped"}) == "failure"
