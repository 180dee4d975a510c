"""``CreateTrainingJob`` for ``PyTorch(...).fit(...)``, field for field as SageMaker SDK v2.257.6 sends it.

Pure: it reads the source files to list the archive (``packaging.sourcedir_files``) but uploads and
sends nothing. :func:`build_training_plan` returns the request and the uploads the hook must do first;
every check runs before the hook uploads anything. The rules and their SDK sources are in
contracts/sdk-requests.md §1 (request, defaults, sourcedir.tar.gz, network isolation) and §6 (local).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_sm_pytorch.builders import hyperparameters as hp
from airflow_sm_pytorch.builders.distribution import distribution_hyperparameters, effective_distribution
from airflow_sm_pytorch.builders.images import base_name_from_image, instance_family, training_image_uri
from airflow_sm_pytorch.builders.naming import MAX_JOB_NAME_LENGTH, sagemaker_timestamp, validate_job_name
from airflow_sm_pytorch.builders.validation import validate_request
from airflow_sm_pytorch.exceptions import SpecError
from airflow_sm_pytorch.packaging import SOURCEDIR_FILENAME, archive_members, sourcedir_files
from airflow_sm_pytorch.specs import (
    BUCKET_RE,
    TrainingSpec,
    iter_channels,
    parse_s3_uri,
    shuffle_seed,
    uri_kind,
)

#: ``fw_utils.DEBUGGER_UNSUPPORTED_REGIONS`` (= ``PROFILER_UNSUPPORTED_REGIONS``).
DEBUGGER_UNSUPPORTED_REGIONS = frozenset({
    "us-iso-east-1", "us-isob-east-1", "ap-southeast-3", "ap-southeast-4", "eu-south-2",
    "me-central-1", "ap-south-2", "eu-central-2", "us-gov-east-1",
})
#: ``Framework.CONTAINER_CODE_CHANNEL_SOURCEDIR_PATH``: where the ``code`` channel lands.
NETWORK_ISOLATION_SUBMIT_DIR = "/opt/ml/input/data/code/sourcedir.tar.gz"
CODE_CHANNEL = "code"
LOCAL_INSTANCE_TYPES = ("local", "local_gpu")
_UPLOAD_HINT = ("upload it first (SageMakerPyTorchHook.upload_data) and pass the s3:// URI; local paths "
                "and file:// URIs are only accepted by the local runtime")


@dataclasses.dataclass(frozen=True)
class Session:
    """Where the request goes: region, default bucket (a name, or ``file:///dir`` for the local store)."""

    region: str
    default_bucket: str
    default_bucket_prefix: str | None = None
    local: bool = False  # the target is the local runtime: file:// URIs and local paths pass through


@dataclasses.dataclass(frozen=True)
class Upload:
    """One archive the hook writes before sending: ``files`` are ``(arcname, absolute path)`` pairs."""

    uri: str
    files: list[tuple[str, Path]]
    members: list[str]
    extra_args: dict[str, str]


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    request: dict[str, Any]
    uploads: list[Upload]

    def to_json(self) -> dict[str, Any]:
        """What ``airflow-sm-pytorch plan train`` prints."""
        return {
            "CreateTrainingJob": self.request,
            "uploads": [{"uri": u.uri, "members": list(u.members)} for u in self.uploads],
        }


# ------------------------------------------------------------------------------- locations
def _join(root: str, *parts: str | None, end_slash: bool = False) -> str:
    """``s3.s3_path_join``: drop empty parts, strip their slashes, join with ``/``."""
    pieces = [p.strip("/") for p in parts if p and p.strip("/")]
    joined = "/".join([root.rstrip("/"), *pieces])
    return joined + "/" if end_slash else joined


def _default_root(session: Session) -> str:
    """``s3://<default bucket>`` or the ``file://`` directory standing in for it."""
    bucket = session.default_bucket
    if not bucket:
        raise SpecError("default_bucket", bucket, "set default_bucket (the SDK would use "
                        f"sagemaker-{session.region}-<account id>), or give output_path",
                        problem="is required")
    if uri_kind(bucket) == "file":
        if not session.local:
            raise SpecError("default_bucket", bucket, "use an S3 bucket name; a file:// store is only "
                            "available with the local runtime")
        return bucket
    if not BUCKET_RE.fullmatch(bucket):
        raise SpecError("default_bucket", bucket, "use a bucket name (3-63 lowercase letters, digits, '.', "
                        "'-'), without s3://")
    return f"s3://{bucket}"


def needs_default_bucket(spec: TrainingSpec) -> bool:
    """Whether building ``spec`` reads ``Session.default_bucket`` (no output_path, or code placed there)."""
    if spec.output_path is None:
        return True
    code_is_local = not (spec.source_dir and uri_kind(spec.source_dir) == "s3")
    return code_is_local and spec.code_location is None and uri_kind(spec.output_path) == "file"


def _check_uri(uri: str, field: str, session: Session) -> None:
    if uri_kind(uri) == "file" and not session.local:
        raise SpecError(field, uri, "file:// locations are only supported in local mode (the local "
                        "runtime); use an s3:// URI", problem="is not supported on AWS")


def _local_uri(value: str, field: str, session: Session) -> str:
    """An input location as sent: s3:// as is; a path or file:// becomes ``file://<absolute path>``."""
    kind = uri_kind(value)
    if kind == "s3":
        return value
    if not session.local:
        problem = "is a file:// URI" if kind == "file" else "is a local path"
        raise SpecError(field, value, _UPLOAD_HINT, problem=problem)
    path = value[len("file://"):] if kind == "file" else value
    absolute = os.path.abspath(os.path.expanduser(path))
    if kind == "path" and not os.path.exists(absolute):
        raise SpecError(field, value, f"check the path (it resolves to {absolute})", problem="does not exist")
    return "file://" + absolute


def _code_location(
    spec: TrainingSpec, session: Session, output_path: str, job_name: str
) -> tuple[str, str | None]:
    """``_stage_user_code_in_s3``: the archive URI and the KMS key its upload uses."""
    key = (job_name, "source", SOURCEDIR_FILENAME)
    if spec.code_location is not None:
        if uri_kind(spec.code_location) == "file":
            return _join(spec.code_location, *key), None
        bucket, prefix = parse_s3_uri(spec.code_location, "code_location")
        same = uri_kind(output_path) == "s3" and parse_s3_uri(output_path, "output_path")[0] == bucket
        return _join(f"s3://{bucket}", prefix, *key), spec.output_kms_key if same else None
    if spec.output_path is not None and uri_kind(spec.output_path) == "s3":
        bucket, _ = parse_s3_uri(spec.output_path, "output_path")  # the output_path prefix is ignored
        return _join(f"s3://{bucket}", *key), spec.output_kms_key
    root = _default_root(session)
    kms = spec.output_kms_key if spec.output_path is None and uri_kind(root) == "s3" else None
    return _join(root, session.default_bucket_prefix, *key), kms


def _extra_args(uri: str, kms_key: str | None) -> dict[str, str]:
    if uri_kind(uri) == "file":
        return {}
    # SessionSettings.encrypt_repacked_artifacts=True. ExpectedBucketOwner (2.257.x, default bucket
    # only) is left out: the account is not known offline.
    extra = {"ServerSideEncryption": "aws:kms"}
    if kms_key:
        extra["SSEKMSKeyId"] = kms_key
    return extra


# ------------------------------------------------------------------------------- pieces
def training_image(spec: TrainingSpec, region: str) -> str:
    """``image_uri`` if given, else the PyTorch DLC for the version, Python, instance type and region."""
    if spec.image_uri:
        return spec.image_uri
    assert spec.framework_version is not None and spec.instance_type is not None  # TrainingSpec checked
    return training_image_uri(framework_version=spec.framework_version, py_version=spec.py_version,
                              instance_type=spec.instance_type, region=region,
                              distribution=effective_distribution(spec))


def default_base_job_name(spec: TrainingSpec, region: str) -> str:
    """``_ensure_base_job_name``: ``base_job_name``, else the image's repository name."""
    return spec.base_job_name or base_name_from_image(training_image(spec, region))


def _version(text: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", text)
    if not parts or not re.fullmatch(r"\d+(\.\d+)*", text):
        raise SpecError("framework_version", text, "use a PyTorch version such as '2.3.0'")
    numbers = [int(p) for p in parts]
    while numbers and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def _metrics_time_series(spec: TrainingSpec) -> bool | None:
    """``PyTorch.__init__``: on by default for framework_version >= 1.3."""
    if spec.enable_sagemaker_metrics is not None:
        return spec.enable_sagemaker_metrics
    if spec.framework_version and _version(spec.framework_version) >= (1, 3):
        return True
    return None


def _channel(name: str, fields: Mapping[str, Any], session: Session, uri_field: str) -> dict[str, Any]:
    """``TrainingInput(...).config`` plus ``ChannelName``, in the SDK's key order (fields checked by
    ``TrainingSpec``; ``target_attribute_name`` is refused there)."""
    source: dict[str, Any] = {
        "S3DataType": fields.get("s3_data_type") or "S3Prefix",
        "S3Uri": _local_uri(fields["s3_data"], uri_field, session),
        "S3DataDistributionType": fields.get("distribution") or "FullyReplicated",
    }
    if fields.get("attribute_names") is not None:
        source["AttributeNames"] = list(fields["attribute_names"])
    channel: dict[str, Any] = {"DataSource": {"S3DataSource": source}}
    for arg, key in (("compression", "CompressionType"), ("content_type", "ContentType"),
                     ("record_wrapping", "RecordWrapperType"), ("input_mode", "InputMode")):
        if fields.get(arg) is not None:
            channel[key] = fields[arg]
    if fields.get("shuffle_config") is not None:
        channel["ShuffleConfig"] = {"Seed": shuffle_seed(fields["shuffle_config"], uri_field)}
    channel["ChannelName"] = name
    return channel


def _uri_field(inputs: Any, name: str, single: bool) -> str:
    """How errors name a channel's URI: ``inputs``, ``inputs.s3_data``, ``inputs[train](.s3_data)``."""
    if isinstance(inputs, str) or single:
        return "inputs" if isinstance(inputs, str) else "inputs.s3_data"
    value = next((v for k, v in inputs.items() if str(k) == name), None)
    return f"inputs[{name}]" + (".s3_data" if isinstance(value, Mapping) else "")


def _tags(tags: Any) -> list[dict[str, str]] | None:
    """``utils.format_tags``: a mapping becomes ``[{"Key", "Value"}]``; a list is kept."""
    if tags is None:
        return None
    if isinstance(tags, Mapping):
        return [{"Key": str(k), "Value": str(v)} for k, v in tags.items()]
    return [dict(t) for t in tags]


def _debug_hook(spec: TrainingSpec, region: str, output_path: str) -> dict[str, Any] | None:
    """``_validate_and_set_debugger_configs`` (EstimatorBase + Framework)."""
    config = spec.debugger_hook_config
    if region in DEBUGGER_UNSUPPORTED_REGIONS:
        if isinstance(config, Mapping) and config:
            raise SpecError("debugger_hook_config", dict(config), "Current region does not support "
                            "debugger but debugger hook config is set! Remove it "
                            f"({region} has no SageMaker Debugger)")
        return None
    if config is False:
        return None
    if spec.checkpoint_s3_uri and spec.checkpoint_local_path:  # SMDebug + checkpointing: debugger off
        return None
    hook = dict(config) if isinstance(config, Mapping) else {}
    hook.setdefault("S3OutputPath", output_path)
    hook.setdefault("CollectionConfigurations", [])
    return hook


def _profiler(spec: TrainingSpec, region: str, output_path: str) -> dict[str, Any]:
    """``_prepare_profiler_for_training``: off when asked, in unsupported regions and on trn*."""
    if spec.disable_profiler or region in DEBUGGER_UNSUPPORTED_REGIONS or (
            instance_family(spec.instance_type).startswith("trn")):
        return {"DisableProfiler": True}
    return {"S3OutputPath": output_path, "DisableProfiler": False}


def _check_session(spec: TrainingSpec, session: Session) -> None:
    if not isinstance(session.region, str) or not re.fullmatch(r"[a-z]{2,}(-[a-z]+)+-\d+", session.region):
        raise SpecError("region", session.region, "use an AWS region name such as us-west-2")
    if spec.instance_type in LOCAL_INSTANCE_TYPES:
        if not session.local:
            raise SpecError("instance_type", spec.instance_type, "instance_type local or local_gpu is only "
                            "supported with the local runtime; use an ml.* instance type on AWS")
        if spec.use_spot_instances:
            raise SpecError("use_spot_instances", True, "spot training is not supported in local mode")
    for name in ("output_path", "code_location", "checkpoint_s3_uri"):
        if getattr(spec, name) is not None:
            _check_uri(getattr(spec, name), name, session)


def _job_name_source(spec: TrainingSpec, job_name: str, region: str) -> tuple[str, Any]:
    """The argument ``job_name`` was made from (``job_name``, ``base_job_name`` or ``image_uri``)."""
    room = MAX_JOB_NAME_LENGTH - len(sagemaker_timestamp(0)) - 1  # name_from_base trims the base to this
    if spec.job_name == job_name:
        return "job_name", job_name
    if spec.base_job_name:
        derived = job_name.startswith(spec.base_job_name[:room])
        return ("base_job_name", spec.base_job_name) if derived else ("job_name", job_name)
    if spec.image_uri and job_name.startswith(default_base_job_name(spec, region)[:room]):
        return "image_uri", spec.image_uri
    return "job_name", job_name


def _check_job_name(spec: TrainingSpec, job_name: str, region: str) -> None:
    """``validate_job_name``, naming the argument the user gave when the name was derived from one."""
    try:
        validate_job_name(job_name)
    except SpecError as exc:
        field, value = _job_name_source(spec, job_name, region)
        if field == "job_name":
            raise
        how = ("base_job_name plus '-' and a timestamp" if field == "base_job_name" else
               "the image's repository name (image_uri) plus '-' and a timestamp; set base_job_name")
        raise SpecError(field, value, f"the job name {job_name!r} is made of {how}: {exc.fix}",
                        problem="gives an invalid job name") from None


def _check_program_inside(spec: TrainingSpec) -> None:
    """A local source_dir's entry point must not lead out of it through a symlink."""
    if not spec.source_dir or uri_kind(spec.source_dir) != "path" or spec.entry_point is None:
        return
    root = os.path.realpath(spec.source_dir)
    target = os.path.realpath(os.path.join(spec.source_dir, spec.entry_point))
    if os.path.commonpath([root, target]) != root:
        raise SpecError("entry_point", spec.entry_point, f"it resolves to {target}, outside source_dir "
                        f"({root}); copy the script into source_dir instead of linking to it",
                        problem="resolves outside source_dir")


#: Request paths and the PyTorch estimator arguments they come from (errors name the argument).
SDK_ARGUMENTS = {
    "RoleArn": "role",
    "AlgorithmSpecification.TrainingInputMode": "input_mode",
    "AlgorithmSpecification.MetricDefinitions": "metric_definitions",
    "AlgorithmSpecification.EnableSageMakerMetricsTimeSeries": "enable_sagemaker_metrics",
    "OutputDataConfig.KmsKeyId": "output_kms_key",
    "ResourceConfig.InstanceCount": "instance_count",
    "ResourceConfig.InstanceType": "instance_type",
    "ResourceConfig.VolumeSizeInGB": "volume_size",
    "ResourceConfig.VolumeKmsKeyId": "volume_kms_key",
    "ResourceConfig.KeepAlivePeriodInSeconds": "keep_alive_period_in_seconds",
    "StoppingCondition.MaxRuntimeInSeconds": "max_run",
    "StoppingCondition.MaxWaitTimeInSeconds": "max_wait",
    "HyperParameters": "hyperparameters",
    f"HyperParameters[{hp.SCRIPT_PARAM_NAME!r}]": "entry_point",
    f"HyperParameters[{hp.CONTAINER_LOG_LEVEL_PARAM_NAME!r}]": "container_log_level",
    "Environment": "environment",
    "Tags": "tags",
    "VpcConfig.Subnets": "subnets",
    "VpcConfig.SecurityGroupIds": "security_group_ids",
    "CheckpointConfig.S3Uri": "checkpoint_s3_uri",
    "CheckpointConfig.LocalPath": "checkpoint_local_path",
    "DebugHookConfig": "debugger_hook_config",
    "RetryStrategy.MaximumRetryAttempts": "max_retry_attempts",
}


def sdk_fields(
    spec: TrainingSpec, job_name: str, region: str, channels: list[str], single: bool
) -> dict[str, str]:
    """``validate_request``'s ``fields`` for this spec: where each part of the request came from."""
    job_field = _job_name_source(spec, job_name, region)[0]
    code_field = "source_dir" if spec.source_dir and uri_kind(spec.source_dir) == "s3" else (
        "code_location" if spec.code_location else "default_bucket")
    fields = {
        **SDK_ARGUMENTS,
        "TrainingJobName": job_field,
        f"HyperParameters[{hp.JOB_NAME_PARAM_NAME!r}]": job_field,
        f"HyperParameters[{hp.DIR_PARAM_NAME!r}]": code_field,
        "AlgorithmSpecification.TrainingImage": "image_uri" if spec.image_uri else "framework_version",
        "OutputDataConfig.S3OutputPath": "output_path" if spec.output_path else "default_bucket",
    }
    if single and spec.inputs.get("input_mode"):
        fields["AlgorithmSpecification.TrainingInputMode"] = "inputs.input_mode"
    for i, name in enumerate(channels):
        fields[f"InputDataConfig[{i}]"] = _uri_field(spec.inputs, name, single).removesuffix(".s3_data")
    if spec.enable_network_isolation:  # the estimator's own code channel comes last
        fields[f"InputDataConfig[{len(channels)}]"] = code_field
    return fields


# ------------------------------------------------------------------------------- the builder
def _package(
    spec: TrainingSpec, session: Session, output_path: str, job_name: str
) -> tuple[str, str, list[Upload]]:
    """``_stage_user_code_in_s3``: (code URI, program as sent, the archive to upload, if any)."""
    assert spec.entry_point is not None  # TrainingSpec checked
    if spec.source_dir and uri_kind(spec.source_dir) == "s3":
        return spec.source_dir, spec.entry_point, []  # used as is; nothing to package
    _check_program_inside(spec)
    files = sourcedir_files(entry_point=spec.entry_point, source_dir=spec.source_dir,
                            dependencies=spec.dependencies or ())
    code_uri, kms_key = _code_location(spec, session, output_path, job_name)
    upload = Upload(code_uri, files, archive_members(files), _extra_args(code_uri, kms_key))
    return code_uri, spec.entry_point if spec.source_dir else os.path.basename(spec.entry_point), [upload]


def _hyperparameters(
    spec: TrainingSpec, program: str, code_uri: str, job_name: str, region: str
) -> dict[str, str]:
    """The user's, then the five script-mode keys, then the distribution's (``PyTorch.hyperparameters``)."""
    script = hp.script_mode_hyperparameters(
        program=program,
        submit_directory=NETWORK_ISOLATION_SUBMIT_DIR if spec.enable_network_isolation else code_uri,
        job_name=job_name,
        region=region,
        container_log_level=spec.container_log_level,
    )
    distribution = hp.encode_hyperparameters(distribution_hyperparameters(spec))
    hyperparameters = {**hp.check_user_hyperparameters(spec.hyperparameters), **script, **distribution}
    hp.check_limits(hyperparameters)
    return hyperparameters


def _input_config(spec: TrainingSpec, session: Session, code_uri: str) -> tuple[list[dict[str, Any]], str]:
    """``InputDataConfig`` (the estimator's ``code`` channel last with network isolation), the input mode."""
    channels, single = iter_channels(spec.inputs)
    config = [_channel(name, fields, session, _uri_field(spec.inputs, name, single))
              for name, fields in channels]
    if spec.enable_network_isolation:
        if any(c["ChannelName"] == CODE_CHANNEL for c in config):
            raise SpecError("inputs[code]", CODE_CHANNEL, "rename the channel: with enable_network_isolation "
                            "the estimator adds its own 'code' channel", problem="is a duplicate channel")
        config.append(_channel(CODE_CHANNEL, {"s3_data": code_uri}, session, "code"))
    if single and channels[0][1].get("input_mode"):
        return config, channels[0][1]["input_mode"]  # fit(TrainingInput(input_mode=...)) overrides
    return config, spec.input_mode


def _core(spec: TrainingSpec, image: str, input_mode: str, output_path: str) -> dict[str, dict[str, Any]]:
    """``AlgorithmSpecification``, ``OutputDataConfig``, ``StoppingCondition`` and ``ResourceConfig``."""
    algorithm: dict[str, Any] = {"TrainingInputMode": input_mode, "TrainingImage": image}
    if spec.metric_definitions is not None:
        algorithm["MetricDefinitions"] = [dict(m) for m in spec.metric_definitions]
    metrics = _metrics_time_series(spec)
    if metrics is not None:
        algorithm["EnableSageMakerMetricsTimeSeries"] = metrics
    output: dict[str, Any] = {"S3OutputPath": output_path}
    if spec.output_kms_key is not None:
        output["KmsKeyId"] = spec.output_kms_key
    if spec.disable_output_compression:
        output["CompressionType"] = "NONE"
    stopping: dict[str, Any] = {"MaxRuntimeInSeconds": spec.max_run}
    if spec.max_wait:
        stopping["MaxWaitTimeInSeconds"] = spec.max_wait
    resources: dict[str, Any] = {"VolumeSizeInGB": spec.volume_size}
    if spec.volume_kms_key is not None:
        resources["VolumeKmsKeyId"] = spec.volume_kms_key
    if spec.keep_alive_period_in_seconds is not None:
        resources["KeepAlivePeriodInSeconds"] = spec.keep_alive_period_in_seconds
    resources["InstanceCount"] = spec.instance_count
    resources["InstanceType"] = spec.instance_type
    return {"AlgorithmSpecification": algorithm, "OutputDataConfig": output, "StoppingCondition": stopping,
            "ResourceConfig": resources}


def _options(spec: TrainingSpec, region: str, output_path: str) -> dict[str, Any]:
    """The optional top-level keys after ``HyperParameters``, in ``Session._get_train_request``'s order."""
    options: dict[str, Any] = {}
    if spec.environment is not None:
        options["Environment"] = dict(spec.environment)
    tags = _tags(spec.tags)
    if tags is not None:
        options["Tags"] = tags
    if spec.subnets is not None and spec.security_group_ids is not None:
        options["VpcConfig"] = {"Subnets": list(spec.subnets),
                                "SecurityGroupIds": list(spec.security_group_ids)}
    if spec.enable_network_isolation:
        options["EnableNetworkIsolation"] = True
    if spec.encrypt_inter_container_traffic:
        options["EnableInterContainerTrafficEncryption"] = True
    if spec.use_spot_instances:
        options["EnableManagedSpotTraining"] = True
    if spec.checkpoint_s3_uri:
        options["CheckpointConfig"] = {"S3Uri": spec.checkpoint_s3_uri}
        if spec.checkpoint_local_path:
            options["CheckpointConfig"]["LocalPath"] = spec.checkpoint_local_path
    debug_hook = _debug_hook(spec, region, output_path)
    if debug_hook is not None:
        options["DebugHookConfig"] = debug_hook
    options["ProfilerConfig"] = _profiler(spec, region, output_path)
    if spec.max_retry_attempts is not None:
        options["RetryStrategy"] = {"MaximumRetryAttempts": spec.max_retry_attempts}
    return options


def build_training_plan(spec: TrainingSpec, session: Session, *, job_name: str) -> TrainingPlan:
    """The exact ``CreateTrainingJob`` request for ``spec`` and the archive to upload before sending it.

    Raises :class:`SpecError` for anything SageMaker (or the SDK) would refuse; nothing is uploaded.
    """
    region = session.region
    _check_job_name(spec, job_name, region)
    _check_session(spec, session)
    image = training_image(spec, region)
    output_path = spec.output_path or _join(
        _default_root(session), session.default_bucket_prefix, end_slash=True)
    code_uri, program, uploads = _package(spec, session, output_path, job_name)
    hyperparameters = _hyperparameters(spec, program, code_uri, job_name, region)
    input_config, input_mode = _input_config(spec, session, code_uri)

    core = _core(spec, image, input_mode, output_path)
    request: dict[str, Any] = {  # Session._get_train_request: this key order, each key only when set
        "AlgorithmSpecification": core["AlgorithmSpecification"],
        "OutputDataConfig": core["OutputDataConfig"],
        "TrainingJobName": job_name,
        "StoppingCondition": core["StoppingCondition"],
        "ResourceConfig": core["ResourceConfig"],
        "RoleArn": spec.role,
    }
    if input_config:
        request["InputDataConfig"] = input_config
    if hyperparameters:
        request["HyperParameters"] = hyperparameters
    request.update(_options(spec, region, output_path))

    channels, single = iter_channels(spec.inputs)
    fields = sdk_fields(spec, job_name, region, [name for name, _ in channels], single)
    validate_request("CreateTrainingJob", request, allow_file_uris=session.local, fields=fields)
    return TrainingPlan(request, uploads)
