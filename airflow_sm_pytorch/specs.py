"""Typed, frozen inputs users give: the SageMaker SDK ``PyTorch`` estimator's, ``PyTorchModel``'s and
``deploy``'s keyword arguments.

``TrainingSpec`` mirrors ``sagemaker.pytorch.PyTorch(...)`` plus ``fit(inputs=..., job_name=...)``,
``ModelSpec`` ``PyTorchModel(...)`` and ``DeploySpec`` ``deploy(...)``, so a user can move an SDK call into
a DAG by copying its keyword arguments. Each holds data and checks what can be checked without I/O
(``__post_init__``); turning them into requests is ``builders.training``'s and ``builders.deploy``'s job.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_sm_pytorch.builders.distribution import distribution_hyperparameters
from airflow_sm_pytorch.builders.hyperparameters import SCRIPT_MODE_KEYS, check_user_hyperparameters
from airflow_sm_pytorch.builders.naming import validate_endpoint_name, validate_job_name, validate_model_name
from airflow_sm_pytorch.exceptions import SpecError


# ----------------------------------------------------------------------------------------- URIs
#: S3 bucket naming rules (3-63 chars: lowercase letters, digits, dots, hyphens; letter/digit at ends).
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
CHANNEL_NAME_RE = re.compile(r"[A-Za-z0-9\.\-_]+")
MAX_CHANNEL_NAME = 64
ENV_KEY_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
MAX_ENV_ENTRIES, MAX_ENV_LENGTH = 100, 512
INPUT_MODES = ("File", "Pipe", "FastFile")
#: ``sagemaker.inputs.TrainingInput`` arguments -> the enum SageMaker accepts for them (None: free).
TRAINING_INPUT_FIELDS: dict[str, tuple[str, ...] | None] = {
    "s3_data": None,
    "distribution": ("FullyReplicated", "ShardedByS3Key"),
    "compression": ("None", "Gzip"),
    "content_type": None,
    "record_wrapping": ("None", "RecordIO"),
    "s3_data_type": ("S3Prefix", "ManifestFile", "AugmentedManifestFile", "Converse"),
    "input_mode": INPUT_MODES,
    "attribute_names": None,
    "target_attribute_name": None,
    "shuffle_config": None,
}
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def uri_kind(uri: str) -> str:
    """``"s3"``, ``"file"`` or ``"path"`` (no scheme); any other scheme is ``"other"``."""
    match = _SCHEME_RE.match(uri)
    if match is None:
        return "path"
    scheme = match.group(1).lower()
    return scheme if scheme in ("s3", "file") else "other"


def parse_s3_uri(uri: str, field: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; a missing or badly named bucket is a SpecError."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise SpecError(field, uri, "write it as s3://<bucket>/<key prefix>", problem="has no bucket")
    if not BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise SpecError(field, uri, f"{bucket!r} is not a valid S3 bucket name: use 3-63 lowercase letters, "
                        "digits, dots and hyphens, starting and ending with a letter or digit",
                        problem="has an invalid bucket")
    return bucket, key


def check_location(value: Any, field: str, *, paths: bool = False) -> None:
    """``value`` must be an ``s3://`` URI (well formed), a ``file://`` URI or, with ``paths``, a path."""
    if not isinstance(value, str) or not value:
        raise SpecError(field, value, 'use an S3 URI ("s3://bucket/prefix")')
    kind = uri_kind(value)
    if kind == "s3":
        parse_s3_uri(value, field)
    elif kind == "other" or (kind == "path" and not paths):
        also = " (or be a local path, with the local runtime)" if paths else ""
        raise SpecError(field, value,
                        f'it must be a valid S3 or FILE URI: must start with "s3://" or "file://"{also}',
                        problem="is not a supported URI")


def _enum(value: Any, allowed: tuple[str, ...], field: str) -> None:
    if value not in allowed:
        raise SpecError(field, value, f"use one of {list(allowed)}")


