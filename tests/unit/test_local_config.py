"""Where the local runtime keeps its data."""

from pathlib import Path

import pytest

from airflow_sm_pytorch.local import config

pytestmark = pytest.mark.fast  # the quick lane: scripts/test.sh -m fast


def test_root_comes_from_the_environment_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv(config.ROOT_ENV, str(tmp_path / "explicit"))
    assert config.default_root() == tmp_path / "explicit"
    monkeypatch.delenv(config.ROOT_ENV)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert config.default_root() == tmp_path / "xdg" / "airflow-sm-pytorch"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config.default_root() == tmp_path / "home" / ".local" / "share" / "airflow-sm-pytorch"


def test_default_bucket_is_a_file_uri_under_the_root(tmp_path):
    uri = config.default_bucket_uri(tmp_path, "eu-west-1")
    assert uri == (tmp_path.resolve() / "store" / "sagemaker-eu-west-1").as_uri()
    assert Path(uri.removeprefix("file://")).parent.name == "store"
