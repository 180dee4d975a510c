"""SageMaker tags that trace a job, model or endpoint back to the task instance that made it.

Hashed resource names cannot be traced back from the console, so every operator adds ``airflow:dag_id``,
``airflow:task_id``, ``airflow:run_id`` and ``airflow:try_number`` to the user's tags. A user's tag with
the same key wins; ours are left out (with a warning) when they would pass SageMaker's 50-tag limit.
Values are made to fit SageMaker's tag-value pattern (other characters become ``_``) and 256 characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_TAGS = 50
_NOT_ALLOWED = re.compile(r"[^\w\s.:/=+\-@]")


def task_tags(ti: Any) -> list[dict[str, str]]:
    values = {"airflow:dag_id": ti.dag_id, "airflow:task_id": ti.task_id, "airflow:run_id": ti.run_id,
              "airflow:try_number": getattr(ti, "try_number", None)}
    return [{"Key": key, "Value": _NOT_ALLOWED.sub("_", str(value))[:256]}
            for key, value in values.items() if value is not None]


def merge_tags(user: Any, ours: list[dict[str, str]], warn: Any = None) -> list[dict[str, str]]:
    """The user's tags (a mapping or a list of ``{"Key", "Value"}``) followed by ours that fit."""
    if isinstance(user, Mapping):
        merged = [{"Key": str(k), "Value": str(v)} for k, v in user.items()]
    else:
        merged = [dict(t) for t in user or []]
    keys = {t.get("Key") for t in merged}
    extra = [t for t in ours if t["Key"] not in keys]
    room = max(0, MAX_TAGS - len(merged))
    if len(extra) > room and warn is not None:
        warn("%d tag(s) given: only %d of the airflow:* tags fit SageMaker's limit of %d", len(merged), room,
             MAX_TAGS)
    return merged + extra[:room]
