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
