"""DAG-parse cost: importing our operators must not import the heavy libraries."""

import json
import subprocess
import sys

HEAVY = ("boto3", "botocore", "torch", "omegaconf", "numpy")
PUBLIC = ("airflow_sm_pytorch", "airflow_sm_pytorch.operators.train", "airflow_sm_pytorch.specs")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_operator_import_pulls_in_no_heavy_module():
    assert _loaded_after("import airflow_sm_pytorch.operators.train") == []
    assert _loaded_after("import airflow_sm_pytorch.operators.deploy") == []
    assert _loaded_after("import airflow_sm_pytorch.predictor") == []
    assert _loaded_after("import airflow_sm_pytorch.sensors.attach") == []
    assert _loaded_after("import airflow_sm_pytorch.triggers.sagemaker_pytorch") == []
    assert _loaded_after("import airflow_sm_pytorch.operators.recipe") == []


def test_public_names_and_dag_objects_are_cheap():
    code = (
        "import airflow_sm_pytorch\n"
        "from airflow_sm_pytorch import (AttachSensor, DeleteEndpointOperator, DeployOperator, "
        "PyTorchTrainOperator, RecipeTrainOperator, TrainingSpec)\n"
        "from airflow.sdk import DAG\n"
        "with DAG('d', schedule=None):\n"
        "    t = PyTorchTrainOperator(task_id='t', entry_point='train.py', instance_type='local')\n"
        "    d = DeployOperator(task_id='d', training_job=t.output, instance_type='local')\n"
        "    DeleteEndpointOperator(task_id='x', endpoint=d.output)\n"
        "    a = AttachSensor(task_id='a', training_job_name='j', deferrable=True, mode='reschedule')\n"
        "    r = RecipeTrainOperator(task_id='r', training_recipe='fine-tuning/llama/x', instance_type='local',\n"
        "                            recipe_overrides={'trainer': {'max_steps': 2}})\n"
    )
    assert _loaded_after(code) == []


def test_the_probe_would_notice_a_heavy_import():
    assert _loaded_after("import botocore") == ["botocore"]
