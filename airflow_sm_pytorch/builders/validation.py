"""Check a request against botocore's own service model before anything is sent.

botocore's ``ParamValidator`` checks types, required and unknown members and *minimum* lengths and
values. It skips the rest of what the model knows, and so would we without this module: maximum
lengths and values (50 tags, 100 hyperparameters, ``MaximumRetryAttempts`` <= 30, ``MaxResults`` <=
100 …), enums at every depth (``TrainingInputMode``, ``InstanceType`` …) and the ``pattern`` of string
shapes (job names, channel names, S3 URIs, tag keys …), which we apply as full matches, the way the
service does. Java's ``\\p{L}``-style classes in patterns are honoured (Python's ``re`` lacks them).

A few rules the model does not encode are checked too, by shape name, for every operation:

* ``MaxRuntimeInSeconds`` <= 28 days (2,419,200 s), as the API reference says; ``MaxWaitTimeInSeconds``
  has no documented maximum, but must be >= ``MaxRuntimeInSeconds``;
* tag keys starting with ``aws:`` are reserved for AWS;
* every ``MetricDefinitions`` regex must compile (a bad one is named by its metric).

Every problem becomes a :class:`SpecError` that prints the offending value (never just its length).
The field is the request path (``CreateTrainingJob.ResourceConfig.InstanceCount``), or, when the caller
says where a value came from (``fields``: request path -> SDK argument, as the training builder does),
the user's own argument (``instance_count``), with the request path in the message.

botocore is imported here lazily, so importing the package (and operators) stays cheap.
"""

from __future__ import annotations

import difflib
import functools
import re
import unicodedata
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from airflow_sm_pytorch.exceptions import SpecError

#: The S3Uri (and model data ``Url``) shapes also admit file:// URIs when the target is the local runtime.
_FILE_URI_SHAPES = frozenset({"S3Uri", "Url"})
_FILE_URI = re.compile(r"file://.+")
#: Instance types the local runtime accepts wherever an ``*InstanceType`` enum is checked.
LOCAL_INSTANCE_TYPES = ("local", "local_gpu")
#: StoppingCondition.MaxRuntimeInSeconds: "The maximum value is 28 days" (API reference).
MAX_RUNTIME_SECONDS = 28 * 24 * 60 * 60
RESERVED_TAG_PREFIX = "aws:"
_NUMBERS = ("integer", "long", "double", "float")


class _Problem(NamedTuple):
    path: str  # in the request, without the operation: "ResourceConfig.InstanceCount"
    value: Any
    problem: str  # "is too long"
    fix: str


@functools.cache
def _model(service: str) -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def input_shape(operation: str, service: str = "sagemaker") -> Any:
    return _model(service).operation_model(operation).input_shape


def validate_request(
    operation: str,
    params: Mapping[str, Any],
    *,
    allow_file_uris: bool = False,
    service: str = "sagemaker",
    fields: Mapping[str, str] | None = None,
) -> None:
    """Raise :class:`SpecError` for the first problem in ``params`` for ``operation``.

    ``allow_file_uris`` means the target is the local runtime: S3 URI fields may hold ``file://`` URIs
    and ``*InstanceType`` fields may be ``local`` or ``local_gpu``. ``fields`` maps request paths (or
    their prefixes: ``"Tags"``, ``"InputDataConfig[0]"``) to the argument the user gave, so that
    errors name it.
    """
    from botocore.validate import ParamValidator

    shape = input_shape(operation, service)
    report = ParamValidator().validate(params, shape)
    errors = list(getattr(report, "_errors", None) or []) if report.has_errors() else []
    # botocore reports a length as its value ("RoleArn=10"); our walk below checks min and max itself.
    structural = [e for e in errors if e[0] not in ("invalid length", "invalid range")]
    if structural:
        raise _error(operation, _from_botocore(structural[0]), fields)
    for problem in _walk(params, shape, "", allow_file_uris):
        raise _error(operation, problem, fields)
    if errors:  # a range botocore knows and we somehow do not: still refuse, with botocore's words
        raise _error(operation, _from_botocore(errors[0]), fields)


def _error(operation: str, found: _Problem, fields: Mapping[str, str] | None) -> SpecError:
    where = f"{operation}.{found.path}" if found.path else operation
    user = _user_field(found.path, fields or {})
    if user is None:
        return SpecError(where, found.value, found.fix, problem=found.problem)
    return SpecError(user, found.value, found.fix, problem=f"{found.problem} (as {where})")


