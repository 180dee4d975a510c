"""Check a request against botocore's own SageMaker service model before anything is sent.

botocore's ``validate_parameters`` checks types, required members, ranges and lengths but skips the
``pattern`` of string shapes (job names, channel names, S3 URIs, environment keys …); we apply those
too, as full matches, the way the service does. Every problem becomes a :class:`SpecError` that names the
field by its path in the request (``CreateTrainingJob.ResourceConfig.InstanceCount``).

botocore is imported here lazily, so importing the package (and operators) stays cheap.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

from airflow_sm_pytorch.exceptions import SpecError

#: The S3Uri shape's pattern also admits file:// URIs when the target is the local runtime.
_FILE_URI = re.compile(r"file://.+")


@functools.cache
def _model(service: str) -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error:  # a Java-only construct; botocore cannot check it either
        return None


def input_shape(operation: str, service: str = "sagemaker") -> Any:
    return _model(service).operation_model(operation).input_shape


def validate_request(
    operation: str,
    params: Mapping[str, Any],
    *,
    allow_file_uris: bool = False,
    service: str = "sagemaker",
) -> None:
    """Raise :class:`SpecError` for the first problem in ``params`` for ``operation``.

    ``allow_file_uris`` lets S3 URI fields hold ``file://`` URIs: the local runtime stores objects on
    disk, AWS does not.
    """
    from botocore.exceptions import ParamValidationError
    from botocore.validate import ParamValidator

    shape = input_shape(operation, service)
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        # botocore lists every error; the first one, reworded, is the actionable one.
        text = str(ParamValidationError(report=report.generate_report()))
        errors = getattr(report, "_errors", None) or [("", "", {})]
        raise _from_botocore(operation, errors[0], text)
    for path, value, sub in _strings(params, shape, operation):
        pattern = sub.metadata.get("pattern")
        if pattern is None:
            continue
        if allow_file_uris and sub.name == "S3Uri" and _FILE_URI.fullmatch(value):
            continue
        regex = _compiled(pattern)
        if regex is not None and not regex.fullmatch(value):
            raise SpecError(
                path,
                value,
                f"it must match the pattern {pattern!r} of the {sub.name} shape in the SageMaker API",
                problem="is not accepted by SageMaker",
            )


def _strings(value: Any, shape: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    kind = shape.type_name
    if kind == "structure" and isinstance(value, Mapping):
        for key, member in shape.members.items():
            if key in value:
                yield from _strings(value[key], member, f"{path}.{key}")
    elif kind == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, shape.member, f"{path}[{i}]")
    elif kind == "map" and isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(key, shape.key, f"{path} key")
            yield from _strings(item, shape.value, f"{path}[{key!r}]")
    elif kind == "string" and isinstance(value, str):
        yield path, value, shape


def _from_botocore(operation: str, error: tuple[str, str, dict[str, Any]], text: str) -> SpecError:
    kind, name, details = error
    name = name.lstrip(".")
    field = f"{operation}.{name}" if name else operation
    value = details.get("param", details.get("value"))
    if kind == "unknown field":
        field, value = f"{field}.{details.get('unknown_param')}", "(present)"
    fixes = {
        "missing required field": lambda d: f"add the required member {d.get('required_name')!r}",
        "unknown field": lambda d: f"remove it; valid members are {d.get('valid_names')}",
        "invalid type": lambda d: f"use a value of type {' or '.join(getattr(t, '__name__', str(t)) for t in d.get('valid_types', []))}",
        "invalid range": lambda d: f"use a value of at least {d.get('min_allowed')}",
        "invalid length": lambda d: f"use a length of at least {d.get('min_allowed')}",
        "invalid enum": lambda d: f"use one of {d.get('valid_values')}",
    }
    fix = fixes.get(kind, lambda d: text)(details)
    if kind == "missing required field":
        field = f"{field}.{details.get('required_name')}" if name else f"{operation}.{details.get('required_name')}"
    return SpecError(field, value, fix, problem="is not accepted by SageMaker")