def _training_input(value: Mapping[str, Any], field: str) -> dict[str, Any]:
    unknown = sorted(set(value) - set(TRAINING_INPUT_FIELDS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(TRAINING_INPUT_FIELDS), n=1)
        fix = (f"did you mean {close[0]!r}?" if close
               else f"use the TrainingInput arguments {list(TRAINING_INPUT_FIELDS)}")
        raise SpecError(f"{field}.{unknown[0]}", value[unknown[0]], fix,
                        problem="is not a TrainingInput argument")
    if "s3_data" not in value:
        raise SpecError(f"{field}.s3_data", None, "give the data's URI as s3_data", problem="is required")
    check_location(value["s3_data"], f"{field}.s3_data", paths=True)
    for key, allowed in TRAINING_INPUT_FIELDS.items():
        if allowed and value.get(key) is not None:
            _enum(value[key], allowed, f"{field}.{key}")
    names = value.get("attribute_names")
    if names is not None and (isinstance(names, str) or not all(isinstance(n, str) for n in names)):
        raise SpecError(f"{field}.attribute_names", names, "use a list of attribute names")
    if value.get("target_attribute_name") is not None:
        # The SDK copies it into the channel and botocore then refuses the request (unknown parameter).
        raise SpecError(f"{field}.target_attribute_name", value["target_attribute_name"],
                        "remove it: TargetAttributeName is for AutoML jobs; CreateTrainingJob channels do "
                        "not accept it")
    if value.get("shuffle_config") is not None:
        shuffle_seed(value["shuffle_config"], field)
    return dict(value)


def shuffle_seed(shuffle: Any, field: str) -> int:
    """``ShuffleConfig(seed)``: an int, or ``{"seed": int}`` (``{"Seed": int}`` also accepted)."""
    seed = shuffle.get("seed", shuffle.get("Seed")) if isinstance(shuffle, Mapping) else shuffle
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SpecError(f"{field}.shuffle_config", shuffle, 'use an integer seed or {"seed": <int>}')
    return seed


def iter_channels(inputs: Any) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """``fit(inputs)`` as ``[(channel, TrainingInput arguments)]`` and whether it was one TrainingInput.

    A string is the channel ``training``; a mapping with ``s3_data`` is one TrainingInput (channel
    ``training``); any other mapping is ``{channel: URI or TrainingInput mapping}``.
    """
    if inputs is None:
        return [], False
    if isinstance(inputs, str):
        check_location(inputs, "inputs", paths=True)
        return [("training", {"s3_data": inputs})], False
    if not isinstance(inputs, Mapping):
        raise SpecError("inputs", inputs, "use a URI string or a mapping of channel name to URI or "
                        "TrainingInput arguments")
    if "s3_data" in inputs and set(inputs) <= set(TRAINING_INPUT_FIELDS):
        return [("training", _training_input(inputs, "inputs"))], True
    channels: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for key, value in inputs.items():
        name, field = str(key), f"inputs[{key}]"
        if len(name) > MAX_CHANNEL_NAME or not CHANNEL_NAME_RE.fullmatch(name):
            raise SpecError(field, name, f"use at most {MAX_CHANNEL_NAME} letters, digits, '.', '-' or '_' "
                            r"(pattern [A-Za-z0-9\.\-_]+)", problem="is not a valid channel name")
        if name in seen:
            raise SpecError(field, name, "give each channel a distinct name",
                            problem="is a duplicate channel")
        seen.add(name)
        if isinstance(value, Mapping):
            channels.append((name, _training_input(value, field)))
        else:
            check_location(value, field, paths=True)
            channels.append((name, {"s3_data": value}))
    return channels, False


# ----------------------------------------------------------------------------------------- checks
_STR = ("entry_point", "source_dir", "role", "instance_type", "framework_version", "py_version", "image_uri",
        "output_path", "code_location", "base_job_name", "volume_kms_key", "output_kms_key",
        "checkpoint_s3_uri", "checkpoint_local_path", "job_name")
_INT = ("volume_size", "max_run", "container_log_level")
_OPT_INT = ("instance_count", "max_wait", "max_retry_attempts", "keep_alive_period_in_seconds")
_BOOL = ("use_spot_instances", "enable_network_isolation", "encrypt_inter_container_traffic",
         "disable_profiler", "disable_output_compression")
_STR_SEQ = ("dependencies", "subnets", "security_group_ids")


def _check_types(spec: TrainingSpec) -> None:
    def bad(name: str, want: str, hint: str = "") -> SpecError:
        return SpecError(name, getattr(spec, name), f"use {want}{hint}", problem="has the wrong type")

    for name in _STR:
        value = getattr(spec, name)
        if value is not None and not isinstance(value, str):
            hint = " (quote it, e.g. '2.3.0')" if isinstance(value, (int, float)) else ""
            raise bad(name, "a string", hint)
    for name in _INT + _OPT_INT:
        value = getattr(spec, name)
        if (value is not None or name in _INT) and (isinstance(value, bool) or not isinstance(value, int)):
            raise bad(name, "an integer")
    for name in _BOOL:
        if not isinstance(getattr(spec, name), bool):
            raise bad(name, "true or false")
    if spec.enable_sagemaker_metrics is not None and not isinstance(spec.enable_sagemaker_metrics, bool):
        raise bad("enable_sagemaker_metrics", "true, false or null")
    for name in ("hyperparameters", "environment", "distribution"):
        if getattr(spec, name) is not None and not isinstance(getattr(spec, name), Mapping):
            raise bad(name, "a mapping")
    for name in _STR_SEQ:
        value = getattr(spec, name)
        if value is not None and (isinstance(value, str) or not isinstance(value, Sequence)
                                  or not all(isinstance(v, str) for v in value)):
            raise bad(name, "a list of strings")
    metrics = spec.metric_definitions
    if metrics is not None and (
            isinstance(metrics, (str, Mapping)) or not isinstance(metrics, Sequence)
            or not all(isinstance(m, Mapping) and set(m) == {"Name", "Regex"} for m in metrics)):
        raise bad("metric_definitions", 'a list of {"Name": ..., "Regex": ...} mappings')
    if spec.debugger_hook_config is not None and not isinstance(spec.debugger_hook_config, (bool, Mapping)):
        raise bad("debugger_hook_config", "false, true or a DebugHookConfig mapping")


def check_entry_point(entry_point: str, source_dir: str | None) -> None:
    """The program must be a relative path inside the code directory (what SageMaker runs from).

    Without ``source_dir`` only the file itself is packaged (under its basename), yet an absolute path
    is refused too, so that no request names a program outside the code it ships. Symlinks that lead
    out of a local ``source_dir`` are the builder's check (it may read the filesystem).
    """
    with_dir = f"relative to source_dir ({source_dir})" if source_dir else "relative to source_dir"
    if posixpath.isabs(entry_point) or os.path.isabs(entry_point):
        fix = (f"give it {with_dir}, e.g. {os.path.basename(entry_point)!r}" if source_dir else
               "give source_dir (the directory that holds the script) and entry_point relative to it, "
               f"e.g. source_dir: {os.path.dirname(entry_point) or '/'} and entry_point: "
               f"{os.path.basename(entry_point)}")
        raise SpecError("entry_point", entry_point, fix, problem="is an absolute path")
    parts = posixpath.normpath(entry_point.replace(os.sep, "/")).split("/")
    if source_dir and parts[0] == "..":
        raise SpecError("entry_point", entry_point, f"give a path {with_dir} that stays inside it (no "
                        "'..' leading out); move the script into source_dir", problem="is outside source_dir")


def _check_role_and_image(spec: Any, no_role: str) -> None:
    """A role ARN (``no_role``: the SDK's message when it is missing), and versions or an image."""
    if not spec.role:
        raise SpecError("role", spec.role, no_role, problem="is required")
    if "/" not in spec.role:
        raise SpecError("role", spec.role, "use the role's full ARN (arn:aws:iam::<account>:role/<name>); "
                        "a bare role name would need an IAM lookup")
    if (spec.framework_version is None or spec.py_version is None) and spec.image_uri is None:
        field = "py_version" if spec.framework_version else "framework_version"
        raise SpecError(field, None, "framework_version or py_version was None, yet image_uri was also None. "
                        "Either specify both framework_version and py_version, or specify image_uri.",
                        problem="is required")


def _check_required(spec: TrainingSpec) -> None:
    if not spec.entry_point:
        raise SpecError("entry_point", spec.entry_point, "Argument entry_point must be set when "
                        "training_recipe is not provided", problem="is required")
    if spec.entry_point.lower().startswith("s3://"):
        raise SpecError("entry_point", spec.entry_point, f"Invalid entry point script: {spec.entry_point}. "
                        "Must be a path to a local file.")
    check_entry_point(spec.entry_point, spec.source_dir)
    _check_role_and_image(spec, "An AWS IAM role is required to create an estimator. Please provide a valid "
                          "`role` argument with the ARN of an IAM role that has the necessary SageMaker "
                          "permissions.")
    if spec.instance_type is None:
        raise SpecError("instance_type", None, "instance_count and instance_type must be set if "
                        "instance_groups is not set (e.g. ml.m5.xlarge, or local / local_gpu)",
                        problem="is required")
    if spec.instance_count is None:
        raise SpecError("instance_count", None, "instance_count and instance_type must be set if "
                        "instance_groups is not set (as SageMaker SDK 2.257 says at fit()): add "
                        "instance_count: 1, or more for distributed training", problem="is required")
    if spec.instance_count < 1:
        raise SpecError("instance_count", spec.instance_count, "use 1 or more")
    if spec.instance_type == "local_gpu" and spec.instance_count > 1:
        raise SpecError("instance_count", spec.instance_count, "Distributed Training in Local GPU is not "
                        "supported. Set instance_count to 1.")


def _check_resources(spec: TrainingSpec) -> None:
    _enum(spec.input_mode, INPUT_MODES, "input_mode")
    if spec.max_wait is not None and not spec.use_spot_instances:
        raise SpecError("max_wait", spec.max_wait, "set use_spot_instances=True, or remove max_wait "
                        "(it only applies to managed spot training)")
    if spec.use_spot_instances and spec.max_wait is None:
        raise SpecError("max_wait", None, "managed spot training needs max_wait (seconds to wait for spot "
                        f"capacity plus training), at least max_run={spec.max_run}", problem="is required")
    if spec.max_wait is not None and spec.max_wait < spec.max_run:
        raise SpecError("max_wait", spec.max_wait, f"use a value >= max_run ({spec.max_run}): it covers "
                        "waiting for spot capacity plus the training itself")
    if (spec.subnets is None) != (spec.security_group_ids is None):
        field = "security_group_ids" if spec.security_group_ids is None else "subnets"
        raise SpecError(field, None, "When setting up custom VPC, both subnets and security_group_ids must "
                        "be set", problem="is missing")
    for name in ("output_path", "code_location", "checkpoint_s3_uri"):
        if getattr(spec, name) is not None:
            check_location(getattr(spec, name), name)
    if spec.source_dir and uri_kind(spec.source_dir) == "s3":
        parse_s3_uri(spec.source_dir, "source_dir")
        if spec.dependencies:
            raise SpecError("dependencies", list(spec.dependencies), "remove them or use a local source_dir: "
                            "with an s3:// source_dir nothing is packaged, so dependencies would be ignored")


def check_tags(tags: Any, field: str = "tags") -> None:
    """A mapping ``{"key": "value"}`` or a list of ``{"Key": ..., "Value": ...}`` (``format_tags``)."""
    if tags is not None and not isinstance(tags, Mapping):
        if isinstance(tags, (str, bytes)) or not isinstance(tags, Sequence) or not all(
                isinstance(t, Mapping) and set(t) == {"Key", "Value"} for t in tags):
            raise SpecError(field, tags,
                            'use a mapping {"key": "value"} or a list of {"Key": ..., "Value": ...}')


def check_environment(env: Mapping[str, Any] | None, field: str, max_length: int = MAX_ENV_LENGTH) -> None:
    """At most 100 variables, names matching ``[a-zA-Z_][a-zA-Z0-9_]*``, string values of bounded length."""
    env = env or {}
    if len(env) > MAX_ENV_ENTRIES:
        raise SpecError(field, dict(env), f"use at most {MAX_ENV_ENTRIES} variables (it has {len(env)})",
                        problem="has too many entries")
    for key, value in env.items():
        if not isinstance(key, str) or len(key) > max_length or not ENV_KEY_RE.fullmatch(key):
            raise SpecError(f"{field}[{key}]", key, "use a name matching [a-zA-Z_][a-zA-Z0-9_]* of at "
                            f"most {max_length} characters", problem="is not a valid variable name")
        if not isinstance(value, str):
            raise SpecError(f"{field}[{key}]", value, f'quote it: environment values are strings ("{value}")')
        if len(value) > max_length:
            raise SpecError(f"{field}[{key}]", value, f"use at most {max_length} characters "
                            f"(it has {len(value)}); pass longer values in a file", problem="is too long")


def _check_tags_env(spec: TrainingSpec) -> None:
    check_tags(spec.tags)
    check_environment(spec.environment, "environment")


def _check_inputs(spec: TrainingSpec) -> None:
    channels, _ = iter_channels(spec.inputs)
    if spec.enable_network_isolation and any(name == "code" for name, _ in channels):
        raise SpecError("inputs[code]", "code", "rename the channel: with enable_network_isolation the "
                        "estimator adds its own 'code' channel (Duplicate channel code not allowed.)",
                        problem="is a duplicate channel")


@dataclasses.dataclass(frozen=True)
class TrainingSpec:
    """The SDK's ``PyTorch`` estimator arguments, plus ``inputs`` and ``job_name`` from ``fit``."""

    entry_point: str | None = None
    source_dir: str | None = None
    dependencies: tuple[str, ...] = ()
    hyperparameters: Mapping[str, Any] | None = None
    role: str | None = None
    instance_type: str | None = None
    instance_count: int | None = None  # required, as in the SDK (its default None fails at fit())
    framework_version: str | None = None
    py_version: str | None = None
    image_uri: str | None = None
    output_path: str | None = None
    code_location: str | None = None
    base_job_name: str | None = None
    volume_size: int = 30
    volume_kms_key: str | None = None
    output_kms_key: str | None = None
    max_run: int = 24 * 60 * 60
    max_wait: int | None = None
    use_spot_instances: bool = False
    environment: Mapping[str, str] | None = None
    checkpoint_s3_uri: str | None = None
    checkpoint_local_path: str | None = None
    subnets: tuple[str, ...] | None = None
    security_group_ids: tuple[str, ...] | None = None
    tags: Any = None  # list of {"Key","Value"} or a dict; normalised by the builder
    enable_network_isolation: bool = False
    encrypt_inter_container_traffic: bool = False
    max_retry_attempts: int | None = None
    metric_definitions: tuple[Mapping[str, str], ...] | None = None
    disable_profiler: bool = False
    debugger_hook_config: Any = None  # None: SDK default; False: off; a dict: as given
    keep_alive_period_in_seconds: int | None = None
    input_mode: str = "File"
    container_log_level: int = 20
    disable_output_compression: bool = False
    enable_sagemaker_metrics: bool | None = None
    distribution: Mapping[str, Any] | None = None  # as the SDK's; see builders.distribution
    # fit(...)
    inputs: Any = None  # a URI string, or {channel: URI | TrainingInput-like dict}
    job_name: str | None = None

    def __post_init__(self) -> None:
        """Every check that needs no filesystem, network or session (those are the builder's)."""
        _check_types(self)
        _check_required(self)
        _check_resources(self)
        _check_tags_env(self)
        added = distribution_hyperparameters(self)  # the SDK's rules; errors name distribution.<key>
        check_user_hyperparameters(self.hyperparameters, added_by_sdk=len(SCRIPT_MODE_KEYS) + len(added))
        _check_inputs(self)
        if self.job_name is not None:
            validate_job_name(self.job_name)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingSpec:
        """Build from a plain mapping (a spec file, operator kwargs), refusing unknown keys by name."""
        return _from_dict(cls, data, "a PyTorch estimator argument",
                          ("dependencies", "subnets", "security_group_ids", "metric_definitions"))

    def to_dict(self) -> dict[str, Any]:
        """The non-default fields, JSON-friendly (what a spec file would hold)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def _from_dict(cls: Any, data: Mapping[str, Any], what: str, tuples: tuple[str, ...]) -> Any:
    """``cls(**data)``, refusing unknown keys by name (with the closest known one) and making lists tuples."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, sorted(known), n=1)
        fix = f"did you mean {close[0]!r}?" if close else f"use one of {sorted(known)}"
        raise SpecError(key, data[key], fix, problem=f"is not {what}")
    kwargs = dict(data)
    for name in tuples:
        if isinstance(kwargs.get(name), list):
            kwargs[name] = tuple(kwargs[name])
    return cls(**kwargs)


def _check_typed(
    obj: Any, strings: tuple[str, ...], ints: tuple[str, ...], mappings: tuple[str, ...]
) -> None:
    """Optional fields of ``obj``: strings, positive-or-zero integers (not bools), mappings."""
    for name in strings:
        value = getattr(obj, name)
        if value is not None and not isinstance(value, str):
            hint = " (quote it, e.g. '2.3.0')" if isinstance(value, (int, float)) else ""
            raise SpecError(name, value, f"use a string{hint}", problem="has the wrong type")
    for name in ints:
        value = getattr(obj, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise SpecError(name, value, "use an integer", problem="has the wrong type")
    for name in mappings:
        if getattr(obj, name) is not None and not isinstance(getattr(obj, name), Mapping):
            raise SpecError(name, getattr(obj, name), "use a mapping", problem="has the wrong type")


# ----------------------------------------------------------------------------------------- deploy
#: ``DataCaptureConfig`` and ``ServerlessInferenceConfig`` arguments (SDK 2.257.6).
DATA_CAPTURE_FIELDS = ("enable_capture", "sampling_percentage", "destination_s3_uri", "kms_key_id",
                       "capture_options", "csv_content_types", "json_content_types")
SERVERLESS_FIELDS = ("memory_size_in_mb", "max_concurrency", "provisioned_concurrency")


def _check_arguments(value: Mapping[str, Any], allowed: tuple[str, ...], field: str, what: str) -> None:
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(allowed), n=1)
        fix = f"did you mean {close[0]!r}?" if close else f"use the {what} arguments {list(allowed)}"
        raise SpecError(f"{field}.{unknown[0]}", value[unknown[0]], fix, problem=f"is not a {what} argument")


def check_deploy_entry_point(entry_point: str, source_dir: str | None) -> None:
    """The training rules, plus: the inference script sits at the root of ``source_dir``.

    SageMaker's serving container runs ``SAGEMAKER_PROGRAM`` from ``code/``, and the SDK sets it to the
    script's basename, so ``sub/inference.py`` would never be found.
    """
    if entry_point.lower().startswith("s3://"):
        raise SpecError("entry_point", entry_point, "give a local inference script (its code is packaged "
                        "into model.tar.gz); to use code already in S3 pass "
                        "source_dir=s3://.../sourcedir.tar.gz")
    check_entry_point(entry_point, source_dir)
    if source_dir and "/" in posixpath.normpath(entry_point.replace(os.sep, "/")):
        raise SpecError("entry_point", entry_point, "put the inference script at the root of source_dir and "
                        f"give its name ({posixpath.basename(entry_point)!r}): the model server runs "
                        "code/<basename of entry_point>", problem="is not at the root of source_dir")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The SDK's ``PyTorchModel`` arguments (``framework_version`` defaults to "1.3", as there)."""

    model_data: str | None = None
    role: str | None = None
    entry_point: str | None = None
    framework_version: str | None = "1.3"
    py_version: str | None = None
    image_uri: str | None = None
    model_server_workers: int | None = None
    source_dir: str | None = None
    dependencies: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    name: str | None = None
    code_location: str | None = None
    container_log_level: int = 20
    vpc_config: Mapping[str, Any] | None = None
    enable_network_isolation: bool = False
    model_kms_key: str | None = None

    def __post_init__(self) -> None:
        _check_typed(self, ("model_data", "role", "entry_point", "framework_version", "py_version",
                            "image_uri", "source_dir", "name", "code_location", "model_kms_key"),
                     ("model_server_workers", "container_log_level"), ("env", "vpc_config"))
        if not isinstance(self.enable_network_isolation, bool):
            raise SpecError("enable_network_isolation", self.enable_network_isolation, "use true or false")
        if not self.model_data:
            raise SpecError("model_data", self.model_data, "give the S3 URI of the model.tar.gz to deploy "
                            "(or a file:// URI / local path with the local runtime)", problem="is required")
        check_location(self.model_data, "model_data", paths=True)
        _check_role_and_image(self, "Role can not be null for deploying a model: give the ARN of an IAM "
                              "role SageMaker can assume")
        if self.framework_version is None:
            raise SpecError("framework_version", None, "give the PyTorch version the image serves (e.g. "
                            "'2.3.0'): it decides how the code is packaged (>= 1.2: repacked into "
                            "model.tar.gz; older: a separate sourcedir.tar.gz)", problem="is required")
        if self.entry_point is not None:
            check_deploy_entry_point(self.entry_point, self.source_dir)
        elif self.source_dir or self.dependencies:
            field = "source_dir" if self.source_dir else "dependencies"
            raise SpecError(field, getattr(self, field), "also give entry_point (the inference script): "
                            "without it no code is packaged", problem="needs entry_point")
        if self.source_dir and uri_kind(self.source_dir) != "path":
            check_location(self.source_dir, "source_dir")
        if self.code_location is not None:
            check_location(self.code_location, "code_location")
        if self.model_server_workers is not None and self.model_server_workers < 1:
            raise SpecError("model_server_workers", self.model_server_workers, "use 1 or more, or leave it "
                            "unset (one worker per CPU or GPU)")
        check_environment(self.env, "env", max_length=1024)
        if self.name is not None:
            validate_model_name(self.name, "name")
        vpc = self.vpc_config
        if vpc is not None and not (set(vpc) == {"Subnets", "SecurityGroupIds"}
                                    and all(isinstance(v, (list, tuple)) and v for v in vpc.values())):
            raise SpecError("vpc_config", dict(vpc),
                            'use {"Subnets": [...], "SecurityGroupIds": [...]}, both non-empty')

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Build from a plain mapping, refusing unknown keys by name."""
        return _from_dict(cls, data, "a PyTorchModel argument", ("dependencies",))


@dataclasses.dataclass(frozen=True)
class DeploySpec:
    """The SDK's ``deploy(...)`` arguments (``Model.deploy`` / ``PyTorch.deploy``) that build requests."""

    initial_instance_count: int | None = None
    instance_type: str | None = None
    accelerator_type: str | None = None
    endpoint_name: str | None = None
    tags: Any = None
    kms_key: str | None = None
    data_capture_config: Mapping[str, Any] | None = None
    serverless_inference_config: Mapping[str, Any] | None = None  # {} = the SDK's defaults
    volume_size: int | None = None
    model_data_download_timeout: int | None = None
    container_startup_health_check_timeout: int | None = None
    inference_ami_version: str | None = None

    @property
    def serverless(self) -> bool:
        return self.serverless_inference_config is not None

    def __post_init__(self) -> None:
        _check_typed(self, ("instance_type", "accelerator_type", "endpoint_name", "kms_key",
                            "inference_ami_version"),
                     ("initial_instance_count", "volume_size", "model_data_download_timeout",
                      "container_startup_health_check_timeout"),
                     ("data_capture_config", "serverless_inference_config"))
        check_tags(self.tags)
        if self.initial_instance_count is not None and self.initial_instance_count < 1:
            raise SpecError("initial_instance_count", self.initial_instance_count, "use 1 or more instances "
                            "(or serverless_inference_config for an endpoint that scales to zero)")
        if not self.serverless and not (self.instance_type and self.initial_instance_count):
            field = "initial_instance_count" if self.instance_type else "instance_type"
            raise SpecError(field, getattr(self, field), "Must specify instance type and instance count "
                            "unless using serverless inference (e.g. instance_type: ml.m5.xlarge, "
                            "initial_instance_count: 1)", problem="is required")
        if self.endpoint_name is not None:
            validate_endpoint_name(self.endpoint_name)
        if self.serverless:
            _check_arguments(self.serverless_inference_config or {}, SERVERLESS_FIELDS,
                             "serverless_inference_config", "ServerlessInferenceConfig")
        capture = self.data_capture_config
        if capture is not None:
            _check_arguments(capture, DATA_CAPTURE_FIELDS, "data_capture_config", "DataCaptureConfig")
            if not isinstance(capture.get("enable_capture"), bool):
                raise SpecError("data_capture_config.enable_capture", capture.get("enable_capture"),
                                "use true or false", problem="is required")
            if capture.get("destination_s3_uri") is not None:
                check_location(capture["destination_s3_uri"], "data_capture_config.destination_s3_uri")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeploySpec:
        """Build from a plain mapping, refusing unknown keys by name."""
        return _from_dict(cls, data, "a deploy argument", ())
