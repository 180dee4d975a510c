"""Typed, frozen inputs users give: the SageMaker SDK ``PyTorch`` estimator's keyword arguments.

``TrainingSpec`` mirrors ``sagemaker.pytorch.PyTorch(...)`` plus ``fit(inputs=..., job_name=...)``, so a
user can move an SDK call into a DAG by copying its keyword arguments. It holds data and checks what can
be checked without I/O (``__post_init__``); turning it into a request is ``builders.training``'s job.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_sm_pytorch.builders.hyperparameters import check_user_hyperparameters
from airflow_sm_pytorch.builders.naming import validate_job_name
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


def _check_required(spec: TrainingSpec) -> None:
    if not spec.entry_point:
        raise SpecError("entry_point", spec.entry_point, "Argument entry_point must be set when "
                        "training_recipe is not provided", problem="is required")
    if spec.entry_point.lower().startswith("s3://"):
        raise SpecError("entry_point", spec.entry_point, f"Invalid entry point script: {spec.entry_point}. "
                        "Must be a path to a local file.")
    check_entry_point(spec.entry_point, spec.source_dir)
    if not spec.role:
        raise SpecError("role", spec.role, "An AWS IAM role is required to create an estimator. Please "
                        "provide a valid `role` argument with the ARN of an IAM role that has the necessary "
                        "SageMaker permissions.", problem="is required")
    if "/" not in spec.role:
        raise SpecError("role", spec.role, "use the role's full ARN (arn:aws:iam::<account>:role/<name>); "
                        "a bare role name would need an IAM lookup")
    if (spec.framework_version is None or spec.py_version is None) and spec.image_uri is None:
        field = "py_version" if spec.framework_version else "framework_version"
        raise SpecError(field, None, "framework_version or py_version was None, yet image_uri was also None. "
                        "Either specify both framework_version and py_version, or specify image_uri.",
                        problem="is required")
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


def _check_tags_env(spec: TrainingSpec) -> None:
    tags = spec.tags
    if tags is not None and not isinstance(tags, Mapping):
        if isinstance(tags, (str, bytes)) or not isinstance(tags, Sequence) or not all(
                isinstance(t, Mapping) and set(t) == {"Key", "Value"} for t in tags):
            raise SpecError("tags", tags,
                            'use a mapping {"key": "value"} or a list of {"Key": ..., "Value": ...}')
    env = spec.environment or {}
    if len(env) > MAX_ENV_ENTRIES:
        raise SpecError("environment", dict(env), f"use at most {MAX_ENV_ENTRIES} variables (it has "
                        f"{len(env)})", problem="has too many entries")
    for key, value in env.items():
        if not isinstance(key, str) or len(key) > MAX_ENV_LENGTH or not ENV_KEY_RE.fullmatch(key):
            raise SpecError(f"environment[{key}]", key, "use a name matching [a-zA-Z_][a-zA-Z0-9_]* of at "
                            f"most {MAX_ENV_LENGTH} characters", problem="is not a valid variable name")
        if not isinstance(value, str):
            raise SpecError(f"environment[{key}]", value,
                            f'quote it: environment values are strings ("{value}")')
        if len(value) > MAX_ENV_LENGTH:
            raise SpecError(f"environment[{key}]", value, f"use at most {MAX_ENV_LENGTH} characters "
                            f"(it has {len(value)}); pass longer values in a file", problem="is too long")


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
    distribution: Mapping[str, Any] | None = None  # reserved for the distributed-training issue
    # fit(...)
    inputs: Any = None  # a URI string, or {channel: URI | TrainingInput-like dict}
    job_name: str | None = None

    def __post_init__(self) -> None:
        """Every check that needs no filesystem, network or session (those are the builder's)."""
        _check_types(self)
        _check_required(self)
        _check_resources(self)
        _check_tags_env(self)
        check_user_hyperparameters(self.hyperparameters)
        _check_inputs(self)
        if self.job_name is not None:
            validate_job_name(self.job_name)
        if self.distribution:
            # The distribution issue fills builders.training._distribution_hyperparameters; until then:
            raise SpecError("distribution", dict(self.distribution), "distribution is not supported yet "
                            "(next release); remove it to train on a single process per instance",
                            problem="is not supported")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingSpec:
        """Build from a plain mapping (a spec file, operator kwargs), refusing unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, sorted(known), n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"use one of {sorted(known)}"
            raise SpecError(key, data[key], fix, problem="is not a PyTorch estimator argument")
        kwargs = dict(data)
        for name in ("dependencies", "subnets", "security_group_ids", "metric_definitions"):
            if isinstance(kwargs.get(name), list):
                kwargs[name] = tuple(kwargs[name])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The non-default fields, JSON-friendly (what a spec file would hold)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out
