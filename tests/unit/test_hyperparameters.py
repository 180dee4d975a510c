"""SDK hyperparameter encoding (``_json_encode_hyperparameters``), reserved keys and API limits."""

from __future__ import annotations

import pytest

from airflow_sm_pytorch.builders import hyperparameters as hp
from airflow_sm_pytorch.exceptions import SpecError

pytestmark = pytest.mark.fast  # the quick lane: scripts/test.sh -m fast


def test_encoding_matches_the_captured_request() -> None:
    assert hp.encode_hyperparameters({"epochs": 10, "lr": 0.01, "model_name": "resnet", "flag": True,
                                      "lst": [1, 2], "none": None, "d": {"a": 1}, 3: "x"}) == {
        "epochs": "10", "lr": "0.01", "model_name": '"resnet"', "flag": "true", "lst": "[1, 2]",
        "none": "null", "d": '{"a": 1}', "3": '"x"'}
    assert hp.encode_hyperparameters(None) == {}


def test_script_mode_keys_in_sdk_order() -> None:
    encoded = hp.script_mode_hyperparameters(
        program="train.py", submit_directory="s3://b/j/source/sourcedir.tar.gz", job_name="j",
        region="us-west-2")
    assert list(encoded) == list(hp.SCRIPT_MODE_KEYS)
    assert encoded == {
        "sagemaker_submit_directory": '"s3://b/j/source/sourcedir.tar.gz"',
        "sagemaker_program": '"train.py"',
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": '"j"',
        "sagemaker_region": '"us-west-2"',
    }
    assert hp.script_mode_hyperparameters(program="p", submit_directory="d", job_name="j", region="r",
                                          container_log_level=10)["sagemaker_container_log_level"] == "10"


def test_reserved_keys() -> None:
    assert set(hp.SCRIPT_MODE_KEYS) <= hp.RESERVED_KEYS
    distribution = {"sagemaker_torch_distributed_enabled", "sagemaker_instance_type", "mp_parameters"}
    assert distribution <= hp.RESERVED_KEYS
    for key in ("sagemaker_region", "sagemaker_mpi_enabled", "sagemaker_custom", "mp_parameters"):
        with pytest.raises(SpecError, match="is reserved") as err:
            hp.check_user_hyperparameters({key: 1})
        assert err.value.field == f"hyperparameters[{key}]"
    assert hp.check_user_hyperparameters({"my_sagemaker_flag": 1}) == {"my_sagemaker_flag": "1"}


def test_not_serialisable_names_key_value_and_fix() -> None:
    with pytest.raises(SpecError) as err:
        hp.encode_hyperparameters({"when": {1, 2}})
    assert err.value.field == "hyperparameters[when]"
    assert err.value.value == {1, 2}
    assert "JSON-serialisable" in str(err.value)


def test_limits() -> None:
    hp.check_user_hyperparameters({f"k{i}": i for i in range(95)})
    with pytest.raises(SpecError, match="96 given \\+ 5") as err:
        hp.check_user_hyperparameters({f"k{i}": i for i in range(96)})
    assert err.value.value == {f"k{i}": str(i) for i in range(96)}  # the value, not "101 entries"
    assert str(err.value).startswith("hyperparameters={'k0': '0'")
    hp.check_user_hyperparameters({"v": "x" * 2498})  # 2,500 with the quotes
    with pytest.raises(SpecError, match="2501 characters") as err:
        hp.check_user_hyperparameters({"v": "x" * 2499})
    assert err.value.field == "hyperparameters[v]"
    hp.check_user_hyperparameters({"k" * 256: 1})
    with pytest.raises(SpecError, match="at most 256"):
        hp.check_user_hyperparameters({"k" * 257: 1})
