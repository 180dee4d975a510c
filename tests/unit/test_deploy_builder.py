"""``build_deploy_plan`` against what SageMaker SDK v2.257.6 was seen to send for deploy (sdk-requests §4)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from airflow_sm_pytorch.builders.deploy import (
    EIA_WARNING,
    DeployPlan,
    RepackUpload,
    TrainedModel,
    build_deploy_plan,
    framework_from_image,
    trained_model,
    trained_model_from_estimator,
)
from airflow_sm_pytorch.builders.training import Session, Upload, build_training_plan
from airflow_sm_pytorch.exceptions import SpecError
from airflow_sm_pytorch.specs import DeploySpec, ModelSpec, TrainingSpec

pytestmark = pytest.mark.fast  # the quick lane: scripts/test.sh -m fast

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SRC = str(FIXTURES / "builders" / "src")
BYOM = str(FIXTURES / "deploy" / "byom")
JOB = "pytorch-training-2024-01-02-03-04-05-678"
T = 1704164645.001  # 2024-01-02 03:04:05.001 UTC: the §4.1 deploy's timestamp
ROLE = "arn:aws:iam::123456789012:role/R"
BUCKET = "sagemaker-us-west-2-123456789012"
US_WEST_2 = Session(region="us-west-2", default_bucket=BUCKET)
DLC = "763104351884.dkr.ecr.us-west-2.amazonaws.com"
MODEL_DATA = "s3://my-bucket/models/model.tar.gz"
ON_G4 = DeploySpec(initial_instance_count=1, instance_type="ml.g4dn.xlarge")


def captured() -> dict[str, Any]:
    data = json.loads((FIXTURES / "deploy" / "sdk_4_1_trained_job.json").read_text())
    data.pop("_comment")
    return data


def estimator(**overrides: Any) -> TrainingSpec:
    base: dict[str, Any] = dict(entry_point="train.py", source_dir=SRC, role=ROLE, instance_type="ml.p3.2xlarge",
                                instance_count=1, framework_version="2.3.0", py_version="py311")
    return TrainingSpec(**{**base, **overrides})


def byom(**overrides: Any) -> ModelSpec:
    base: dict[str, Any] = dict(model_data=MODEL_DATA, role=ROLE, entry_point="inference.py", source_dir=BYOM,
                                framework_version="2.3.0", py_version="py311")
    return ModelSpec(**{**base, **overrides})


def trained(**overrides: Any) -> TrainedModel:
    return trained_model_from_estimator(estimator(**overrides), US_WEST_2, training_job_name=JOB)


def plan(source: Any = None, deploy: DeploySpec = ON_G4, session: Session = US_WEST_2, **kwargs: Any) -> DeployPlan:
    return build_deploy_plan(trained() if source is None else source, deploy, session, now=T, **kwargs)


# ------------------------------------------------------------------------------ §4.1 parity
def test_captured_trained_job_deploy() -> None:
    expected = captured()
    result = plan().to_json()
    for op in ("CreateModel", "CreateEndpointConfig", "CreateEndpoint"):
        assert result[op] == expected[op], op
        assert json.dumps(result[op]) == json.dumps(expected[op]), f"{op}: key order"
    [upload] = plan().uploads
    assert isinstance(upload, RepackUpload)
    assert upload.uri == expected["CreateModel"]["PrimaryContainer"]["ModelDataUrl"]
    assert upload.repack_of == f"s3://{BUCKET}/{JOB}/output/model.tar.gz"
    assert upload.code_archive == f"s3://{BUCKET}/{JOB}/source/sourcedir.tar.gz"
    assert upload.files == [] and not upload.replace_code
    # The SDK's repacked archive, less the root entry and the model's own file.
    assert upload.members == [m for m in expected["repacked_members"] if m.startswith("code")]
    assert upload.extra_args == expected["repack_extra_args"]
    assert result["uploads"] == [{"uri": upload.uri, "members": upload.members, "repack_of": upload.repack_of}]


def test_trained_job_from_its_description_matches_the_estimator() -> None:
    request = build_training_plan(estimator(), US_WEST_2, job_name=JOB).request
    description = {**request, "TrainingJobStatus": "Completed",
                   "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/{JOB}/output/model.tar.gz"}}
    from_description = plan(trained_model(description))
    assert from_description.to_json()["CreateModel"] == captured()["CreateModel"]
    assert from_description.uploads[0].members == ["code"]  # the code archive's are known at repack time


def test_trained_job_reuses_training_tags_kms_and_vpc() -> None:
    key = "arn:aws:kms:us-west-2:123456789012:key/k"
    source = trained(tags={"team": "ml"}, output_kms_key=key, subnets=("subnet-1",), security_group_ids=("sg-1",))
    result = plan(source)
    assert result.create_model["Tags"] == [{"Key": "team", "Value": "ml"}]
    assert result.create_model["VpcConfig"] == {"Subnets": ["subnet-1"], "SecurityGroupIds": ["sg-1"]}
    assert result.create_endpoint_config["Tags"] == result.create_endpoint["Tags"] == [{"Key": "team", "Value": "ml"}]
    assert result.uploads[0].extra_args == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key}
    own = plan(source, DeploySpec(initial_instance_count=1, instance_type="ml.m5.xlarge", tags={"a": "b"}))
    assert own.create_endpoint["Tags"] == [{"Key": "a", "Value": "b"}]


def test_explicit_names_win() -> None:
    result = plan(model_name="my-model", endpoint_name="my-endpoint")
    assert result.model_name == "my-model" and result.endpoint_name == result.endpoint_config_name == "my-endpoint"
    assert result.uploads[0].uri == f"s3://{BUCKET}/my-model/model.tar.gz"


def test_framework_from_image() -> None:
    assert framework_from_image(f"{DLC}/pytorch-training:2.3.0-gpu-py311") == ("2.3.0", "py311")
    assert framework_from_image("520713654638.dkr.ecr.us-west-2.amazonaws.com/sagemaker-pytorch:1.1.0-gpu-py3") \
        == ("1.1.0", "py3")
    assert framework_from_image(f"{DLC}/my-custom:latest") == (None, None)
    with pytest.raises(SpecError, match="didn't use image for requested framework"):
        framework_from_image(f"{DLC}/tensorflow-training:2.13-gpu-py310", "tf-job")


# ------------------------------------------------------------------------------ bring your own model
def test_pytorch_model_deploy() -> None:
    result = plan(byom())
    name = "pytorch-inference-2024-01-02-03-04-05-001"
    assert result.create_model == {
        "ModelName": name, "ExecutionRoleArn": ROLE,
        "PrimaryContainer": {
            "Image": f"{DLC}/pytorch-inference:2.3.0-gpu-py311",
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                            "SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "SAGEMAKER_REGION": "us-west-2"},
            "ModelDataUrl": f"s3://{BUCKET}/{name}/model.tar.gz"}}
    assert result.endpoint_name == name
    [upload] = result.uploads
    assert isinstance(upload, RepackUpload) and upload.replace_code and upload.code_archive is None
    assert upload.repack_of == MODEL_DATA
    assert upload.members == ["code", "code/inference.py", "code/requirements.txt"]
    assert [a for a, _ in upload.files] == ["code/inference.py", "code/requirements.txt"]


def test_user_env_first_workers_dependencies_and_prefix() -> None:
    session = Session(region="us-west-2", default_bucket=BUCKET, default_bucket_prefix="team")
    model = byom(env={"FOO": "bar", "SAGEMAKER_REGION": "x"}, model_server_workers=2, name="m1",
                 dependencies=(f"{SRC}/utils", f"{SRC}/requirements.txt"))
    result = plan(model, session=session)
    env = result.create_model["PrimaryContainer"]["Environment"]
    assert list(env) == ["FOO", "SAGEMAKER_REGION", "SAGEMAKER_PROGRAM", "SAGEMAKER_SUBMIT_DIRECTORY",
                         "SAGEMAKER_CONTAINER_LOG_LEVEL", "SAGEMAKER_MODEL_SERVER_WORKERS"]
    assert env["SAGEMAKER_REGION"] == "us-west-2" and env["SAGEMAKER_MODEL_SERVER_WORKERS"] == "2"
    assert result.uploads[0].uri == f"s3://{BUCKET}/team/m1/model.tar.gz"
    assert result.endpoint_name == "m1-2024-01-02-03-04-05-001"
    assert "code/lib/utils/helpers.py" in result.uploads[0].members
    assert "code/lib/requirements.txt" in result.uploads[0].members


def test_entry_point_only_and_code_location(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SpecError, match="absolute path"):
        byom(source_dir=None, entry_point=f"{BYOM}/inference.py")
    monkeypatch.chdir(BYOM)
    result = plan(byom(source_dir=None, entry_point="inference.py", code_location="s3://code-bkt/p", name="m"))
    [upload] = result.uploads
    assert upload.uri == "s3://code-bkt/p/m/model.tar.gz"
    assert upload.members == ["code", "code/inference.py"] and not upload.replace_code


def test_no_entry_point_sends_the_model_as_is() -> None:
    result = plan(byom(entry_point=None, source_dir=None))
    assert result.uploads == []
    assert result.create_model["PrimaryContainer"]["ModelDataUrl"] == MODEL_DATA
    assert result.create_model["PrimaryContainer"]["Environment"]["SAGEMAKER_PROGRAM"] == ""


def test_version_below_1_2_uploads_sourcedir_and_does_not_repack() -> None:
    result = plan(byom(framework_version="1.1.0", py_version="py3"), DeploySpec(
        initial_instance_count=1, instance_type="ml.m5.xlarge"))
    name = "sagemaker-pytorch-2024-01-02-03-04-05-001"
    code = f"s3://{BUCKET}/{name}/sourcedir.tar.gz"
    container = result.create_model["PrimaryContainer"]
    assert container["Image"] == "520713654638.dkr.ecr.us-west-2.amazonaws.com/sagemaker-pytorch:1.1.0-cpu-py3"
    assert container["ModelDataUrl"] == MODEL_DATA
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == code
    [upload] = result.uploads
    assert type(upload) is Upload and upload.uri == code
    assert upload.members == ["inference.py", "requirements.txt"]


def test_trained_1_1_job_points_at_its_sourcedir() -> None:
    result = plan(trained(framework_version="1.1.0", py_version="py3"))
    env = result.create_model["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_SUBMIT_DIRECTORY"] == f"s3://{BUCKET}/{JOB}/source/sourcedir.tar.gz"
    assert result.uploads == []
    assert result.create_model["PrimaryContainer"]["ModelDataUrl"] == f"s3://{BUCKET}/{JOB}/output/model.tar.gz"


def test_serverless_is_cpu_with_default_config() -> None:
    result = plan(byom(), DeploySpec(serverless_inference_config={}))
    assert result.create_model["PrimaryContainer"]["Image"] == f"{DLC}/pytorch-inference:2.3.0-cpu-py311"
    [variant] = result.create_endpoint_config["ProductionVariants"]
    assert variant == {"VariantName": "AllTraffic", "ModelName": result.model_name, "InitialVariantWeight": 1,
                       "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5}}


def test_eia_warns_that_elastic_inference_is_retired() -> None:
    deploy = DeploySpec(initial_instance_count=1, instance_type="ml.m5.xlarge", accelerator_type="ml.eia2.medium")
    with pytest.warns(UserWarning, match="Elastic Inference is retired"):
        result = plan(byom(framework_version="1.5.1", py_version="py3"), deploy)
    assert result.warnings == [EIA_WARNING.format("ml.eia2.medium")]
    assert result.create_model["PrimaryContainer"]["Image"] == f"{DLC}/pytorch-inference-eia:1.5.1-cpu-py3"
    assert result.create_endpoint_config["ProductionVariants"][0]["AcceleratorType"] == "ml.eia2.medium"


def test_optional_variant_and_config_fields() -> None:
    deploy = DeploySpec(initial_instance_count=2, instance_type="ml.m5.xlarge", volume_size=40,
                        model_data_download_timeout=600, container_startup_health_check_timeout=600,
                        kms_key="k", data_capture_config={"enable_capture": True})
    config = plan(byom(), deploy).create_endpoint_config
    assert config["ProductionVariants"][0]["VolumeSizeInGB"] == 40
    assert config["KmsKeyId"] == "k"
    assert config["DataCaptureConfig"] == {
        "EnableCapture": True, "InitialSamplingPercentage": 20,
        "DestinationS3Uri": f"s3://{BUCKET}/model-monitor/data-capture",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]}}


def test_local_runtime_accepts_paths_and_local_instance(tmp_path: Path) -> None:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"")
    session = Session(region="us-west-2", default_bucket=f"file://{tmp_path}/store", local=True)
    result = plan(byom(model_data=str(archive)), DeploySpec(initial_instance_count=1, instance_type="local"),
                  session)
    assert result.uploads[0].repack_of == f"file://{archive}"
    assert result.create_model["PrimaryContainer"]["ModelDataUrl"].startswith(f"file://{tmp_path}/store/")
    assert result.create_model["PrimaryContainer"]["Image"].endswith("pytorch-inference:2.3.0-cpu-py311")


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("overrides, field, words", [
    ({"model_data": "https://x/model.tar.gz"}, "model_data", 'must start with "s3://" or "file://"'),
    ({"model_data": None}, "model_data", "is required"),
    ({"role": None}, "role", "Role can not be null for deploying a model"),
    ({"entry_point": "../inference.py"}, "entry_point", "outside source_dir"),
    ({"entry_point": "sub/inference.py"}, "entry_point", "root of source_dir"),
    ({"py_version": None}, "py_version", "Either specify both framework_version and py_version"),
    ({"name": "bad_name"}, "name", "matching"),
])
def test_model_spec_errors(overrides: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        byom(**overrides)
    assert err.value.field == field and words in str(err.value)


@pytest.mark.parametrize("kwargs, field, words", [
    ({"initial_instance_count": 0, "instance_type": "ml.m5.xlarge"}, "initial_instance_count", "use 1 or more"),
    ({"initial_instance_count": 1}, "instance_type",
     "Must specify instance type and instance count unless using serverless inference"),
    ({"instance_type": "ml.m5.xlarge"}, "initial_instance_count", "Must specify instance type"),
    ({"initial_instance_count": 1, "instance_type": "ml.m5.xlarge", "endpoint_name": "my_endpoint"},
     "endpoint_name", "[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"),
    ({"serverless_inference_config": {"memory": 1}}, "serverless_inference_config.memory", "memory_size_in_mb"),
])
def test_deploy_spec_errors(kwargs: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        DeploySpec(**kwargs)
    assert err.value.field == field and words in str(err.value)


def test_unknown_deploy_argument_suggests_one() -> None:
    with pytest.raises(SpecError, match="did you mean 'instance_type'"):
        DeploySpec.from_dict({"instance_typ": "ml.m5.xlarge", "initial_instance_count": 1})


def test_version_without_inference_image_lists_supported() -> None:
    with pytest.raises(SpecError) as err:
        plan(byom(framework_version="2.8.0", py_version="py312"))
    assert err.value.field == "framework_version" and "2.6.0" in str(err.value)


def test_entry_point_missing_from_source_dir() -> None:
    with pytest.raises(SpecError, match='No file named "missing.py"'):
        plan(byom(entry_point="missing.py"))


def test_local_model_data_needs_upload_on_aws(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        plan(byom(model_data=str(tmp_path / "model.tar.gz")))
    assert err.value.field == "model_data" and "upload it first" in str(err.value)
    with pytest.raises(SpecError, match="only supported with the local runtime"):
        plan(byom(), DeploySpec(initial_instance_count=1, instance_type="local"))


def test_derived_name_too_long_is_refused_by_endpoint_name() -> None:
    with pytest.raises(SpecError) as err:
        plan(byom(), endpoint_name="e" * 64)
    assert err.value.field == "endpoint_name"


def test_request_validation_names_the_argument() -> None:
    with pytest.raises(SpecError) as err:
        plan(byom(), DeploySpec(initial_instance_count=1, instance_type="ml.m5.xlarge", volume_size=10_000))
    assert err.value.field == "volume_size" and "512" in str(err.value)


def test_job_without_artifacts() -> None:
    with pytest.raises(SpecError, match=re.escape("status InProgress")):
        trained_model({"TrainingJobName": JOB, "TrainingJobStatus": "InProgress"})
