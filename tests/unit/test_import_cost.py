"""DAG-parse cost: importing our operators must not import the heavy libraries."""

import json
import subprocess
import sys

HEAVY = ("boto3", "botocore", "torch", "omegaconf", "numpy")
PUBLIC = ("airflow_sm_pytorch", "airflow_sm_pytorch.operators.train", "airflow_sm_pytorch.specs")


def _loaded_after(code: str, last: bool = True):
    """The heavy modules loaded after ``code`` runs in a fresh interpreter (or what ``code`` printed)."""
    probe = f"import sys, json\n{code}\n"
    if last:
        probe += f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


MODULES = ("airflow_sm_pytorch.operators.train", "airflow_sm_pytorch.operators.deploy",
           "airflow_sm_pytorch.predictor", "airflow_sm_pytorch.sensors.attach",
           "airflow_sm_pytorch.triggers.sagemaker_pytorch", "airflow_sm_pytorch.operators.recipe")


def test_operator_import_pulls_in_no_heavy_module():
    # one interpreter imports them in turn (one Airflow start-up, not six) and says which pulled in what
    code = ("import importlib\nblame = {}\n"
            f"for name in {MODULES!r}:\n"
            "    importlib.import_module(name)\n"
            f"    blame[name] = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
            "print(json.dumps(blame))")
    blame = _loaded_after(code, last=False)
    assert blame == {name: [] for name in MODULES}


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
