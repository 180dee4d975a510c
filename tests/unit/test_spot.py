"""Spot interruption settings of the local runtime: AFTER[xTIMES], the tag, the runtime default."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_sm_pytorch.local.server import _spot_interruptions
from airflow_sm_pytorch.local.training import spot
from airflow_sm_pytorch.local.training.spot import SpotInterruptions


@pytest.mark.parametrize(("text", "expected"), [
    ("5", SpotInterruptions(5.0, 1)), ("2.5x3", SpotInterruptions(2.5, 3)), (" .5X2 ", SpotInterruptions(0.5, 2)),
    ("0", None), ("off", None),
])
def test_parse(text, expected):
    assert spot.parse(text) == expected


@pytest.mark.parametrize("text", ["", "x2", "5x0", "-1", "soon", "5x", "1e3", "nan"])
def test_parse_refuses_what_is_not_after_x_times(text):
    with pytest.raises(ValueError, match="AFTER\\[xTIMES\\]"):
        spot.parse(text, "--spot-interruptions")


def _request(spot_job: bool, tag: str | None = None) -> dict:
    request: dict = {"EnableManagedSpotTraining": True} if spot_job else {}
    if tag is not None:
        request["Tags"] = [{"Key": "airflow:dag_id", "Value": "d"}, {"Key": spot.TAG, "Value": tag}]
    return request


def test_the_tag_wins_over_the_runtime_default_and_an_on_demand_job_gets_nothing():
    default = SpotInterruptions(9, 1)
    assert spot.for_job(_request(True), default) == default
    assert spot.for_job(_request(True, "1x2"), default) == SpotInterruptions(1, 2)
    assert spot.for_job(_request(True, "off"), default) is None
    assert spot.for_job(_request(False, "1x2"), default) is None
    assert spot.for_job(_request(False), default) is None
    with pytest.raises(ValueError, match=spot.TAG):
        spot.for_job(_request(True, "soon"), None)


def test_billable_time_is_a_fraction_of_the_instance_time():
    assert spot.billable_seconds(100) == 30 and spot.billable_seconds(0.1) == 1


def test_the_serve_flag_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("SM_PYTORCH_LOCAL_SPOT_INTERRUPTIONS", "4x2")
    assert _spot_interruptions(SimpleNamespace()) == SpotInterruptions(4, 2)
    assert _spot_interruptions(SimpleNamespace(spot_interruptions="1")) == SpotInterruptions(1, 1)
    monkeypatch.setenv("SM_PYTORCH_LOCAL_SPOT_INTERRUPTIONS", "later")
    with pytest.raises(ValueError, match="SM_PYTORCH_LOCAL_SPOT_INTERRUPTIONS"):
        _spot_interruptions(SimpleNamespace())
    monkeypatch.delenv("SM_PYTORCH_LOCAL_SPOT_INTERRUPTIONS")
    assert _spot_interruptions(SimpleNamespace()) is None


def test_an_interrupt_file_is_consumed_once(tmp_path):
    assert not spot.interrupt_requested(tmp_path)
    (tmp_path / spot.INTERRUPT_FILE).touch()
    assert spot.interrupt_requested(tmp_path) and not spot.interrupt_requested(tmp_path)
