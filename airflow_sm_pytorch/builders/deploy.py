"""CreateModel / CreateEndpointConfig / CreateEndpoint for ``deploy``, field for field as SDK v2.257.6.

Two sources, one builder (contracts/sdk-requests.md §4):

* a bring-your-own model: :class:`ModelSpec` (``PyTorchModel(...)`` arguments);
* a trained job: :class:`TrainedModel`, what ``estimator.deploy`` hands ``PyTorchModel`` — from a
  ``DescribeTrainingJob`` response (:func:`trained_model`, what ``PyTorch.attach`` reads) or, offline,
  from the estimator's arguments and the job's name (:func:`trained_model_from_estimator`).

:func:`build_deploy_plan` returns the three requests and the uploads the hook must do first. Nothing is
downloaded or uploaded here: a repack is *described* (:class:`RepackUpload`) and done by the hook.
Framework versions >= 1.2 repack the code into ``model.tar.gz`` (``SAGEMAKER_SUBMIT_DIRECTORY`` =
``/opt/ml/model/code``); older ones upload ``sourcedir.tar.gz`` beside it and point at that.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_sm_pytorch.builders import hyperparameters as hp
from airflow_sm_pytorch.builders.images import base_name_from_image, inference_image_uri
from airflow_sm_pytorch.builders.naming import (
    base_from_name,
    sdk_job_name,
    validate_endpoint_name,
    validate_model_name,
)
from airflow_sm_pytorch.builders.training import (
    LOCAL_INSTANCE_TYPES,
    NETWORK_ISOLATION_SUBMIT_DIR,
    Session,
    Upload,
    _default_root,
    _extra_args,
    _join,
    _local_uri,
    _tags,
    build_training_plan,
    default_base_job_name,
)
from airflow_sm_pytorch.builders.validation import validate_request
from airflow_sm_pytorch.exceptions import SpecError
from airflow_sm_pytorch.packaging import SOURCEDIR_FILENAME, _walk, archive_members, sourcedir_files
from airflow_sm_pytorch.specs import DeploySpec, ModelSpec, TrainingSpec, parse_s3_uri, uri_kind

#: ``PyTorchModel._LOWEST_MMS_VERSION``: from this version on the code is repacked into the model.
LOWEST_REPACK_VERSION = (1, 2)
MODEL_CODE_DIR = "/opt/ml/model/code"
REPACKED_FILENAME = "model.tar.gz"
EIA_WARNING = ("accelerator_type {0!r}: Amazon Elastic Inference is retired (no new accelerators since "
               "April 2023) and SageMaker refuses it for new endpoints in most accounts; the request is "
               "built as SDK 2.257 builds it, with the pytorch-inference-eia image")
_SERVERLESS_DEFAULTS = {"memory_size_in_mb": 2048, "max_concurrency": 5}


@dataclasses.dataclass(frozen=True)
class RepackUpload(Upload):
    """``utils.repack_model``, described: the hook writes ``uri`` = the model at ``repack_of`` with
    ``code/`` built from ``code_archive`` (a sourcedir.tar.gz extracted into ``code/``) or, when
    ``replace_code``, with the model's own ``code/`` dropped, then ``files`` (``(arcname, path)``, arcnames
    under ``code/``) added. ``members`` lists the ``code/`` entries known now (the model's own members and,
    for a job description, the code archive's are only known at repack time)."""

    repack_of: str
    code_archive: str | None = None
    replace_code: bool = False


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """What ``estimator.deploy`` builds its ``PyTorchModel`` from, plus its defaults for ``deploy``."""

    model: ModelSpec
    base_name: str  # model and endpoint default to name_from_base(base_name) (one timestamp for both)
    tags: Any = None  # the estimator's tags: deploy(tags=None) uses them
    code_members: tuple[str, ...] | None = None  # sourcedir.tar.gz's members, when known


@dataclasses.dataclass(frozen=True)
class DeployPlan:
    create_model: dict[str, Any]
    create_endpoint_config: dict[str, Any]
    create_endpoint: dict[str, Any]
    uploads: list[Upload]
    warnings: list[str]

    @property
    def model_name(self) -> str:
        return str(self.create_model["ModelName"])

    @property
    def endpoint_name(self) -> str:
        return str(self.create_endpoint["EndpointName"])

    @property
    def endpoint_config_name(self) -> str:
        return str(self.create_endpoint_config["EndpointConfigName"])

    def to_json(self) -> dict[str, Any]:
        """What ``airflow-sm-pytorch plan deploy`` prints."""
        uploads = []
        for upload in self.uploads:
            entry: dict[str, Any] = {"uri": upload.uri, "members": list(upload.members)}
            if isinstance(upload, RepackUpload):
                entry["repack_of"] = upload.repack_of
            uploads.append(entry)
        return {"CreateModel": self.create_model, "CreateEndpointConfig": self.create_endpoint_config,
                "CreateEndpoint": self.create_endpoint, "uploads": uploads}


# ------------------------------------------------------------------------------- trained jobs
def trained_model(description: Mapping[str, Any], *, tags: Any = None) -> TrainedModel:
    """``PyTorch.attach(job).deploy``'s model, from a ``DescribeTrainingJob`` response (§4.3).

    ``tags`` are the job's tags (``ListTags``), which ``deploy`` reuses when given none.
    """
    job = description.get("TrainingJobName", "")
    artifacts = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if not artifacts:
        status = description.get("TrainingJobStatus", "unknown")
        raise SpecError("training_job", job, f"the job has no model artifacts (status {status}); deploy it "
                        "once it has Completed", problem="has no model")
    if (description.get("OutputDataConfig") or {}).get("CompressionType") == "NONE":
        raise SpecError("training_job", job, "deploying uncompressed model output "
                        "(disable_output_compression) is not supported yet; train with compressed output",
                        problem="is not supported")
    hps = description.get("HyperParameters") or {}
    try:
        entry_point = json.loads(hps[hp.SCRIPT_PARAM_NAME])
        source_dir = json.loads(hps[hp.DIR_PARAM_NAME])
        log_level = json.loads(hps.get(hp.CONTAINER_LOG_LEVEL_PARAM_NAME, "20"))
    except (KeyError, ValueError):
        raise SpecError("training_job", job, "deploy jobs started in script mode (an estimator with "
                        "entry_point), or give the model as model_data + entry_point", problem="has no "
                        f"{hp.SCRIPT_PARAM_NAME}/{hp.DIR_PARAM_NAME} hyperparameters") from None
    if source_dir == NETWORK_ISOLATION_SUBMIT_DIR:  # the code travelled as the "code" channel
        source_dir = next(c["DataSource"]["S3DataSource"]["S3Uri"] for c in description["InputDataConfig"]
                          if c["ChannelName"] == "code")
    image = description["AlgorithmSpecification"]["TrainingImage"]
    framework_version, py_version = framework_from_image(image, job)
    vpc = description.get("VpcConfig")
    model = ModelSpec(
        model_data=artifacts, role=description["RoleArn"], entry_point=entry_point, source_dir=source_dir,
        framework_version=framework_version, py_version=py_version,
        image_uri=None if framework_version else image, container_log_level=log_level,
        model_kms_key=(description.get("OutputDataConfig") or {}).get("KmsKeyId"),
        vpc_config={"Subnets": vpc["Subnets"], "SecurityGroupIds": vpc["SecurityGroupIds"]} if vpc else None,
    )
    return TrainedModel(model, base_from_name(job), tags)


def attach_params(description: Mapping[str, Any]) -> dict[str, Any]:
    """What ``PyTorch.attach(job)`` recovers from ``DescribeTrainingJob`` (§A4.3): the framework and Python
    versions read from the image, the entry point and source dir, and every hyperparameter JSON-decoded
    (``_tuning_objective_metric`` stays a string, as the SDK keeps it). Jobs that are not script-mode
    PyTorch jobs give None where the SDK would fail."""
    job = description.get("TrainingJobName", "")
    image = (description.get("AlgorithmSpecification") or {}).get("TrainingImage") or ""
    try:
        framework_version, py_version = framework_from_image(image, job)
    except SpecError:
        framework_version, py_version = None, None
    decoded: dict[str, Any] = {}
    for key, value in (description.get("HyperParameters") or {}).items():
        if key == "_tuning_objective_metric":
            decoded[key] = value.strip('"') if value.startswith('"') and value.endswith('"') else value
            continue
        try:
            decoded[key] = json.loads(value)
        except ValueError:
            decoded[key] = value
    return {"FrameworkVersion": framework_version, "PyVersion": py_version,
            "EntryPoint": decoded.get(hp.SCRIPT_PARAM_NAME), "SourceDir": decoded.get(hp.DIR_PARAM_NAME),
            "HyperParameters": decoded}


#: ``sagemaker.utils.ECR_URI_PATTERN`` and ``fw_utils.framework_name_from_image``'s name pattern.
_ECR_URI = re.compile(r"^(\d+)(\.)dkr(\.)ecr(\.)(.+)(\.)(.*)(/)(.*:.*)$")
_FRAMEWORK_IMAGE = re.compile(
    r"^(?:sagemaker(?:-rl)?-)?(tensorflow|mxnet|chainer|pytorch|pytorch-trcomp|scikit-learn|xgboost"
    r"|huggingface-tensorflow|huggingface-pytorch|huggingface-tensorflow-trcomp|huggingface-pytorch-trcomp)"
    r"(?:-)?(scriptmode|training)?:(.*)-(.*?)-(py2|py3\d*)(?:.*)$")


def framework_from_image(image: str, job: str = "") -> tuple[str | None, str | None]:
    """``PyTorch._prepare_init_params_from_job_description``: ``(framework_version, py_version)`` of a
    PyTorch DLC (``.../pytorch-training:2.3.0-gpu-py311`` -> ``("2.3.0", "py311")``); ``(None, None)``
    for an image it cannot read (the image is then reused as is); another framework's image is an error."""
    ecr = _ECR_URI.match(image)
    name = _FRAMEWORK_IMAGE.match(ecr.group(9)) if ecr else None
    if name is None:
        return None, None
    if name.group(1).split("-")[0] != "pytorch":
        raise SpecError("training_job", job, f"Training job: {job} didn't use image for requested framework "
                        f"({image}); deploy it with image_uri", problem="is not a PyTorch job")
    tag = re.match(r"^(.*)-(cpu|gpu)-(py2|py3\d*)$", f"{name.group(3)}-{name.group(4)}-{name.group(5)}")
    return (tag.group(1) if tag else None), name.group(5)


def trained_model_from_estimator(
    spec: TrainingSpec, session: Session, *, training_job_name: str
) -> TrainedModel:
    """``estimator.deploy``'s model after ``fit(job_name=training_job_name)``, derived offline: the model
    data is ``<output_path>/<job>/output/model.tar.gz`` and the code the job's ``sourcedir.tar.gz``."""
    plan = build_training_plan(spec, session, job_name=training_job_name)
    request = plan.request
    output = request["OutputDataConfig"]["S3OutputPath"]
    description = {**request, "ModelArtifacts": {
        "S3ModelArtifacts": _join(output, training_job_name, "output", REPACKED_FILENAME)}}
    trained = trained_model(description)
    model = dataclasses.replace(  # create_model passes what attach cannot know
        trained.model, image_uri=spec.image_uri, framework_version=spec.framework_version,
        py_version=spec.py_version, dependencies=tuple(spec.dependencies or ()),
        code_location=spec.code_location)
    members = tuple(plan.uploads[0].members) if plan.uploads else None
    return TrainedModel(model, default_base_job_name(spec, session.region), spec.tags, members)


# ------------------------------------------------------------------------------- pieces
def _version(text: str) -> tuple[int, ...]:
    try:
        numbers = [int(p) for p in text.split(".")]
    except ValueError:
        raise SpecError("framework_version", text, "use a PyTorch version such as '2.3.0'") from None
    while numbers and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def _names(
    source: ModelSpec | TrainedModel, deploy: DeploySpec, image: str, model_name: str | None,
    endpoint_name: str | None, now: float | None,
) -> tuple[str, str, str]:
    """(ModelName, EndpointName, the repack/code key's model part), as ``deploy`` chooses them."""
    if isinstance(source, TrainedModel):
        default = sdk_job_name(source.base_name, now)
        model = model_name or source.model.name or default
        return model, endpoint_name or deploy.endpoint_name or default, model
    model = model_name or source.name
    code = model or sdk_job_name(base_name_from_image(image), now)  # name_from_image, before the name
    base = base_from_name(model) if model else base_name_from_image(image)
    model = model or sdk_job_name(base, now)
    return model, endpoint_name or deploy.endpoint_name or sdk_job_name(base, now), code


def _code_key(model: ModelSpec, session: Session, name: str) -> str:
    """``model_code_key_prefix`` + ``determine_bucket_and_prefix``: where this model's code goes."""
    if model.code_location is None:
        return _join(_default_root(session), session.default_bucket_prefix, name)
    if uri_kind(model.code_location) == "file":
        return _join(model.code_location, name)
    bucket, prefix = parse_s3_uri(model.code_location, "code_location")
    return _join(f"s3://{bucket}", prefix, name)


def _code_files(model: ModelSpec) -> tuple[list[tuple[str, Path]], list[str]]:
    """``_create_or_update_code_dir``'s local part: ``(files under code/, code/ member names)``."""
    assert model.entry_point is not None
    files: list[tuple[str, Path]] = []
    dirs = ["code"]
    if model.source_dir and uri_kind(model.source_dir) == "path":
        files += [(f"code/{arc}", path) for arc, path in
                  sourcedir_files(entry_point=model.entry_point, source_dir=model.source_dir)]
    elif not model.source_dir:
        [(arc, path)] = sourcedir_files(entry_point=model.entry_point, source_dir=None)
        files.append((f"code/{arc}", path))
    for i, dep in enumerate(model.dependencies):
        dirs.append("code/lib")
        name = os.path.basename(os.path.normpath(dep))
        files += _walk(os.path.abspath(dep), f"code/lib/{name}", f"dependencies[{i}]", ())
    members = sorted({*dirs, *archive_members(files)}, key=lambda m: tuple(m.split("/")))
    return files, members


def _serverless(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``ServerlessInferenceConfig(...)._to_request_dict()``."""
    if config is None:
        return None
    values = {**_SERVERLESS_DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    out = {"MemorySizeInMB": values["memory_size_in_mb"], "MaxConcurrency": values["max_concurrency"]}
    if values.get("provisioned_concurrency") is not None:
        out["ProvisionedConcurrency"] = values["provisioned_concurrency"]
    return out


def _data_capture(config: Mapping[str, Any] | None, session: Session) -> dict[str, Any] | None:
    """``DataCaptureConfig(...)._to_request_dict()``; the destination defaults under the default bucket."""
    if config is None:
        return None
    destination = config.get("destination_s3_uri") or _join(
        _default_root(session), session.default_bucket_prefix, "model-monitor", "data-capture")
    out: dict[str, Any] = {
        "EnableCapture": config["enable_capture"],
        "InitialSamplingPercentage": config.get("sampling_percentage", 20),
        "DestinationS3Uri": destination,
        "CaptureOptions": [{"CaptureMode": {"REQUEST": "Input", "RESPONSE": "Output"}.get(o.upper(), o)}
                           for o in config.get("capture_options") or ["REQUEST", "RESPONSE"]],
    }
    if config.get("kms_key_id") is not None:
        out["KmsKeyId"] = config["kms_key_id"]
    out["CaptureContentTypeHeader"] = {
        "CsvContentTypes": list(config.get("csv_content_types") or ["text/csv"]),
        "JsonContentTypes": list(config.get("json_content_types") or ["application/json"]),
    }
    return out


def _as_sent(request: dict[str, Any], local: bool) -> dict[str, Any]:
    """For validation: on the local runtime ``file://`` stands where an S3 URL goes (Url shapes too)."""
    if not local:
        return request
    text = json.dumps(request).replace('"file:///', '"s3://local-file-store/')
    return dict(json.loads(text))


#: Request paths -> the deploy / PyTorchModel argument they come from (errors name the argument).
FIELDS = {
    "ModelName": "name", "ExecutionRoleArn": "role", "PrimaryContainer.Image": "image_uri",
    "PrimaryContainer.ModelDataUrl": "model_data", "PrimaryContainer.Environment": "env",
    "Tags": "tags", "VpcConfig": "vpc_config",
    "EndpointConfigName": "endpoint_name", "EndpointName": "endpoint_name", "KmsKeyId": "kms_key",
    "DataCaptureConfig": "data_capture_config",
    "ProductionVariants[0].ModelName": "name",
    "ProductionVariants[0].InstanceType": "instance_type",
    "ProductionVariants[0].InitialInstanceCount": "initial_instance_count",
    "ProductionVariants[0].AcceleratorType": "accelerator_type",
    "ProductionVariants[0].ServerlessConfig": "serverless_inference_config",
    "ProductionVariants[0].VolumeSizeInGB": "volume_size",
    "ProductionVariants[0].ModelDataDownloadTimeoutInSeconds": "model_data_download_timeout",
    "ProductionVariants[0].ContainerStartupHealthCheckTimeoutInSeconds":
        "container_startup_health_check_timeout",
    "ProductionVariants[0].InferenceAmiVersion": "inference_ami_version",
}


# ------------------------------------------------------------------------------- the builder
def build_deploy_plan(
    source: ModelSpec | TrainedModel,
    deploy: DeploySpec,
    session: Session,
    *,
    model_name: str | None = None,
    endpoint_name: str | None = None,
    now: float | None = None,
) -> DeployPlan:
    """The three requests ``deploy`` sends for ``source`` and what to upload first.

    ``model_name`` / ``endpoint_name`` (deterministic names from the operator) win over the specs' own;
    without any, the SDK's timestamped names are made (``now``: the timestamp, for tests). The endpoint
    config is named after the endpoint. Raises :class:`SpecError` before anything could be uploaded.
    """
    model = source.model if isinstance(source, TrainedModel) else source
    reused = isinstance(source, TrainedModel) and deploy.tags is None  # deploy(tags=tags or self.tags)
    tags = _tags(source.tags if isinstance(source, TrainedModel) and reused else deploy.tags)
    if deploy.instance_type in LOCAL_INSTANCE_TYPES and not session.local:
        raise SpecError("instance_type", deploy.instance_type, "instance_type local or local_gpu is only "
                        "supported with the local runtime; use an ml.* instance type on AWS")
    notes: list[str] = []
    if deploy.accelerator_type:
        notes.append(EIA_WARNING.format(deploy.accelerator_type))
        warnings.warn(notes[-1], UserWarning, stacklevel=2)
    assert model.framework_version is not None and model.model_data is not None  # ModelSpec checked
    image = model.image_uri or inference_image_uri(
        framework_version=model.framework_version, py_version=model.py_version,
        instance_type=None if deploy.serverless else deploy.instance_type, region=session.region,
        accelerator_type=deploy.accelerator_type, serverless=deploy.serverless)
    model_name, endpoint_name, code_name = _names(source, deploy, image, model_name, endpoint_name, now)
    validate_model_name(model_name, "name" if model_name == model.name else "model_name")
    validate_endpoint_name(endpoint_name)

    model_data = _local_uri(model.model_data, "model_data", session)
    source_dir = model.source_dir
    if source_dir and uri_kind(source_dir) != "path":
        source_dir = _local_uri(source_dir, "source_dir", session)
    env = dict(model.env or {})
    program, submit_dir = env.get("SAGEMAKER_PROGRAM", ""), env.get("SAGEMAKER_SUBMIT_DIRECTORY", "")
    uploads: list[Upload] = []
    if model.entry_point is not None:
        key = _code_key(model, session, code_name)
        if _version(model.framework_version) >= LOWEST_REPACK_VERSION:
            files, members = _code_files(model)
            if source_dir and uri_kind(source_dir) != "path" and isinstance(source, TrainedModel) \
                    and source.code_members is not None:
                members = sorted({*members, *(f"code/{m}" for m in source.code_members)},
                                 key=lambda m: tuple(m.split("/")))
            repacked = _join(key, REPACKED_FILENAME)
            archive = source_dir if source_dir and uri_kind(source_dir) != "path" else None
            uploads.append(RepackUpload(repacked, files, members, _extra_args(repacked, model.model_kms_key),
                                        repack_of=model_data, code_archive=archive,
                                        replace_code=bool(source_dir) and archive is None))
            model_data, program, submit_dir = repacked, os.path.basename(model.entry_point), MODEL_CODE_DIR
        elif source_dir and uri_kind(source_dir) != "path":  # tar_and_upload_dir: used as is
            program = model.entry_point
            submit_dir = MODEL_CODE_DIR if model.enable_network_isolation else source_dir
        else:
            files = sourcedir_files(entry_point=model.entry_point, source_dir=source_dir,
                                    dependencies=model.dependencies)
            code_uri = _join(key, SOURCEDIR_FILENAME)
            extra = _extra_args(code_uri, model.model_kms_key)
            uploads.append(Upload(code_uri, files, archive_members(files), extra))
            program = model.entry_point if source_dir else os.path.basename(model.entry_point)
            submit_dir = MODEL_CODE_DIR if model.enable_network_isolation else code_uri
    env.update({"SAGEMAKER_PROGRAM": program, "SAGEMAKER_SUBMIT_DIRECTORY": submit_dir,
                "SAGEMAKER_CONTAINER_LOG_LEVEL": str(model.container_log_level),
                "SAGEMAKER_REGION": session.region})
    if model.model_server_workers:
        env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(model.model_server_workers)

    create_model: dict[str, Any] = {
        "ModelName": model_name, "ExecutionRoleArn": model.role,
        "PrimaryContainer": {"Image": image, "Environment": env, "ModelDataUrl": model_data},
    }
    if tags:
        create_model["Tags"] = tags
    if model.vpc_config:
        create_model["VpcConfig"] = {k: list(v) for k, v in model.vpc_config.items()}
    if model.enable_network_isolation:
        create_model["EnableNetworkIsolation"] = True

    variant: dict[str, Any] = {"VariantName": "AllTraffic", "ModelName": model_name,
                               "InitialVariantWeight": 1}
    if deploy.accelerator_type:
        variant["AcceleratorType"] = deploy.accelerator_type
    if deploy.serverless:
        variant["ServerlessConfig"] = _serverless(deploy.serverless_inference_config)
    else:
        variant["InitialInstanceCount"] = deploy.initial_instance_count or 1
        variant["InstanceType"] = deploy.instance_type
        for key, value in (("VolumeSizeInGB", deploy.volume_size),
                           ("ModelDataDownloadTimeoutInSeconds", deploy.model_data_download_timeout),
                           ("ContainerStartupHealthCheckTimeoutInSeconds",
                            deploy.container_startup_health_check_timeout)):
            if value is not None:
                variant[key] = value
    if deploy.inference_ami_version:
        variant["InferenceAmiVersion"] = deploy.inference_ami_version
    config: dict[str, Any] = {"EndpointConfigName": endpoint_name, "ProductionVariants": [variant]}
    if tags:
        config["Tags"] = tags
    if deploy.kms_key:
        config["KmsKeyId"] = deploy.kms_key
    capture = _data_capture(deploy.data_capture_config, session)
    if capture is not None:
        config["DataCaptureConfig"] = capture
    endpoint = {"EndpointName": endpoint_name, "EndpointConfigName": endpoint_name, "Tags": tags or []}

    repacked_by = "code_location" if model.code_location else "default_bucket"
    data_field = repacked_by if model_data != model.model_data else "model_data"
    fields = {**FIELDS, "PrimaryContainer.ModelDataUrl": data_field}
    for operation, request in (("CreateModel", create_model), ("CreateEndpointConfig", config),
                               ("CreateEndpoint", endpoint)):
        validate_request(operation, _as_sent(request, session.local), allow_file_uris=session.local,
                         fields=fields)
    return DeployPlan(create_model, config, endpoint, uploads, notes)
