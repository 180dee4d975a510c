"""The one place that decides what is secret."""

import pytest

from airflow_sm_pytorch._redact import MASK, is_sensitive, redact, secrets

pytestmark = pytest.mark.fast  # the quick lane: scripts/test.sh -m fast


def test_sensitive_key_names():
    for key in ("hf_token", "HF_TOKEN", "api-key", "apikey", "db_password", "passwd", "client_secret",
                "aws_access_key_id", "private_key", "Authorization", "credentials", "accessToken", "WANDB_API_KEY"):
        assert is_sensitive(key), key
    for key in ("epochs", "lr", "batch-size", "model_name", "tokenizer_name", "max_tokens", "keyword"):
        assert not is_sensitive(key), key


def test_redact_masks_at_any_depth_and_leaves_the_rest():
    request = {"HyperParameters": {"epochs": "2", "hf_token": '"abc"'},
               "Environment": {"WANDB_API_KEY": "k", "MODE": "x"},
               "Tags": [{"Key": "team", "Value": "ml"}]}
    assert redact(request) == {"HyperParameters": {"epochs": "2", "hf_token": MASK},
                               "Environment": {"WANDB_API_KEY": MASK, "MODE": "x"},
                               "Tags": [{"Key": "team", "Value": "ml"}]}
    assert request["HyperParameters"]["hf_token"] == '"abc"'  # a copy; the request itself is untouched


def test_secrets_lists_values_including_their_json_encoded_form():
    found = set(secrets({"hyperparameters": {"hf_token": "abc", "n": 1}, "environment": {"PASSWORD": "pw"}}))
    assert found == {"abc", "pw"}
    assert set(secrets({"HyperParameters": {"hf_token": '"abc"'}})) == {'"abc"', "abc"}
