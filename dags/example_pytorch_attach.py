"""Attach to a training job started elsewhere, wait for it without a worker slot, then deploy its model.

start_training (PyTorchTrainOperator, wait=False) -> attach (AttachSensor, deferrable)
    -> deploy (DeployOperator, deferrable) -> predict -> teardown

``start_training`` stands in for "a job someone else started" (a notebook, another DAG, the console):
trigger the DAG with the Param ``training_job_name`` set to attach to an existing job instead, as the
SDK's ``PyTorch.attach(training_job_name)`` does. The sensor streams the job's log into its task log,
waits in the triggerer, and returns what ``attach`` recovers (framework version, entry point, source dir,
hyperparameters) so that ``DeployOperator(training_job=attach.output)`` needs nothing else.
"""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_sm_pytorch import AttachSensor, DeleteEndpointOperator, DeployOperator, PyTorchTrainOperator

CONN_ID = "sm_pytorch"
CODE_DIR = Path(__file__).parent / "code"

with DAG(
    dag_id="example_pytorch_attach",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    render_template_as_native_obj=True,
    doc_md=__doc__,
    params={
        "training_job_name": Param("", type="string", title="Training job to attach to",
                                   description="an existing job's name; empty: start one and attach to it"),
    },
    tags=["example", "sagemaker", "pytorch"],
) as dag:

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def needs_a_job(params=None) -> bool:
        """Start a job only when no existing one was named."""
        return not params["training_job_name"]

    @task
    def make_dataset(run_id=None) -> dict[str, str]:
        """Stage the examples' two-moons data for the job this DAG starts."""
        import sys

        from airflow_sm_pytorch import SageMakerPyTorchHook

        sys.path.insert(0, str(CODE_DIR))
        from data import stage_moons

        safe_run = "".join(c if c.isalnum() else "-" for c in run_id)
        return stage_moons(SageMakerPyTorchHook(aws_conn_id=CONN_ID), f"example-pytorch-attach/{safe_run}")

    start = PyTorchTrainOperator(
        task_id="start_training",
        aws_conn_id=CONN_ID,
        entry_point="train.py",
        source_dir=str(CODE_DIR),
        role="{{ var.value.get('sagemaker_role_arn', 'arn:aws:iam::000000000000:role/airflow-sm-pytorch') }}",
        instance_type="ml.m5.xlarge",
        instance_count=1,
        framework_version="2.6.0",
        py_version="py312",
        hyperparameters={"epochs": 10},
        inputs={
            "train": "{{ ti.xcom_pull(task_ids='make_dataset')['train'] }}",
            "test": "{{ ti.xcom_pull(task_ids='make_dataset')['test'] }}",
        },
        wait=False,  # "started elsewhere": the sensor does the waiting
    )

    # [START howto_sensor_attach]
    attach = AttachSensor(
        task_id="attach",
        aws_conn_id=CONN_ID,
        training_job_name="{{ params.training_job_name or ti.xcom_pull(task_ids='start_training')"
                          "['TrainingJobName'] }}",
        deferrable=True,  # waits in the triggerer; the log since the last position is printed on resume
        poke_interval=2,
        trigger_rule="none_failed",  # runs whether or not start_training was skipped
    )
    # [END howto_sensor_attach]

    deploy = DeployOperator(
        task_id="deploy",
        aws_conn_id=CONN_ID,
        training_job=attach.output,  # what attach recovered: model data, image version, entry point
        entry_point="inference.py",
        source_dir=str(CODE_DIR),
        instance_type="ml.m5.large",
        initial_instance_count=1,
        poll_interval=2,
        deferrable=True,
    )

    @task
    def predict(endpoint: dict, attached: dict) -> dict:
        """Ask the endpoint about a few points of the examples' dataset."""
        import sys

        import numpy as np

        from airflow_sm_pytorch import PyTorchPredictor

        sys.path.insert(0, str(CODE_DIR))
        from data import moons

        test = moons(200, 7).astype(np.float32)
        predicted = PyTorchPredictor(endpoint["EndpointName"], aws_conn_id=CONN_ID).predict(test[:, :2])
        accuracy = float((predicted == test[:, 2]).mean())
        print(f"attached job {attached['TrainingJobName']} (PyTorch {attached['FrameworkVersion']}, "
              f"{attached['EntryPoint']}, hyperparameters {attached['HyperParameters']}) served "
              f"accuracy={accuracy:.4f}")
        return {"endpoint": endpoint["EndpointName"], "served_accuracy": accuracy}

    needs_a_job() >> make_dataset() >> start >> attach
    served = predict(deploy.output, attach.output)
    teardown = DeleteEndpointOperator(task_id="teardown", aws_conn_id=CONN_ID, endpoint=deploy.output,
                                      trigger_rule="all_done")
    served >> teardown
