"""``validate_request``: botocore's model checks plus the ``pattern`` checks botocore skips."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from airflow_sm_pytorch.builders.validation import validate_request
from airflow_sm_pytorch.exceptions import SpecError

VALID: dict[str, Any] = {
    "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "img:1"},
    "OutputDataConfig": {"S3OutputPath": "s3://bucket-1/"},
    "TrainingJobName": "job-1",
    "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
    "ResourceConfig": {"VolumeSizeInGB": 30, "InstanceCount": 1, "InstanceType": "ml.m5.xlarge"},
    "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
    "InputDataConfig": [{"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b-1/x"}},
                         "ChannelName": "train"}],
    "Environment": {"A_B": "1"},
}


def changed(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    request = copy.deepcopy(VALID)
    target = request
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return request


def test_valid_request_passes() -> None:
    validate_request("CreateTrainingJob", VALID)


@pytest.mark.parametrize("path, value, field, words", [
    (("TrainingJobName",), "bad_name", "CreateTrainingJob.TrainingJobName", "pattern"),
    (("RoleArn",), None, "CreateTrainingJob.RoleArn", "required"),
    (("ResourceConfig", "InstanceCount"), "1", "CreateTrainingJob.ResourceConfig.InstanceCount", "int"),
    (("StoppingCondition", "MaxRuntimeInSeconds"), 0,
     "CreateTrainingJob.StoppingCondition.MaxRuntimeInSeconds", "at least 1"),
    (("InputDataConfig", 0, "ChannelName"), "bad name", "CreateTrainingJob.InputDataConfig[0].ChannelName",
     "pattern"),
    (("Environment",), {"1A": "x"}, "CreateTrainingJob.Environment key", "pattern"),
    (("OutputDataConfig", "S3OutputPath"), "file:///tmp/out",
     "CreateTrainingJob.OutputDataConfig.S3OutputPath", "pattern"),
    (("Bogus",), 1, "CreateTrainingJob.Bogus", "remove it"),
])
def test_problems_name_the_field(path: tuple[Any, ...], value: Any, field: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        validate_request("CreateTrainingJob", changed(path, value))
    assert err.value.field == field
    assert words in str(err.value)


def test_file_uris_only_for_the_local_runtime() -> None:
    request = changed(("OutputDataConfig", "S3OutputPath"), "file:///tmp/out")
    validate_request("CreateTrainingJob", request, allow_file_uris=True)
    with pytest.raises(SpecError):
        validate_request("CreateTrainingJob", changed(("TrainingJobName",), "file:///x"),
                         allow_file_uris=True)


# ------------------------------------------------------------------------------ what botocore skips
@pytest.mark.parametrize("path, value, words", [
    (("Tags",), [{"Key": f"k{i}", "Value": "v"} for i in range(51)], "at most 50 (it has 51)"),
    (("HyperParameters",), {f"k{i}": "1" for i in range(101)}, "at most 100 (it has 101)"),
    (("RetryStrategy",), {"MaximumRetryAttempts": 31}, "at most 30"),
    (("ResourceConfig", "KeepAlivePeriodInSeconds"), 21601, "at most 21600"),
    (("AlgorithmSpecification", "TrainingImage"), "i" * 256, "at most 255"),
    (("StoppingCondition", "MaxRuntimeInSeconds"), 2_419_201, "at most 2419200 (28 days)"),
    (("AlgorithmSpecification", "TrainingInputMode"), "Stream", "'FastFile'"),
    (("InputDataConfig", 0, "InputMode"), "Stream", "'FastFile'"),
    (("InputDataConfig", 0, "DataSource", "S3DataSource", "S3DataDistributionType"), "Sharded",
     "ShardedByS3Key"),
    (("ResourceConfig", "InstanceType"), "ml.m5.xlarg", "did you mean 'ml.m5.xlarge'"),
    (("Tags",), [{"Key": "aws:owner", "Value": "me"}], "reserved for AWS"),
    (("Tags",), [{"Key": "AWS:owner", "Value": "me"}], "reserved for AWS"),
    (("Tags",), [{"Key": "team;ml", "Value": "me"}], "pattern"),
    (("StoppingCondition",), {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 3600}, ">= MaxRuntime"),
    (("AlgorithmSpecification", "MetricDefinitions"), [{"Name": "loss", "Regex": "loss=([0-9."}],
     "(metric 'loss') is not a valid regular expression"),
])
def test_limits_botocore_does_not_check(path: tuple[Any, ...], value: Any, words: str) -> None:
    with pytest.raises(SpecError) as err:
        validate_request("CreateTrainingJob", changed(path, value))
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_limits_at_the_edge_pass() -> None:
    validate_request("CreateTrainingJob", {
        **changed(("StoppingCondition",), {"MaxRuntimeInSeconds": 2_419_200, "MaxWaitTimeInSeconds": 2_419_200}),
        "Tags": [{"Key": f"k{i}", "Value": "ünïcode välue 1"} for i in range(50)],
        "RetryStrategy": {"MaximumRetryAttempts": 30},
        "HyperParameters": {f"k{i}": "1" for i in range(100)},
    })


def test_a_too_long_value_is_printed_not_its_length() -> None:
    role = "arn:aws:iam::123456789012:role/" + "r" * 2100
    for bad in (role, "arn:aws:iam::1"):
        with pytest.raises(SpecError) as err:
            validate_request("CreateTrainingJob", changed(("RoleArn",), bad))
        assert err.value.value == bad
        assert str(err.value).startswith("CreateTrainingJob.RoleArn=" + repr(bad)[:14])


def test_other_operations_are_checked_too() -> None:
    with pytest.raises(SpecError, match="at most 100") as err:
        validate_request("ListTrainingJobs", {"MaxResults": 101})
    assert err.value.field == "ListTrainingJobs.MaxResults"
    with pytest.raises(SpecError, match="'CreationTime'"):
        validate_request("ListTrainingJobs", {"SortBy": "Bogus"})
    validate_request("ListTrainingJobs", {"MaxResults": 100, "SortBy": "CreationTime"})


def test_local_instance_types_only_for_the_local_runtime() -> None:
    for instance_type in ("local", "local_gpu"):
        request = changed(("ResourceConfig", "InstanceType"), instance_type)
        validate_request("CreateTrainingJob", request, allow_file_uris=True)
        with pytest.raises(SpecError, match="local runtime"):
            validate_request("CreateTrainingJob", request)
    with pytest.raises(SpecError):
        validate_request("CreateTrainingJob", changed(("ResourceConfig", "InstanceType"), "gpu"),
                         allow_file_uris=True)


def test_fields_name_the_users_argument() -> None:
    fields = {"RoleArn": "role", "ResourceConfig.InstanceCount": "instance_count", "Tags": "tags",
              "InputDataConfig[0]": "inputs[train]"}
    cases = [
        (("RoleArn",), "arn:aws", "role"),
        (("ResourceConfig", "InstanceCount"), "2", "instance_count"),
        (("Tags",), [{"Key": "aws:x", "Value": "v"}], "tags"),
        (("InputDataConfig", 0, "InputMode"), "Stream", "inputs[train]"),
        (("ResourceConfig", "VolumeSizeInGB"), -1, "CreateTrainingJob.ResourceConfig.VolumeSizeInGB"),
    ]
    for path, value, field in cases:
        with pytest.raises(SpecError) as err:
            validate_request("CreateTrainingJob", changed(path, value), fields=fields)
        assert err.value.field == field
        if not field.startswith("CreateTrainingJob"):
            assert "(as CreateTrainingJob." in str(err.value)
