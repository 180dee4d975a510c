"""A HyperPod recipe job for real on the local runtime: the resolved recipe, config-path/config-name and
the upload reach a launcher (a tiny one written for this test, in the adapter's layout) as on SageMaker."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_sm_pytorch.exceptions import SpecError
from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook
from airflow_sm_pytorch.local.store import Store
from airflow_sm_pytorch.operators.recipe import RecipeTrainOperator
from airflow_sm_pytorch.operators.train import JOB_LOG
from tests.unit.test_recipes import ADAPTER, LORA, RECIPES, TOKEN

ROLE = "arn:aws:iam::000000000000:role/local"
OVERRIDES = {"run": {"results_dir": "/opt/ml/model"}, "trainer": {"max_steps": 25, "num_nodes": 1},
             "model": {"hidden_size": 4, "optim": {"lr": 0.02}, "hf_access_token": TOKEN}}


def _context():
    return {"ti": SimpleNamespace(dag_id="d", task_id="finetune", run_id="manual__1", map_index=-1, try_number=1)}


def _operator(conn_id, **kwargs):
    args = {"training_recipe": LORA, "recipe_overrides": OVERRIDES, "role": ROLE, "instance_type": "ml.g5.xlarge",
            "recipes_dir": RECIPES, "adapter_dir": ADAPTER, "poll_interval": 0.2, **kwargs}
    return RecipeTrainOperator(task_id="finetune", aws_conn_id=conn_id, **args)


def test_recipe_job_runs_the_launcher_with_the_resolved_recipe(local_conn, local_runtime, tmp_path, monkeypatch):
    lines: list[str] = []
    monkeypatch.setattr(JOB_LOG, "info", lambda msg, *a: lines.append(msg % a if a else msg))
    op = _operator(local_conn)
    monkeypatch.setattr(op.log, "info", lambda msg, *a: lines.append(msg % a if a else msg))
    result = op.execute(_context())
    assert result["TrainingJobStatus"] == "Completed", result
    name = result["HyperParameters"]["config-name"].strip('"')
    assert name.startswith("hf_llama3_8b_seq8k_gpu_lora_") and name.endswith(".yaml")

    with tarfile.open(result["S3ModelArtifacts"].removeprefix("file://")) as tar:
        seen = json.loads(tar.extractfile("seen.json").read())
        assert "model.pth" in tar.getnames()
    assert seen["config_path"] == "." and seen["config_name"] == name == seen["hp_config_name"]
    argv = seen["argv"]  # hyperparameters -> argv sorted by name, as the training toolkit does
    assert argv[argv.index("--config-path") + 1] == "." and argv[argv.index("--config-name") + 1] == name
    assert {name, "llama_pretrain.py"} <= set(seen["code_files"])
    assert (seen["max_steps"], seen["hidden_size"], seen["results_dir"]) == (25, 4, "/opt/ml/model")
    assert seen["token_sha256"] == hashlib.sha256(TOKEN.encode()).hexdigest()  # the token reached the job
    assert seen["world_size"] == "1" and seen["final_loss"] < 5.0  # torchrun, and it learned
    assert any(line.startswith("step=24 loss=") for line in lines)

    # ... and was printed nowhere: task log, XCom, rendered field, the request the runtime stored
    request = Store(local_runtime.root).get_job(result["TrainingJobName"])["request"]
    assert TOKEN not in "\n".join(lines) + json.dumps(result) + op.resolved_recipe + json.dumps(request)
    assert request["ResourceConfig"] == {"VolumeSizeInGB": 30, "InstanceCount": 1, "InstanceType": "ml.g5.xlarge"}
    assert json.loads(request["HyperParameters"]["mp_parameters"]) == {"placement_strategy": "cluster"}
    assert not any(Path("/tmp").glob(f"sm-recipe-*/{name}"))  # the staged code is gone


def test_a_launcher_that_cannot_run_here_fails_before_any_job(local_conn, tmp_path):
    with pytest.raises((SpecError, AirflowFailException)) as err:  # a bad input is not retried
        _operator(local_conn, adapter_dir=None).execute(_context())
    assert str(err.value).startswith("adapter_dir=None is required") and "never a git clone" in str(err.value)
    hook = SageMakerPyTorchHook(aws_conn_id=local_conn)
    assert hook.conn.list_training_jobs()["TrainingJobSummaries"] == []