def _user_field(path: str, fields: Mapping[str, str]) -> str | None:
    """The argument behind ``path``: the longest key of ``fields`` that is ``path`` or a parent of it."""
    for key in sorted(fields, key=len, reverse=True):
        if path == key or (path.startswith(key) and path[len(key)] in ".[ "):
            return fields[key]
    return None


# ------------------------------------------------------------------------------- the walk
def _walk(value: Any, shape: Any, path: str, local: bool) -> Iterator[_Problem]:
    kind = shape.type_name
    if kind == "structure" and isinstance(value, Mapping):
        yield from _structure_rules(value, shape, path)
        for key, member in shape.members.items():
            if key in value:
                yield from _walk(value[key], member, f"{path}.{key}" if path else key, local)
    elif kind == "list" and isinstance(value, (list, tuple)):
        yield from _size(value, shape, path, "entries")
        for i, item in enumerate(value):
            yield from _walk(item, shape.member, f"{path}[{i}]", local)
    elif kind == "map" and isinstance(value, Mapping):
        yield from _size(value, shape, path, "entries")
        for key, item in value.items():
            yield from _walk(key, shape.key, f"{path} key", local)
            yield from _walk(item, shape.value, f"{path}[{key!r}]", local)
    elif kind == "string" and isinstance(value, str):
        yield from _string(value, shape, path, local)
    elif kind in _NUMBERS and isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high = shape.metadata.get("min"), shape.metadata.get("max")
        if shape.name == "MaxRuntimeInSeconds":
            high = MAX_RUNTIME_SECONDS if high is None else min(high, MAX_RUNTIME_SECONDS)
        if low is not None and value < low:
            yield _Problem(path, value, "is too small for SageMaker", f"use a value of at least {low}")
        if high is not None and value > high:
            days = " (28 days)" if high == MAX_RUNTIME_SECONDS else ""
            yield _Problem(path, value, "is too large for SageMaker", f"use a value of at most {high}{days}")


def _size(value: Any, shape: Any, path: str, what: str) -> Iterator[_Problem]:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and len(value) < low:
        yield _Problem(path, value, f"has too few {what}", f"give at least {low} (it has {len(value)})")
    if high is not None and len(value) > high:
        yield _Problem(path, value, f"has too many {what}",
                       f"SageMaker accepts at most {high} (it has {len(value)})")


def _string(value: str, shape: Any, path: str, local: bool) -> Iterator[_Problem]:
    yield from _size(value, shape, path, "characters")
    enum = getattr(shape, "enum", None)
    if enum and value not in enum and not (local and value in LOCAL_INSTANCE_TYPES
                                           and "InstanceType" in shape.name):
        yield _Problem(path, value, "is not accepted by SageMaker", _enum_fix(value, shape))
    if shape.name == "TagKey" and value.lower().startswith(RESERVED_TAG_PREFIX):
        yield _Problem(path, value, "is a reserved tag key",
                       f"rename it: keys starting with {RESERVED_TAG_PREFIX!r} are reserved for AWS")
    pattern = shape.metadata.get("pattern")
    if pattern is None or (local and shape.name in _FILE_URI_SHAPES and _FILE_URI.fullmatch(value)):
        return
    if not matches(pattern, value):
        yield _Problem(path, value, "is not accepted by SageMaker",
                       f"it must match the pattern {pattern!r} of the {shape.name} shape in the SageMaker API")


