"""``TrainingSpec``: what is refused at construction (no filesystem, no session), with field and fix."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_sm_pytorch.exceptions import SpecError
from airflow_sm_pytorch.specs import TrainingSpec, iter_channels, parse_s3_uri, uri_kind

pytestmark = pytest.mark.fast  # the quick lane: scripts/test.sh -m fast

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BASE: dict[str, Any] = dict(entry_point="train.py", source_dir="src", role=ROLE, instance_type="ml.m5.xlarge",
                            instance_count=1, framework_version="2.3.0", py_version="py311")


def make(**overrides: Any) -> TrainingSpec:
    return TrainingSpec(**{**BASE, **overrides})


def test_valid_spec_and_round_trip() -> None:
    spec = make(hyperparameters={"epochs": 1}, subnets=("s-1",), security_group_ids=("sg-1",))
    assert TrainingSpec.from_dict(spec.to_dict()) == spec


def test_unknown_key_suggests_the_close_one() -> None:
    with pytest.raises(SpecError, match="did you mean 'instance_type'"):
        TrainingSpec.from_dict({**BASE, "instance_typ": "ml.m5.xlarge"})


@pytest.mark.parametrize("overrides, field, words", [
    # SDK messages, kept verbatim
    ({"role": None}, "role", "An AWS IAM role is required to create an estimator"),
    ({"framework_version": None}, "framework_version",
     "framework_version or py_version was None, yet image_uri was also None"),
    ({"py_version": None}, "py_version", "Either specify both framework_version and py_version"),
    ({"entry_point": "s3://b-1/train.py"}, "entry_point",
     "Invalid entry point script: s3://b-1/train.py. Must be a path to a local file."),
    ({"entry_point": None}, "entry_point", "Argument entry_point must be set"),
    ({"subnets": ("subnet-1",)}, "security_group_ids", "both subnets and security_group_ids must be set"),
    ({"security_group_ids": ("sg-1",)}, "subnets", "both subnets and security_group_ids must be set"),
    ({"instance_type": "local_gpu", "instance_count": 2}, "instance_count", "Local GPU"),
    # ours
    ({"role": "SageMakerRole"}, "role", "full ARN"),
    ({"instance_type": None}, "instance_type", "instance_type must be set"),
    ({"instance_count": 0}, "instance_count", "1 or more"),
    ({"instance_count": "1"}, "instance_count", "integer"),
    ({"framework_version": 2.3}, "framework_version", "quote it"),
    ({"use_spot_instances": "yes"}, "use_spot_instances", "true or false"),
    ({"input_mode": "Stream"}, "input_mode", "FastFile"),
    ({"max_wait": 7200}, "max_wait", "use_spot_instances"),
    ({"max_wait": 60, "use_spot_instances": True}, "max_wait", ">= max_run"),
    ({"use_spot_instances": True}, "max_wait", "needs max_wait"),
    ({"job_name": "x" * 64}, "job_name", "at most 63"),
    ({"job_name": "has_underscore"}, "job_name", "a-zA-Z0-9"),
    ({"tags": "team=ml"}, "tags", "Key"),
    ({"tags": [{"key": "a", "value": "b"}]}, "tags", "Key"),
    ({"tags": [("a", "b")]}, "tags", "Key"),
    ({"environment": {"1BAD": "x"}}, "environment[1BAD]", "[a-zA-Z_][a-zA-Z0-9_]*"),
    ({"environment": {"A-B": "x"}}, "environment[A-B]", "[a-zA-Z_][a-zA-Z0-9_]*"),
    ({"environment": {"A": 1}}, "environment[A]", "quote it"),
    ({"environment": {"A": "x" * 513}}, "environment[A]", "at most 512"),
    ({"environment": {f"K{i}": "v" for i in range(101)}}, "environment", "at most 100"),
    ({"hyperparameters": {"obj": object()}}, "hyperparameters[obj]", "JSON-serialisable"),
    ({"hyperparameters": {"sagemaker_program": "x.py"}}, "hyperparameters[sagemaker_program]", "rename it"),
    ({"hyperparameters": {"sagemaker_anything": 1}}, "hyperparameters[sagemaker_anything]", "rename it"),
    ({"hyperparameters": {"mp_parameters": {}}}, "hyperparameters[mp_parameters]", "rename it"),
    ({"hyperparameters": {"big": "x" * 2500}}, "hyperparameters[big]", "at most 2500"),
    ({"hyperparameters": {f"k{i}": i for i in range(96)}}, "hyperparameters", "at most 100"),
    ({"hyperparameters": [1, 2]}, "hyperparameters", "mapping"),
    ({"output_path": "s3://"}, "output_path", "has no bucket"),
    ({"output_path": "s3:///key"}, "output_path", "has no bucket"),
    ({"output_path": "s3://Bad_Bucket/x"}, "output_path", "not a valid S3 bucket name"),
    ({"checkpoint_s3_uri": "gs://b-1/ck"}, "checkpoint_s3_uri", 'must start with "s3://" or "file://"'),
    ({"code_location": "local/dir"}, "code_location", "S3 or FILE URI"),
    ({"source_dir": "s3://ab"}, "source_dir", "not a valid S3 bucket name"),
    ({"source_dir": "s3://b-1/c.tar.gz", "dependencies": ("lib",)}, "dependencies", "ignored"),
    ({"metric_definitions": ({"Name": "loss"},)}, "metric_definitions", "Regex"),
    ({"debugger_hook_config": "on"}, "debugger_hook_config", "mapping"),
    ({"distribution": {"torchrun": {"enabled": True}}}, "distribution.torchrun",
     "did you mean 'torch_distributed'?"),
    ({"distribution": ["torch_distributed"]}, "distribution", "use a mapping"),
    # programs only from the code dir
    ({"entry_point": "/etc/passwd"}, "entry_point", "relative to source_dir (src), e.g. 'passwd'"),
    ({"entry_point": "/etc/passwd", "source_dir": None}, "entry_point",
     "give source_dir (the directory that holds the script) and entry_point relative to it"),
    ({"entry_point": "../outside/evil.py"}, "entry_point", "stays inside it"),
    ({"entry_point": "lib/../../evil.py"}, "entry_point", "stays inside it"),
    ({"entry_point": "..", "source_dir": "s3://b-1/c.tar.gz"}, "entry_point", "stays inside it"),
    ({"entry_point": "/train.py", "source_dir": "s3://b-1/c.tar.gz"}, "entry_point", "relative to source_dir"),
    # SDK 2.257: instance_count=None fails in _prepare_resource_config at fit()
    ({"instance_count": None}, "instance_count", "instance_count and instance_type must be set"),
])
def test_input_errors(overrides: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        make(**overrides)
    assert err.value.field == field
    assert words in str(err.value)
    assert str(err.value).startswith(f"{field}=")  # the value follows the field


def test_entry_points_inside_the_code_dir_pass() -> None:
    for entry_point in ("train.py", "pkg/train.py", "pkg/../train.py", "./train.py"):
        make(entry_point=entry_point)
        make(entry_point=entry_point, source_dir="s3://b-1/code/sourcedir.tar.gz")
    make(entry_point="../scripts/train.py", source_dir=None)  # packaged as train.py, as the SDK does


def test_omitted_instance_count_is_refused_with_the_fix() -> None:
    spec = {k: v for k, v in BASE.items() if k != "instance_count"}
    with pytest.raises(SpecError) as err:
        TrainingSpec.from_dict(spec)
    assert err.value.field == "instance_count" and err.value.value is None
    assert "add instance_count: 1" in str(err.value)


def test_too_many_environment_variables_prints_them() -> None:
    env = {f"K{i}": "v" for i in range(101)}
    with pytest.raises(SpecError) as err:
        make(environment=env)
    assert err.value.value == env and "(it has 101)" in str(err.value)


@pytest.mark.parametrize("inputs, field, words", [
    ({"bad name": "s3://b-1/x"}, "inputs[bad name]", r"[A-Za-z0-9\.\-_]+"),
    ({"c" * 65: "s3://b-1/x"}, f"inputs[{'c' * 65}]", "at most 64"),
    ({1: "s3://b-1/x", "1": "s3://b-1/y"}, "inputs[1]", "distinct name"),
    ({"train": "http://example.com/data"}, "inputs[train]", 'must start with "s3://" or "file://"'),
    ("gs://bucket/data", "inputs", "S3 or FILE URI"),
    ({"train": "s3://"}, "inputs[train]", "has no bucket"),
    ({"train": {"uri": "s3://b-1/x"}}, "inputs[train].uri", "not a TrainingInput argument"),
    ({"train": {"s3_data": "s3://b-1/x", "distribution": "Sharded"}}, "inputs[train].distribution",
     "ShardedByS3Key"),
    ({"train": {"content_type": "text/csv"}}, "inputs[train].s3_data", "is required"),
    (["s3://b-1/x"], "inputs", "mapping of channel name"),
])
def test_channel_errors(inputs: Any, field: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        make(inputs=inputs)
    assert err.value.field == field
    assert words in str(err.value)


def test_code_channel_clashes_with_network_isolation() -> None:
    make(inputs={"code": "s3://b-1/x"})  # fine without isolation
    with pytest.raises(SpecError, match="duplicate channel") as err:
        make(inputs={"code": "s3://b-1/x"}, enable_network_isolation=True)
    assert err.value.field == "inputs[code]"


def test_iter_channels_shapes() -> None:
    assert iter_channels(None) == ([], False)
    assert iter_channels("s3://b-1/x") == ([("training", {"s3_data": "s3://b-1/x"})], False)
    assert iter_channels({"s3_data": "s3://b-1/x", "input_mode": "Pipe"}) == (
        [("training", {"s3_data": "s3://b-1/x", "input_mode": "Pipe"})], True)
    assert iter_channels({"a": "s3://b-1/x", "b": "data/b"})[0] == [
        ("a", {"s3_data": "s3://b-1/x"}), ("b", {"s3_data": "data/b"})]


def test_uri_helpers() -> None:
    assert [uri_kind(u) for u in ("s3://b/k", "S3://b/k", "file:///x", "data/x", "/abs", "https://x")] == [
        "s3", "s3", "file", "path", "path", "other"]
    assert parse_s3_uri("s3://my-bucket/a/b", "f") == ("my-bucket", "a/b")
    assert parse_s3_uri("s3://my-bucket", "f") == ("my-bucket", "")


@pytest.mark.parametrize("fields, field", [
    ({"target_attribute_name": "label"}, "inputs[train].target_attribute_name"),
    ({"shuffle_config": "often"}, "inputs[train].shuffle_config"),
    ({"attribute_names": "label"}, "inputs[train].attribute_names"),
])
def test_training_input_argument_errors(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        make(inputs={"train": {"s3_data": "s3://b-1/x", **fields}})
    assert err.value.field == field
