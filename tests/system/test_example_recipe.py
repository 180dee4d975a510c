"""The recipe example: it parses, fine-tunes for real through ``airflow dags test`` on the local runtime
(the README's keyless connection, autostarted), and the README's ``plan recipe`` spec plans the same job."""

from __future__ import annotations

import json
import re

import yaml

from airflow_sm_pytorch.planning import build_recipe
from tests.system.conftest import ROOT, succeeded
from tests.system.test_example_dags import run_example


def test_example_recipe_finetune_runs_on_the_local_runtime(airflow_env, tmp_path):
    proc, out = run_example(airflow_env, tmp_path / "runtime", "example_recipe_finetune",
                            "-c", json.dumps({"max_steps": 30}))
    assert succeeded(proc), out[-6000:]
    assert re.search(r"step 29: train_loss=[0-9.]+", out)  # the launcher ran the overridden step count
    assert "hf_llama3_8b_seq8k_gpu_lora_" in out and "'peft': 'lora'" in out
    assert "Ignoring" not in out  # num_nodes was overridden to the count sent: no disagreement


def test_readme_plan_recipe_spec_plans_the_examples_job(monkeypatch):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```yaml\n# recipe-finetune.yaml", 1)[1].split("\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(ROOT)
    view = build_recipe(yaml.safe_load(block)).to_json()
    request = view["CreateTrainingJob"]
    assert request["ResourceConfig"]["InstanceCount"] == 1
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith("smdistributed-modelparallel:2.4.1-gpu-"
                                                                       "py311-cu121")
    assert view["uploads"][0]["members"] == [view["recipe"]["file"], "llama_pretrain.py"]
    for line in (view["recipe"]["file"], '"InstanceCount": 1', '"sagemaker_program": "\\"llama_pretrain.py\\""'):
        assert line in readme  # the README shows this output
