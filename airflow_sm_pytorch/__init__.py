"""Train, fine-tune and deploy PyTorch models on Amazon SageMaker from Airflow.

Public names are imported lazily (on first attribute access) so that ``import airflow_sm_pytorch`` and
Airflow's provider discovery stay cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "PyTorchTrainOperator": "airflow_sm_pytorch.operators.train",
    "DeployOperator": "airflow_sm_pytorch.operators.deploy",
    "DeleteEndpointOperator": "airflow_sm_pytorch.operators.deploy",
    "AttachSensor": "airflow_sm_pytorch.sensors.attach",
    "RecipeTrainOperator": "airflow_sm_pytorch.operators.recipe",
    "RecipeSpec": "airflow_sm_pytorch.builders.recipes",
    "SageMakerPyTorchTrigger": "airflow_sm_pytorch.triggers.sagemaker_pytorch",
    "PyTorchPredictor": "airflow_sm_pytorch.predictor",
    "SageMakerPyTorchHook": "airflow_sm_pytorch.hooks.sagemaker_pytorch",
    "TrainingSpec": "airflow_sm_pytorch.specs",
    "SpecError": "airflow_sm_pytorch.exceptions",
    "JobFailed": "airflow_sm_pytorch.exceptions",
    "RequestRejected": "airflow_sm_pytorch.exceptions",
    "SmPyTorchError": "airflow_sm_pytorch.exceptions",
}

__all__ = ["__version__", "get_provider_info", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'airflow_sm_pytorch' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def get_provider_info() -> dict[str, Any]:
    """What ``airflow providers list`` shows (entry point group ``apache_airflow_provider``).

    ``documentation-url``: the project has no public web page yet, so it is the README (which links
    ``docs/connection.md``, the connection's extra) of the checkout this package is installed from, as a
    ``file://`` URI; it is left out when these files are not there (a wheel install). Airflow 3.3 replaces the
    value with the distribution's ``Project-URL: Documentation`` (none yet) when it lists providers.
    """
    from pathlib import Path

    checkout = Path(__file__).resolve().parent.parent
    readme = checkout / "README.md"
    info: dict[str, Any] = {
        "package-name": "airflow-sm-pytorch",
        "name": "SageMaker PyTorch",
        "description": "Train PyTorch models on Amazon SageMaker (PyTorchTrainOperator), fine-tune them from "
        "HyperPod recipes (RecipeTrainOperator), attach to jobs started elsewhere (AttachSensor) and deploy "
        "them to endpoints (DeployOperator, DeleteEndpointOperator, PyTorchPredictor), waiting in a worker "
        "or deferred to the triggerer, on AWS or on a local SageMaker-compatible runtime that needs no AWS "
        "account (an AWS connection whose extra has sm_pytorch.local_runtime).",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Amazon SageMaker PyTorch",
                "external-doc-url": "https://docs.aws.amazon.com/sagemaker/latest/dg/pytorch.html",
                "tags": ["aws"],
            }
        ],
        "operators": [
            {
                "integration-name": "Amazon SageMaker PyTorch",
                "python-modules": ["airflow_sm_pytorch.operators.train", "airflow_sm_pytorch.operators.deploy",
                                   "airflow_sm_pytorch.operators.recipe"],
            }
        ],
        "sensors": [
            {
                "integration-name": "Amazon SageMaker PyTorch",
                "python-modules": ["airflow_sm_pytorch.sensors.attach"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Amazon SageMaker PyTorch",
                "python-modules": ["airflow_sm_pytorch.triggers.sagemaker_pytorch"],
            }
        ],
        "extra-links": [
            "airflow_sm_pytorch.links.TrainingJobLink",
            "airflow_sm_pytorch.links.TrainingLogsLink",
            "airflow_sm_pytorch.links.ModelLink",
            "airflow_sm_pytorch.links.EndpointLink",
            "airflow_sm_pytorch.links.EndpointLogsLink",
        ],
        "hooks": [
            {
                "integration-name": "Amazon SageMaker PyTorch",
                "python-modules": ["airflow_sm_pytorch.hooks.sagemaker_pytorch"],
            }
        ],
    }
    if readme.is_file() and (checkout / "docs" / "connection.md").is_file():
        info["documentation-url"] = readme.as_uri()
    return info
