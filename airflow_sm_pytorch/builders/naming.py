"""Training job names: the SDK's ``name_from_base`` and deterministic names for Airflow task instances.

The SDK names a job ``<base>-<UTC timestamp with milliseconds>``: a retry gets a new name and starts a
second job. An Airflow task instance instead gets :func:`task_job_name`, which depends only on
``(dag_id, task_id, run_id, map_index)`` (not the try number), so a retried task finds the job its
previous try started instead of launching another one.

>>> sdk_job_name("pytorch-training", now=1704164645.678)
'pytorch-training-2024-01-02-03-04-05-678'
>>> task_job_name(dag_id="train_dag", task_id="fit", run_id="manual__1", map_index=-1)[:14]
'train-dag-fit-'
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import time

from airflow_sm_pytorch.exceptions import SpecError

#: ``TrainingJobName`` in the SageMaker API (botocore service model): pattern and maximum length.
JOB_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
JOB_NAME_RE = re.compile(JOB_NAME_PATTERN)
MAX_JOB_NAME_LENGTH = 63

#: ``EndpointName`` / ``EndpointConfigName`` share the job name's pattern; ``ModelName`` has its own.
ENDPOINT_NAME_PATTERN = JOB_NAME_PATTERN
MODEL_NAME_PATTERN = r"^[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?$"
_TIMESTAMP_SUFFIX = re.compile(r"^(.+)-(\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{3}|\d{6}-\d{4})")

#: Hex characters of the sha256 digest that make a task-instance name unique (64 bits).
DIGEST_LENGTH = 16
DEFAULT_PREFIX = "pytorch"


def sagemaker_timestamp(now: float | _dt.datetime | None = None) -> str:
    """``%Y-%m-%d-%H-%M-%S-<ms>`` in UTC, where ``<ms>`` is the first 3 digits after the dot of
    ``repr(time.time())``, exactly as ``sagemaker.utils.sagemaker_timestamp`` does."""
    if now is None:
        moment = time.time()
    elif isinstance(now, _dt.datetime):
        moment = (now if now.tzinfo else now.replace(tzinfo=_dt.timezone.utc)).timestamp()
    else:
        moment = float(now)
    moment_ms = repr(moment).split(".")[1][:3]
    return time.strftime(f"%Y-%m-%d-%H-%M-%S-{moment_ms}", time.gmtime(moment))


def sdk_job_name(base: str, now: float | _dt.datetime | None = None) -> str:
    """``sagemaker.utils.name_from_base``: the base trimmed to 39 characters, ``-`` and a timestamp.

    Like the SDK, the base is not sanitised; :func:`validate_job_name` reports a bad one.
    """
    timestamp = sagemaker_timestamp(now)
    trimmed = base[: MAX_JOB_NAME_LENGTH - len(timestamp) - 1]
    return f"{trimmed}-{timestamp}"


def base_from_name(name: str) -> str:
    """``sagemaker.utils.base_from_name``: ``name`` without its ``-<timestamp>`` suffix (either SDK form)."""
    match = _TIMESTAMP_SUFFIX.match(name)
    return match.group(1) if match else name


def sanitise(text: str) -> str:
    """Every run of characters outside ``[a-zA-Z0-9]`` becomes one ``-``; leading/trailing ``-`` go."""
    return re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-")


def task_job_name(
    *,
    dag_id: str,
    task_id: str,
    run_id: str,
    map_index: int = -1,
    base_job_name: str | None = None,
) -> str:
    """A valid job name (<= 63 characters) that is the same for every try of one task instance.

    It is a readable prefix (``base_job_name`` if given, else ``<dag_id>-<task_id>``, sanitised and
    trimmed; ``pytorch`` if nothing is left) plus ``-`` and 16 hex characters of the sha256 of the
    four ids, so different runs and map indexes never share a name, however long or odd the ids.
    """
    identity = json.dumps([dag_id, task_id, run_id, int(map_index)], separators=(",", ":"))
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:DIGEST_LENGTH]
    readable = base_job_name if base_job_name else f"{dag_id}-{task_id}"
    room = MAX_JOB_NAME_LENGTH - DIGEST_LENGTH - 1
    prefix = sanitise(sanitise(readable)[:room]) or DEFAULT_PREFIX
    return f"{prefix}-{digest}"


def _validate_name(name: object, field: str, pattern: str, what: str) -> str:
    if not isinstance(name, str) or len(name) > MAX_JOB_NAME_LENGTH or not re.fullmatch(pattern, name):
        detail = f" (it has {len(name)})" if isinstance(name, str) and len(name) > MAX_JOB_NAME_LENGTH else ""
        raise SpecError(
            field,
            name,
            f"use at most {MAX_JOB_NAME_LENGTH} characters{detail} matching {pattern}: {what}",
        )
    return name


def validate_job_name(name: object, field: str = "job_name") -> str:
    """Return ``name`` if SageMaker accepts it as a training job name, else raise :class:`SpecError`."""
    return _validate_name(name, field, JOB_NAME_PATTERN, "letters, digits and hyphens, starting and "
                          "ending with a letter or digit (no '_' or '.')")


def validate_endpoint_name(name: object, field: str = "endpoint_name") -> str:
    """``EndpointName`` (and ``EndpointConfigName``): the training job name's rules."""
    return validate_job_name(name, field)


def validate_model_name(name: object, field: str = "name") -> str:
    """``ModelName``: letters, digits and hyphens (no double-hyphen rule), at most 63 characters."""
    return _validate_name(name, field, MODEL_NAME_PATTERN, "letters, digits and hyphens, starting and "
                          "ending with a letter or digit (no '_' or '.')")
