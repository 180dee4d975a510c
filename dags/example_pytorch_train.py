"""Train a PyTorch classifier on SageMaker, or on the local runtime, then serve it: the connection decides.

make_dataset -> train (PyTorchTrainOperator) -> check_model
                     -> deploy (DeployOperator) -> predict (PyTorchPredictor) -> teardown

Trigger it from the UI with your own epochs / learning rate / batch size. The DAG is the same on a
laptop and on AWS: it stages its data through the hook (like the SDK's ``Session.upload_data``) and
leaves ``output_path`` to the connection's default bucket. Point the ``sm_pytorch`` connection at the
local runtime or at AWS (see the README); set the Variable ``sagemaker_role_arn`` for AWS.
"""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_sm_pytorch import DeleteEndpointOperator, DeployOperator, PyTorchTrainOperator

CONN_ID = "sm_pytorch"
CODE_DIR = Path(__file__).parent / "code"

with DAG(
    dag_id="example_pytorch_train",
    schedule="@daily",  # one run per day once unpaused; the trigger form's Backfill needs a schedule
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    render_template_as_native_obj=True,  # hyperparameters stay numbers, as with the SDK
    doc_md=__doc__,
    params={
        "epochs": Param(20, type="integer", minimum=1, maximum=200, title="Epochs",
                        description="passes over the training data"),
        "learning_rate": Param(0.05, type="number", exclusiveMinimum=0, title="Learning rate",
                               description="Adam's learning rate"),
        "batch_size": Param(64, type="integer", minimum=1, maximum=4096, title="Batch size",
                            description="samples per optimisation step"),
        "instance_type": Param("ml.m5.xlarge", type="string", enum=["local", "ml.m5.xlarge", "ml.g5.xlarge"],
                               title="Training instance type",
                               description="what SageMaker trains on; the local runtime runs any of them on "
                                           "this machine"),
    },
    tags=["example", "sagemaker", "pytorch"],
) as dag:

    @task
    def make_dataset(run_id=None) -> dict[str, str]:
        """Write a small deterministic two-moons dataset and stage it where the job can read it."""
        import sys

        from airflow_sm_pytorch import SageMakerPyTorchHook

        sys.path.insert(0, str(CODE_DIR))
        from data import stage_moons  # the examples' dataset, shared with the training scripts

        safe_run = "".join(c if c.isalnum() else "-" for c in run_id)
        uris = stage_moons(SageMakerPyTorchHook(aws_conn_id=CONN_ID), f"example-pytorch-train/{safe_run}")
        print(f"staged data: {uris}")
        return uris

    data = make_dataset()

    # [START howto_operator_pytorch_train]
    train = PyTorchTrainOperator(
        task_id="train",
        aws_conn_id=CONN_ID,
        entry_point="train.py",
        source_dir=str(CODE_DIR),
        role="{{ var.value.get('sagemaker_role_arn', 'arn:aws:iam::000000000000:role/airflow-sm-pytorch') }}",
        instance_type="{{ params.instance_type }}",
        instance_count=1,
        framework_version="2.6.0",
        py_version="py312",
        hyperparameters={
            "epochs": "{{ params.epochs }}",
            "lr": "{{ params.learning_rate }}",
            "batch-size": "{{ params.batch_size }}",
        },
        inputs={
            "train": "{{ ti.xcom_pull(task_ids='make_dataset')['train'] }}",
            "test": "{{ ti.xcom_pull(task_ids='make_dataset')['test'] }}",
        },
        metric_definitions=[{"Name": "test:accuracy", "Regex": r"test_accuracy=([0-9.]+)"}],
        max_run=3600,
        poll_interval=2,
    )
    # [END howto_operator_pytorch_train]
    data >> train

    @task
    def check_model(result: dict, data: dict) -> dict:
        """Fetch model.tar.gz, load the weights into the network and score them on the test set."""
        import importlib.util
        import tarfile
        import tempfile

        import torch

        from airflow_sm_pytorch import SageMakerPyTorchHook

        hook = SageMakerPyTorchHook(aws_conn_id=CONN_ID)
        uri = result["S3ModelArtifacts"]
        print(f"The trained model landed at {uri}")
        spec = importlib.util.spec_from_file_location("train_script", CODE_DIR / "train.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with tempfile.TemporaryDirectory() as tmp:
            hook.storage.download_file(uri, Path(tmp, "model.tar.gz"))
            with tarfile.open(Path(tmp, "model.tar.gz")) as archive:
                members = archive.getnames()
                archive.extractall(Path(tmp, "model"), filter="data")
            hook.storage.download(data["test"], Path(tmp, "test"))
            model = module.Net()
            model.load_state_dict(torch.load(Path(tmp, "model", "model.pth"), weights_only=True))
            x, y = module.load(str(Path(tmp, "test")))
            accuracy = module.accuracy(model, x, y)
        reported = result["FinalMetrics"].get("test:accuracy")
        print(f"model.tar.gz members: {members}; test accuracy {accuracy:.4f} (job reported {reported})")
        if accuracy < 0.8:
            raise ValueError(f"the model did not learn: test accuracy {accuracy:.4f} < 0.8")
        if reported is None or abs(reported - accuracy) > 1e-3:
            raise ValueError(f"the job's final metric {reported} does not match the model's {accuracy:.4f}")
        return {"model": uri, "test_accuracy": accuracy}

    check_model(train.output, data)

    # [START howto_operator_pytorch_deploy]
    deploy = DeployOperator(
        task_id="deploy",
        aws_conn_id=CONN_ID,
        training_job=train.output,  # model data, image version and code come from the training job
        entry_point="inference.py",  # ... served by this script (model_fn, predict_fn) from the same code
        source_dir=str(CODE_DIR),
        instance_type="ml.m5.large",  # the local runtime serves any ml.* type on this machine
        initial_instance_count=1,
        poll_interval=2,
    )
    # [END howto_operator_pytorch_deploy]

    @task
    def predict(endpoint: dict, data: dict) -> dict:
        """Send the held-back test points to the endpoint and score what it answers."""
        import tempfile

        import numpy as np

        from airflow_sm_pytorch import PyTorchPredictor, SageMakerPyTorchHook

        hook = SageMakerPyTorchHook(aws_conn_id=CONN_ID)
        with tempfile.TemporaryDirectory() as tmp:
            hook.storage.download(data["test"], Path(tmp, "test"))
            test = np.loadtxt(Path(tmp, "test", "data.csv"), delimiter=",", dtype=np.float32)
        predictor = PyTorchPredictor(endpoint["EndpointName"], aws_conn_id=CONN_ID)
        predicted = predictor.predict(test[:, :2])  # NPY in, NPY out
        accuracy = float((predicted == test[:, 2]).mean())
        print(f"endpoint {endpoint['EndpointName']} served accuracy={accuracy:.4f} "
              f"on {len(test)} held-back points")
        if accuracy < 0.9:
            raise ValueError(f"the endpoint's predictions are off: accuracy {accuracy:.4f} < 0.9")
        return {"endpoint": endpoint["EndpointName"], "served_accuracy": accuracy}

    served = predict(deploy.output, data)
    teardown = DeleteEndpointOperator(task_id="teardown", aws_conn_id=CONN_ID, endpoint=deploy.output,
                                      trigger_rule="all_done")
    served >> teardown
