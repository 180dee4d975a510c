"""Fine-tune from a SageMaker HyperPod recipe (LoRA on Llama 3 8B) with overrides, on SageMaker or locally.

finetune (RecipeTrainOperator) -> check_model

The recipe is taken by name from a pinned copy of sagemaker-hyperpod-recipes (``recipes/`` beside this
file) and merged with ``recipe_overrides``; a misspelt override key fails the task before anything is
uploaded, naming the closest keys. The resolved recipe is uploaded with the launcher and passed as
``--config-path . --config-name <recipe>.yaml``, exactly as the SageMaker Python SDK does, and shown (secrets
masked) in the task's rendered ``resolved_recipe``.

**The launcher.** ``recipe_launcher/`` beside this file is a tiny CPU stand-in in the layout of
sagemaker-training-adapter-for-nemo (``examples/llama/llama_pretrain.py``) that trains a toy next-token
model from the recipe's values, so the DAG runs end to end on the local runtime with no GPU. On SageMaker
set the ``adapter_dir`` trigger parameter (or ``sm_pytorch.adapter_dir`` on the connection, leaving the
parameter empty) to a pinned checkout of the real adapter and use the real model sizes. ``plan recipe``
of the same spec is in the README.

Trigger it from the UI with another recipe, instance type or number of steps. The ``sm_pytorch``
connection decides where it runs (see the README); set the Variable ``sagemaker_role_arn`` for AWS.
"""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_sm_pytorch import RecipeTrainOperator

CONN_ID = "sm_pytorch"
HERE = Path(__file__).parent
RECIPES_DIR = HERE / "recipes"  # a pinned copy of sagemaker-hyperpod-recipes' recipes_collection
STAND_IN_LAUNCHER = HERE / "recipe_launcher"

with DAG(
    dag_id="example_recipe_finetune",
    schedule="@daily",  # one run per day once unpaused; the trigger form's Backfill needs a schedule
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    render_template_as_native_obj=True,  # overrides stay numbers, as in a recipe
    doc_md=__doc__,
    params={
        "recipe": Param("fine-tuning/llama/hf_llama3_8b_seq8k_gpu_lora", type="string", title="Recipe",
                        description="a recipe name under the recipes directory, a .yaml file, or an https:// URL"),
        "instance_type": Param("ml.g5.xlarge", type="string", title="Training instance type",
                               enum=["ml.g5.xlarge", "ml.g5.12xlarge", "ml.p4d.24xlarge", "ml.p5.48xlarge"],
                               description="a GPU type (the recipe is a GPU recipe); the local runtime runs it "
                                           "on this machine with the CPU stand-in launcher"),
        "max_steps": Param(40, type="integer", minimum=1, maximum=100000, title="Training steps",
                           description="trainer.max_steps of the recipe"),
        "adapter_dir": Param(str(STAND_IN_LAUNCHER), type=["string", "null"], title="Launcher checkout",
                             description="a pinned checkout of sagemaker-training-adapter-for-nemo; default: "
                                         "the CPU stand-in beside this DAG; empty: the connection's"),
    },
    tags=["example", "sagemaker", "pytorch", "recipes"],
) as dag:
    # [START howto_operator_recipe_train]
    finetune = RecipeTrainOperator(
        task_id="finetune",
        aws_conn_id=CONN_ID,
        training_recipe="{{ params.recipe }}",
        recipes_dir=str(RECIPES_DIR),
        adapter_dir="{{ params.adapter_dir or '' }}",
        recipe_overrides={
            "run": {"results_dir": "/opt/ml/model"},  # the stock recipes leave ${base_results_dir} unset
            "trainer": {"num_nodes": 1, "max_steps": "{{ params.max_steps }}", "log_every_n_steps": 10},
            "model": {  # toy sizes for the stand-in; drop these on SageMaker
                "num_hidden_layers": 2, "hidden_size": 32, "vocab_size": 64, "max_context_width": 16,
                "train_batch_size": 16, "optim": {"lr": 0.01},
            },
        },
        role="{{ var.value.get('sagemaker_role_arn', 'arn:aws:iam::000000000000:role/airflow-sm-pytorch') }}",
        instance_type="{{ params.instance_type }}",
        max_run=3600,
        poll_interval=2,
    )
    # [END howto_operator_recipe_train]

    @task
    def check_model(result: dict) -> dict:
        """Fetch model.tar.gz and check the launcher trained what the recipe says, and that it learned."""
        import json
        import tarfile
        import tempfile

        from airflow_sm_pytorch import SageMakerPyTorchHook

        hook = SageMakerPyTorchHook(aws_conn_id=CONN_ID)
        uri = result["S3ModelArtifacts"]
        with tempfile.TemporaryDirectory() as tmp:
            hook.storage.download_file(uri, Path(tmp, "model.tar.gz"))
            with tarfile.open(Path(tmp, "model.tar.gz")) as archive:
                members = archive.getnames()
                metrics = json.load(archive.extractfile("metrics.json"))
        print(f"model.tar.gz at {uri}: {members}; recipe config {result['HyperParameters']['config-name']}; "
              f"{metrics}")
        if metrics["final_loss"] >= metrics["first_loss"]:
            raise ValueError(f"the model did not learn: loss {metrics['first_loss']:.4f} -> "
                             f"{metrics['final_loss']:.4f}")
        return {"model": uri, **metrics}

    check_model(finetune.output)