def _enum_fix(value: str, shape: Any) -> str:
    enum = list(shape.enum)
    local = f" (or {' / '.join(LOCAL_INSTANCE_TYPES)} on the local runtime)" if "InstanceType" in shape.name else ""
    if len(enum) <= 12:
        return f"use one of {enum}{local}"
    close = difflib.get_close_matches(value, enum, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    return f"{hint}use one of the {len(enum)} values of the {shape.name} enum in the SageMaker API{local}"


def _structure_rules(value: Mapping[str, Any], shape: Any, path: str) -> Iterator[_Problem]:
    if shape.name == "StoppingCondition":
        run, wait = value.get("MaxRuntimeInSeconds"), value.get("MaxWaitTimeInSeconds")
        if isinstance(run, int) and isinstance(wait, int) and wait < run:
            yield _Problem(f"{path}.MaxWaitTimeInSeconds", wait, "is shorter than MaxRuntimeInSeconds",
                           f"use a value >= MaxRuntimeInSeconds ({run}): it covers waiting for spot "
                           "capacity plus the training itself")
    elif shape.name == "MetricDefinition" and isinstance(value.get("Regex"), str):
        try:
            re.compile(_python_pattern(value["Regex"]))
        except re.error as exc:
            yield _Problem(f"{path}.Regex", value["Regex"], f"(metric {value.get('Name')!r}) is not a valid "
                           "regular expression", f"fix the regex ({exc}); SageMaker applies it to each log "
                           "line and reports the first group as the metric's value")


# ------------------------------------------------------------------------------- patterns
#: Java's Unicode general-category classes, matched through one private-use stand-in per category.
_CATEGORIES = {"L": "\ue000", "M": "\ue001", "Z": "\ue002", "S": "\ue003", "N": "\ue004", "P": "\ue005"}
_STAND_INS = frozenset(_CATEGORIES.values())
_JAVA_CLASS = re.compile(r"\\p\{(\w+)\}")


@functools.cache
def _class_body(name: str) -> str | None:
    if name == "Alnum":  # POSIX, ASCII only in Java
        return "a-zA-Z0-9"
    if name not in _CATEGORIES:
        return None
    ascii_members = "".join(chr(c) for c in range(128) if unicodedata.category(chr(c))[0] == name)
    return re.escape(ascii_members) + _CATEGORIES[name]


def _python_pattern(pattern: str) -> str:
    """``pattern`` with Java's ``\\p{..}`` classes rewritten for :func:`_fold`-ed text."""
    if "\\p{" not in pattern:
        return pattern
    out, in_class, i = [], False, 0
    while i < len(pattern):
        match = _JAVA_CLASS.match(pattern, i)
        if match and _class_body(match.group(1)) is not None:
            body = _class_body(match.group(1))
            out.append(body if in_class else f"[{body}]")
            i = match.end()
            continue
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        in_class = (in_class or char == "[") and not (in_class and char == "]")
        out.append(char)
        i += 1
    return "".join(out)


def _fold(text: str) -> str:
    """Non-ASCII characters of the categories Java patterns name become their category's stand-in."""
    if text.isascii():
        return text
    folded = []
    for char in text:
        if char.isascii():
            folded.append(char)
        elif char in _STAND_INS:
            folded.append("\uffff")  # never matches a class
        else:
            folded.append(_CATEGORIES.get(unicodedata.category(char)[0], char))
    return "".join(folded)


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(_python_pattern(pattern), re.DOTALL)
    except re.error:  # a construct Python's re lacks; botocore cannot check it either
        return None


def matches(pattern: str, value: str) -> bool:
    """Whether ``value`` fully matches a service-model ``pattern`` (True when Python cannot read it)."""
    regex = _compiled(pattern)
    if regex is None:
        return True
    return regex.fullmatch(_fold(value) if "\\p{" in pattern else value) is not None


# ------------------------------------------------------------------------------- botocore's report
_FIXES = {
    "missing required field": lambda d: f"add the required member {d.get('required_name')!r}",
    "unknown field": lambda d: f"remove it; valid members are {d.get('valid_names')}",
    "invalid type": lambda d: "use a value of type " + " or ".join(
        re.sub(r"<class '(\w+)'>", r"\1", str(t)) for t in d.get("valid_types", [])),
    "invalid range": lambda d: f"use a value of at least {d.get('min_allowed')}",
    "invalid length": lambda d: f"use a length of at least {d.get('min_allowed')}",
}


def _from_botocore(error: tuple[str, str, dict[str, Any]]) -> _Problem:
    kind, name, details = error
    path = name.lstrip(".")
    value = details.get("param", details.get("value"))
    if kind == "unknown field":
        path, value = f"{path}.{details.get('unknown_param')}".lstrip("."), "(present)"
    elif kind == "missing required field":
        path = f"{path}.{details.get('required_name')}".lstrip(".")
    fix = _FIXES.get(kind, lambda d: f"{kind}: {d}")(details)
    return _Problem(path, value, "is not accepted by SageMaker", fix)
