"""Bring your own model: deploy a ``model.tar.gz`` trained anywhere, call it, tear it down.

build_model -> deploy (DeployOperator, model_data=...) -> predict (PyTorchPredictor, JSON) -> teardown

``build_model`` stands in for "a model trained elsewhere": it writes a TorchScript ``model.pt`` (a
fixed linear map, so the answer is known) into ``model.tar.gz`` with ``model.pt`` at the archive's root
(the layout SageMaker expects; the operator refuses the seed's "Common Mistakes" before uploading) and
stages it through the hook. ``DeployOperator`` repacks it with ``dags/byom/inference.py`` under
``code/``, as ``PyTorchModel(model_data, entry_point, source_dir).deploy()`` does.
"""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.sdk import DAG, task

from airflow_sm_pytorch import DeleteEndpointOperator, DeployOperator

CONN_ID = "sm_pytorch"
CODE_DIR = Path(__file__).parent / "byom"

with DAG(
    dag_id="example_pytorch_byom",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "sagemaker", "pytorch", "deploy"],
    doc_md=__doc__,
) as dag:

    @task
    def build_model(run_id=None) -> str:
        """A TorchScript model in model.tar.gz, staged in the connection's default bucket."""
        import tarfile
        import tempfile

        import torch

        from airflow_sm_pytorch import SageMakerPyTorchHook

        layer = torch.nn.Linear(2, 1)
        with torch.no_grad():
            layer.weight.copy_(torch.tensor([[2.0, -1.0]]))
            layer.bias.fill_(0.5)
        safe_run = "".join(c if c.isalnum() else "-" for c in run_id)
        with tempfile.TemporaryDirectory() as tmp:
            torch.jit.script(layer).save(str(Path(tmp, "model.pt")))
            with tarfile.open(Path(tmp, "model.tar.gz"), "w:gz") as archive:
                archive.add(Path(tmp, "model.pt"), arcname="model.pt")
            hook = SageMakerPyTorchHook(aws_conn_id=CONN_ID)
            return hook.upload_data(Path(tmp, "model.tar.gz"), key_prefix=f"example-pytorch-byom/{safe_run}")

    model_data = build_model()

    # [START howto_operator_pytorch_deploy_byom]
    deploy = DeployOperator(
        task_id="deploy",
        aws_conn_id=CONN_ID,
        model_data=model_data,
        entry_point="inference.py",
        source_dir=str(CODE_DIR),
        framework_version="2.6.0",
        py_version="py312",
        role="{{ var.value.get('sagemaker_role_arn', 'arn:aws:iam::000000000000:role/airflow-sm-pytorch') }}",
        instance_type="ml.m5.large",
        initial_instance_count=1,
        poll_interval=2,
    )
    # [END howto_operator_pytorch_deploy_byom]

    @task
    def predict(endpoint: dict) -> list:
        from airflow_sm_pytorch import PyTorchPredictor
        from airflow_sm_pytorch.predictor import JSONDeserializer, JSONSerializer

        predictor = PyTorchPredictor(endpoint["EndpointName"], aws_conn_id=CONN_ID,
                                     serializer=JSONSerializer(),
                                     deserializer=JSONDeserializer())
        answer = predictor.predict({"inputs": [[1.0, 1.0], [0.0, 2.0]]})["outputs"]
        print(f"endpoint {endpoint['EndpointName']} answered {answer}")
        if answer != [[1.5], [-1.5]]:
            raise ValueError(f"expected [[1.5], [-1.5]] from the known weights, got {answer}")
        return answer

    teardown = DeleteEndpointOperator(task_id="teardown", aws_conn_id=CONN_ID, endpoint=deploy.output,
                                      trigger_rule="all_done")
    predict(deploy.output) >> teardown
