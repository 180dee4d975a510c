"""airflow:* tags trace every job, model and endpoint back to its task instance."""

from types import SimpleNamespace

import pytest

from airflow_sm_pytorch.operators.tagging import MAX_TAGS, merge_tags, task_tags

pytestmark = pytest.mark.fast  # the quick lane: scripts/test.sh -m fast

TI = SimpleNamespace(dag_id="d", task_id="t", run_id="manual__2026-12-04T15:40:32+00:00 #1", try_number=2)


def test_task_tags_fit_sagemakers_value_pattern():
    tags = {t["Key"]: t["Value"] for t in task_tags(TI)}
    assert tags == {"airflow:dag_id": "d", "airflow:task_id": "t",
                    "airflow:run_id": "manual__2026-12-04T15:40:32+00:00 _1", "airflow:try_number": "2"}


def test_user_tags_win_and_the_limit_holds():
    warnings = []
    merged = merge_tags({"team": "ml", "airflow:dag_id": "mine"}, task_tags(TI))
    assert merged[:2] == [{"Key": "team", "Value": "ml"}, {"Key": "airflow:dag_id", "Value": "mine"}]
    assert [t["Key"] for t in merged[2:]] == ["airflow:task_id", "airflow:run_id", "airflow:try_number"]
    many = [{"Key": f"k{i}", "Value": "v"} for i in range(48)]
    merged = merge_tags(many, task_tags(TI), lambda *a: warnings.append(a))
    assert len(merged) == MAX_TAGS and merged[-1]["Key"] == "airflow:task_id" and warnings
    assert merge_tags(None, task_tags(TI)) == task_tags(TI)
