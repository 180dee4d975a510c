"""Job names: the SDK's ``name_from_base`` and deterministic task-instance names."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from airflow_sm_pytorch.builders.naming import (
    JOB_NAME_RE,
    sdk_job_name,
    task_job_name,
    validate_job_name,
)
from airflow_sm_pytorch.exceptions import SpecError

pytestmark = pytest.mark.fast  # the quick lane: scripts/test.sh -m fast

T = 1704164645.678  # 2024-01-02 03:04:05.678 UTC


def test_sdk_name_from_base() -> None:
    assert sdk_job_name("pytorch-training", now=T) == "pytorch-training-2024-01-02-03-04-05-678"
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)
    assert sdk_job_name("pytorch-training", now=when) == "pytorch-training-2024-01-02-03-04-05-678"
    long = sdk_job_name("b" * 80, now=T)
    assert long == "b" * 39 + "-2024-01-02-03-04-05-678" and len(long) == 63
    assert re.fullmatch(r"pytorch-training-\d{4}(-\d\d){5}-\d{1,3}", sdk_job_name("pytorch-training"))


def test_sdk_name_does_not_sanitise() -> None:
    with pytest.raises(SpecError):
        validate_job_name(sdk_job_name("my_base", now=T))


def test_task_job_name_is_deterministic_and_unique() -> None:
    ids = dict(dag_id="train_dag", task_id="fit", run_id="manual__2024-01-02T03:04:05+00:00")
    name = task_job_name(**ids)
    assert name == task_job_name(**ids)
    assert re.fullmatch(r"train-dag-fit-[0-9a-f]{16}", name)
    others = {
        task_job_name(**{**ids, "run_id": "scheduled__2024-01-03"}),
        task_job_name(**ids, map_index=0),
        task_job_name(**ids, map_index=1),
        task_job_name(**{**ids, "task_id": "fit2"}),
        # ids that would collide if simply joined with "-"
        task_job_name(dag_id="train_dag-fit", task_id="", run_id=ids["run_id"]),
    }
    assert name not in others and len(others) == 5


@pytest.mark.parametrize("kwargs, prefix", [
    (dict(dag_id="d" * 200, task_id="t" * 200, run_id="r" * 300, map_index=12345), "d" * 46),
    (dict(dag_id="___", task_id="...", run_id="r"), "pytorch"),
    (dict(dag_id="d", task_id="t", run_id="r", base_job_name="My_Job.v2"), "My-Job-v2"),
    (dict(dag_id="d", task_id="t", run_id="r", base_job_name="-" * 5), "pytorch"),
    (dict(dag_id="ümlaut", task_id="日本", run_id="r"), "mlaut"),
    (dict(dag_id="a" * 45 + "-b", task_id="c", run_id="r"), "a" * 45),
])
def test_task_job_name_is_always_valid(kwargs: dict, prefix: str) -> None:
    name = task_job_name(**kwargs)
    assert len(name) <= 63 and JOB_NAME_RE.fullmatch(name)
    assert validate_job_name(name) == name
    assert name.rsplit("-", 1)[0] == prefix


@pytest.mark.parametrize("bad", ["", "-a", "a-", "a_b", "a.b", "x" * 64, "ok\n", None, 5])
def test_validate_job_name_rejects(bad: object) -> None:
    with pytest.raises(SpecError) as err:
        validate_job_name(bad, field="TrainingJobName")
    assert err.value.field == "TrainingJobName"
    assert "63" in str(err.value) and "[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}" in str(err.value)


def test_validate_job_name_accepts() -> None:
    for good in ("a", "a--b", "A1-b2", "x" * 63):
        assert validate_job_name(good) == good
