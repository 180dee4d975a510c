"""RecipeTrainOperator without a runtime: templating, the staged spec, secrets, and the local-runtime checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk import DAG

from airflow_sm_pytorch.exceptions import SpecError
from airflow_sm_pytorch.local.training import contract
from airflow_sm_pytorch.operators import recipe as recipe_module
from airflow_sm_pytorch.operators.recipe import RecipeTrainOperator
from airflow_sm_pytorch.operators.train import PyTorchTrainOperator
from tests.unit.test_recipes import ADAPTER, LORA, NEURONX, RECIPES, RESULTS, ROLE, TOKEN, TRN


def _operator(hook_settings=None, local=True, **kwargs):
    args = {"training_recipe": LORA, "recipe_overrides": {**RESULTS, "model": {"hf_access_token": TOKEN}},
            "role": ROLE, "instance_type": "ml.g5.xlarge", "recipes_dir": RECIPES, "adapter_dir": ADAPTER,
            **kwargs}
    with DAG("d", schedule=None):
        op = RecipeTrainOperator(task_id="t", aws_conn_id="x", **args)
    op.__dict__["hook"] = SimpleNamespace(settings=hook_settings or {}, region="us-east-1", is_local=local)
    return op


def test_is_a_training_operator_with_the_recipe_templated():
    op = _operator(entry_point="ignored.py", compute={"instance_count": 1})
    assert isinstance(op, PyTorchTrainOperator)
    assert {"estimator", "recipe", "resolved_recipe"} <= set(op.template_fields)
    assert op.recipe["training_recipe"] == LORA and op.recipe["compute"] == {"instance_count": 1}
    assert op.estimator == {"entry_point": "ignored.py", "role": ROLE, "instance_type": "ml.g5.xlarge"}
    assert op.overwrite_rtif_after_execution is True


def test_build_spec_stages_launcher_and_recipe_and_masks_the_token(monkeypatch):
    masked = []
    monkeypatch.setattr("airflow.sdk.log.mask_secret", masked.append)
    op = _operator(recipe_overrides={**RESULTS, "model": {"hf_access_token": TOKEN}, "trainer": {"max_steps": "7"}},
                   instance_count="1")
    spec = op.build_spec()
    try:
        assert spec.entry_point == "llama_pretrain.py" and spec.instance_count == 1
        name = spec.hyperparameters["config-name"]
        staged = sorted(p.name for p in Path(spec.source_dir).iterdir())
        assert staged == sorted([name, "llama_pretrain.py"])
        assert TOKEN in (Path(spec.source_dir) / name).read_text()  # still sent
        assert TOKEN not in op.resolved_recipe and "max_steps: 7  # overridden" in op.resolved_recipe
        assert TOKEN in masked
    finally:
        op._cleanup()
    assert not os.path.exists(spec.source_dir)


def test_connection_settings_are_used_when_the_operator_gives_none(monkeypatch):
    monkeypatch.setattr("airflow.sdk.log.mask_secret", lambda s: None)
    op = _operator(hook_settings={"recipes_dir": RECIPES, "adapter_dir": "/nowhere"}, recipes_dir=None)
    spec = op.build_spec()  # recipes from the connection, the adapter from the operator
    op._cleanup()
    assert spec.entry_point == "llama_pretrain.py"
    op = _operator(hook_settings={"adapter_dir": ADAPTER}, adapter_dir=None)
    op.build_spec()
    op._cleanup()


def test_local_runtime_refuses_what_cannot_run_here(monkeypatch, tmp_path):
    monkeypatch.setattr("airflow.sdk.log.mask_secret", lambda s: None)
    monkeypatch.setattr(contract, "num_gpus", lambda: 0)
    monkeypatch.setattr(contract, "num_neurons", lambda: 0)
    with pytest.raises(SpecError) as err:
        _operator(adapter_dir=None).build_spec()
    assert err.value.field == "adapter_dir" and "sagemaker-training-adapter-for-nemo" in err.value.fix
    real = tmp_path / "adapter"
    shutil.copytree(ADAPTER, real)
    (real / "LOCAL_CPU_LAUNCHER").unlink()  # a real adapter: needs CUDA
    with pytest.raises(SpecError) as err:
        _operator(adapter_dir=str(real)).build_spec()
    assert err.value.problem == "cannot run here" and "no GPU (nvidia-smi finds none)" in err.value.fix
    with pytest.raises(SpecError) as err:
        _operator(training_recipe=TRN, recipe_overrides=RESULTS, instance_type="ml.trn1.32xlarge",
                  neuron_dir=NEURONX).build_spec()
    assert err.value.field == "instance_type" and "no Neuron devices" in err.value.fix
    monkeypatch.setattr(contract, "num_gpus", lambda: 8)  # a GPU machine runs the real adapter
    op = _operator(adapter_dir=str(real))
    op.build_spec()
    op._cleanup()
    op = _operator(adapter_dir=str(real), local=False)  # on AWS nothing is checked on this machine
    op.build_spec()
    op._cleanup()


def test_overrides_are_masked_once_rendered(monkeypatch):
    masked = []
    monkeypatch.setattr("airflow.sdk.log.mask_secret", masked.append)
    recipe_module._mask_all({"model": {"hf_access_token": TOKEN, "hidden_size": 8}, "wandb": {"api_key": "k1"}})
    assert sorted(set(masked)) == sorted({TOKEN, "k1"})
