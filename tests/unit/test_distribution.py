"""``distribution=``: the hyperparameters SageMaker SDK 2.257.6 sends per strategy, and every refusal.

Expected values are the SDK's (contracts/sdk-requests.md §2.2, and ``scripts/sdk_parity.py``'s
``dist-*`` configurations run against sagemaker 2.257.6: docs/sdk-parity.txt).
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_sm_pytorch.builders.distribution import (
    SMDDP_VERSIONS,
    TORCHRUN_GPU_VERSIONS,
    distribution_hyperparameters,
    effective_distribution,
)
from airflow_sm_pytorch.builders.training import Session, build_training_plan
from airflow_sm_pytorch.exceptions import SpecError
from airflow_sm_pytorch.specs import TrainingSpec
from tests.unit.test_training_builder import JOB, ROLE, SRC, US_WEST_2

pytestmark = pytest.mark.fast  # the quick lane: scripts/test.sh -m fast

P4D = "ml.p4d.24xlarge"
SCRIPT_KEYS = {"sagemaker_submit_directory", "sagemaker_program", "sagemaker_container_log_level",
               "sagemaker_job_name", "sagemaker_region"}
TORCHRUN = {"torch_distributed": {"enabled": True}}
LOCAL = Session(region="us-east-1", default_bucket="file:///tmp/sm-pytorch-store", local=True)


def spec(**overrides: Any) -> TrainingSpec:
    base: dict[str, Any] = dict(entry_point="train.py", source_dir=SRC, role=ROLE, instance_type=P4D,
                                instance_count=2, framework_version="2.3.0", py_version="py311")
    base.update(overrides)
    return TrainingSpec(**base)


def request(session: Session = US_WEST_2, **overrides: Any) -> dict[str, Any]:
    return build_training_plan(spec(**overrides), session, job_name=JOB).request


def added(session: Session = US_WEST_2, **overrides: Any) -> dict[str, str]:
    """The HyperParameters the distribution added, as sent (JSON-encoded), in order."""
    sent = request(session, **overrides)["HyperParameters"]
    return {k: v for k, v in sent.items() if k not in SCRIPT_KEYS}


def image(**overrides: Any) -> str:
    return str(request(**overrides)["AlgorithmSpecification"]["TrainingImage"])


# ------------------------------------------------------------------------------ the SDK's hyperparameters
def test_torchrun_on_two_p4d() -> None:
    req = request(distribution=TORCHRUN)
    assert added(distribution=TORCHRUN) == {"sagemaker_torch_distributed_enabled": "true",
                                            "sagemaker_instance_type": '"ml.p4d.24xlarge"'}
    assert list(req["HyperParameters"])[:5] == ["sagemaker_submit_directory", "sagemaker_program",
                                                "sagemaker_container_log_level", "sagemaker_job_name",
                                                "sagemaker_region"]  # the SDK's order: script keys first
    assert req["ResourceConfig"]["InstanceCount"] == 2
    assert req["AlgorithmSpecification"]["TrainingImage"].endswith("/pytorch-training:2.3.0-gpu-py311")
    assert "Environment" not in req  # the SDK adds no environment for distribution


def test_user_hyperparameters_come_first() -> None:
    sent = request(distribution=TORCHRUN, hyperparameters={"epochs": 2})["HyperParameters"]
    assert list(sent)[0] == "epochs" and list(sent)[-1] == "sagemaker_instance_type"


def test_mpi_with_processes_per_host_and_options() -> None:
    mpi = {"mpi": {"enabled": True, "processes_per_host": 8, "custom_mpi_options": "-verbose"}}
    assert added(distribution=mpi) == {"sagemaker_mpi_enabled": "true",
                                       "sagemaker_mpi_num_of_processes_per_host": "8",
                                       "sagemaker_mpi_custom_mpi_options": '"-verbose"'}
    assert added(distribution={"mpi": {"enabled": True}}) == {"sagemaker_mpi_enabled": "true",
                                                              "sagemaker_mpi_custom_mpi_options": '""'}
    # The SDK sends a disabled strategy's keys too.
    assert added(distribution={"mpi": {"enabled": False}}) == {"sagemaker_mpi_enabled": "false",
                                                               "sagemaker_mpi_custom_mpi_options": '""'}


def test_pytorchddp_is_smdistributed_dataparallel_since_sdk_2_222() -> None:
    ddp = {"pytorchddp": {"enabled": True}}
    expected = {"sagemaker_distributed_dataparallel_enabled": "true",
                "sagemaker_instance_type": '"ml.p4d.24xlarge"',
                "sagemaker_distributed_dataparallel_custom_mpi_options": '""'}
    assert added(distribution=ddp, framework_version="2.2.0", py_version="py310") == expected
    smddp = {"smdistributed": {"dataparallel": {"enabled": True}}}
    assert added(distribution=smddp, framework_version="2.2.0", py_version="py310") == expected
    with_options = {"smdistributed": {"dataparallel": {"enabled": True, "custom_mpi_options": "-x A=1"}}}
    assert added(distribution=with_options, framework_version="2.2.0", py_version="py310")[
        "sagemaker_distributed_dataparallel_custom_mpi_options"] == '"-x A=1"'
    assert "sagemaker_pytorch_ddp_enabled" not in added(distribution=ddp, framework_version="2.2.0",
                                                        py_version="py310")


def test_pytorchddp_on_2_3_with_an_image_uri_is_accepted() -> None:
    uri = "123456789012.dkr.ecr.us-west-2.amazonaws.com/my-ddp:2.3"
    sent = added(distribution={"pytorchddp": {"enabled": True}}, image_uri=uri)
    assert sent["sagemaker_distributed_dataparallel_enabled"] == "true"


def test_smp_v2_uses_the_smp_image() -> None:
    smp = {"torch_distributed": {"enabled": True},
           "smdistributed": {"modelparallel": {"enabled": True, "parameters": {"tensor_parallel_degree": 8}}}}
    assert added(distribution=smp, framework_version="2.2.0", py_version="py310") == {
        "mp_parameters": '{"tensor_parallel_degree": 8}',
        "sagemaker_distributed_dataparallel_enabled": "false",
        "sagemaker_instance_type": '"ml.p4d.24xlarge"',
        "sagemaker_torch_distributed_enabled": "true",
    }
    assert image(distribution=smp, framework_version="2.2.0", py_version="py310") == (
        "658645717510.dkr.ecr.us-west-2.amazonaws.com/smdistributed-modelparallel:2.2.0-gpu-py310-cu121")
    assert image(distribution=smp, framework_version="2.4.1", instance_type="ml.p5.48xlarge").endswith(
        "smdistributed-modelparallel:2.4.1-gpu-py311-cu121")
    empty = {**smp, "smdistributed": {"modelparallel": {"enabled": True}}}
    assert "mp_parameters" not in added(distribution=empty, framework_version="2.2.0", py_version="py310")


def test_torchrun_with_smddp_on_p5_keeps_the_training_image() -> None:
    both = {"torch_distributed": {"enabled": True}, "smdistributed": {"dataparallel": {"enabled": True}}}
    sent = added(distribution=both, instance_type="ml.p5.48xlarge", framework_version="2.2.0",
                 py_version="py310")
    assert sent == {"sagemaker_distributed_dataparallel_enabled": "true",
                    "sagemaker_instance_type": '"ml.p5.48xlarge"',
                    "sagemaker_distributed_dataparallel_custom_mpi_options": '""',
                    "sagemaker_torch_distributed_enabled": "true"}
    assert "/pytorch-training:2.2.0-gpu-py310" in image(distribution=both, instance_type="ml.p5.48xlarge",
                                                       framework_version="2.2.0", py_version="py310")


def test_smp_v1_is_mpi_with_modelparallel() -> None:
    smp = {"mpi": {"enabled": True, "processes_per_host": 8},
           "smdistributed": {"modelparallel": {"enabled": True, "parameters": {"partitions": 2}}}}
    sent = added(distribution=smp, framework_version="1.13.1", py_version="py39")
    assert sent == {"sagemaker_mpi_enabled": "true", "sagemaker_mpi_num_of_processes_per_host": "8",
                    "sagemaker_mpi_custom_mpi_options": '""', "mp_parameters": '{"partitions": 2}',
                    "sagemaker_distributed_dataparallel_enabled": "false",
                    "sagemaker_instance_type": '"ml.p4d.24xlarge"'}


def test_parameter_server_instance_groups_and_disabled_strategies() -> None:
    assert added(distribution={"parameter_server": {"enabled": True}}) == {
        "sagemaker_parameter_server_enabled": "true"}
    assert added(distribution={"instance_groups": []}) == {"sagemaker_distribution_instance_groups": "[]"}
    assert added(distribution={"torch_distributed": {"enabled": False}}) == {}
    assert added(distribution={"torch_distributed": {}}) == {}
    assert added(distribution={}) == {}


def test_trainium_default_neuron_image_and_profiler_off() -> None:
    req = request(distribution=TORCHRUN, instance_type="ml.trn1.32xlarge", framework_version="1.11.0",
                  py_version="py38")
    assert req["AlgorithmSpecification"]["TrainingImage"] == (
        "763104351884.dkr.ecr.us-west-2.amazonaws.com/"
        "pytorch-training-neuron:1.11.0-neuron-py38-sdk2.4.0-ubuntu20.04")
    assert {k: v for k, v in req["HyperParameters"].items() if k not in SCRIPT_KEYS} == {
        "sagemaker_torch_distributed_enabled": "true", "sagemaker_instance_type": '"ml.trn1.32xlarge"'}
    assert req["ProfilerConfig"] == {"DisableProfiler": True}  # the SDK turns the profiler off on trn*
    assert "DebugHookConfig" in req  # the debugger hook stays, as in the SDK


def test_trainium_with_an_image_uri() -> None:
    uri = ("763104351884.dkr.ecr.us-west-2.amazonaws.com/"
           "pytorch-training-neuronx:2.1.2-neuronx-py310-sdk2.20.2-ubuntu20.04")
    req = request(distribution=TORCHRUN, instance_type="ml.trn1.32xlarge", framework_version=None,
                  py_version=None, image_uri=uri)
    assert req["AlgorithmSpecification"]["TrainingImage"] == uri
    assert req["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"


def test_two_instances_without_distribution_are_allowed() -> None:
    req = request(instance_count=2)
    assert req["ResourceConfig"]["InstanceCount"] == 2
    assert set(req["HyperParameters"]) == SCRIPT_KEYS


def test_local_runtime_types() -> None:
    """``local`` accepts torchrun (CPU, gloo: our one deliberate exception); ``local_gpu`` counts as a GPU."""
    sent = added(LOCAL, distribution=TORCHRUN, instance_type="local")
    assert sent == {"sagemaker_torch_distributed_enabled": "true", "sagemaker_instance_type": '"local"'}
    sent = added(LOCAL, distribution=TORCHRUN, instance_type="local_gpu", instance_count=1)
    assert sent["sagemaker_instance_type"] == '"local_gpu"'
    with pytest.raises(SpecError, match="framework_version 2.3:"):
        spec(distribution=TORCHRUN, instance_type="local_gpu", instance_count=1, framework_version="2.3")


def test_effective_distribution_and_raw_values() -> None:
    ddp = spec(distribution={"pytorchddp": {"enabled": True}}, framework_version="2.2.0", py_version="py310")
    assert effective_distribution(ddp) == {"smdistributed": {"dataparallel": {"enabled": True}}}
    mpi = spec(distribution={"mpi": {"enabled": True, "processes_per_host": 2}})
    assert distribution_hyperparameters(mpi) == {"sagemaker_mpi_enabled": True,
                                                 "sagemaker_mpi_num_of_processes_per_host": 2,
                                                 "sagemaker_mpi_custom_mpi_options": ""}


# ------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("overrides, field, words", [
    # torchrun on a CPU instance type (the SDK: "supported only for GPU and Trainium instances")
    ({"distribution": TORCHRUN, "instance_type": "ml.c5.xlarge"}, "distribution.torch_distributed",
     "is not supported on instance_type ml.c5.xlarge: torchrun is supported only on GPU"),
    ({"distribution": TORCHRUN, "instance_type": "ml.m5.xlarge"}, "distribution.torch_distributed",
     "mpi on CPU"),
    ({"distribution": TORCHRUN, "framework_version": "2.4.0"}, "distribution.torch_distributed",
     "not supported with framework_version 2.4.0"),
    ({"distribution": TORCHRUN, "framework_version": "2.3", "py_version": "py311"},
     "distribution.torch_distributed", "exact strings"),
    ({"distribution": TORCHRUN, "framework_version": "1.13.1", "py_version": "py2"},
     "distribution.torch_distributed", "py_version py2"),
    ({"distribution": TORCHRUN, "entry_point": "utils/helpers.sh"}, "distribution.torch_distributed",
     "ending in .py"),
    ({"distribution": TORCHRUN, "instance_type": "ml.trn1.32xlarge", "framework_version": "2.1.2",
      "py_version": "py310"}, "distribution.torch_distributed", "'1.11.0'"),
    # pytorchddp on a version that lacks it (SDK 2.257: the smdistributed list, up to 2.2.0)
    ({"distribution": {"pytorchddp": {"enabled": True}}}, "distribution.pytorchddp",
     "not supported with framework_version 2.3.0"),
    ({"distribution": {"pytorchddp": {"enabled": True}}}, "distribution.pytorchddp",
     'use torch_distributed ({"torch_distributed": {"enabled": true}})'),
    ({"distribution": {"pytorchddp": {"enabled": True}}}, "distribution.pytorchddp", "or pass image_uri"),
    ({"distribution": {"smdistributed": {"dataparallel": {"enabled": True}}}},
     "distribution.smdistributed.dataparallel", "not supported with framework_version 2.3.0"),
    ({"distribution": {"pytorchddp": {"enabled": True}}, "framework_version": "1.6.0", "py_version": "py2"},
     "distribution.pytorchddp", "py_version py2"),
    # Trainium: torch_distributed only
    ({"distribution": {"pytorchddp": {"enabled": True}}, "instance_type": "ml.trn1.32xlarge",
      "framework_version": "1.11.0", "py_version": "py38"}, "distribution", "run only torch_distributed"),
    ({"distribution": {"mpi": {"enabled": True}}, "instance_type": "ml.trn1.2xlarge"}, "distribution",
     "strategy mpi is not supported"),
    ({"distribution": {"mpi": {"enabled": False}, "torch_distributed": {"enabled": True}},
      "instance_type": "ml.trn1.32xlarge", "framework_version": "1.11.0", "py_version": "py38"},
     "distribution", "strategies ['mpi', 'torch_distributed']"),
    # processes_per_host 0 or a string (the SDK drops 0 and quotes the string)
    ({"distribution": {"mpi": {"enabled": True, "processes_per_host": 0}}},
     "distribution.mpi.processes_per_host", "positive integer"),
    ({"distribution": {"mpi": {"enabled": True, "processes_per_host": "8"}}},
     "distribution.mpi.processes_per_host", "positive integer"),
    ({"distribution": {"mpi": {"enabled": True, "processes_per_host": True}}},
     "distribution.mpi.processes_per_host", "positive integer"),
    ({"distribution": {"mpi": {"enabled": True, "custom_mpi_options": ["-v"]}}},
     "distribution.mpi.custom_mpi_options", "one string"),
    ({"distribution": {"mpi": {"enabled": "true"}}}, "distribution.mpi.enabled", "true or false"),
    ({"distribution": {"mpi": True}}, "distribution.mpi", '{"enabled": true}'),
    # two strategies enabled at once
    ({"distribution": {"mpi": {"enabled": True}, "torch_distributed": {"enabled": True}}}, "distribution",
     "enabled here: ['mpi', 'torch_distributed']"),
    ({"distribution": {"pytorchddp": {"enabled": True}, "torch_distributed": {"enabled": True}}},
     "distribution", "enables more than one strategy"),
    ({"distribution": {"pytorchddp": {"enabled": True},
                       "smdistributed": {"dataparallel": {"enabled": True}}}},
     "distribution", "Cannot use both pytorchddp and smdistributed"),
    ({"distribution": {"smdistributed": {"dataparallel": {"enabled": True},
                                         "modelparallel": {"enabled": True}}}},
     "distribution.smdistributed", "Cannot use more than 1 smdistributed strategy"),
    # unknown keys, with did-you-mean
    ({"distribution": {"torchrun": {"enabled": True}}}, "distribution.torchrun",
     "did you mean 'torch_distributed'?"),
    ({"distribution": {"torch_distributd": {"enabled": True}}}, "distribution.torch_distributd",
     "did you mean 'torch_distributed'?"),
    ({"distribution": {"mpi": {"enabled": True, "process_per_host": 2}}}, "distribution.mpi.process_per_host",
     "did you mean 'processes_per_host'?"),
    ({"distribution": {"smdistributed": {"dataparalel": {"enabled": True}}}},
     "distribution.smdistributed.dataparalel", "did you mean 'dataparallel'?"),
    ({"distribution": {"smdistributed": "dataparallel"}}, "distribution.smdistributed",
     "requires a dictionary"),
    # what the SDK refuses elsewhere
    ({"distribution": {"pytorchxla": {"enabled": True}}}, "distribution.pytorchxla", "Training Compiler"),
    ({"distribution": {"multi_worker_mirrored_strategy": {"enabled": True}}},
     "distribution.multi_worker_mirrored_strategy", "TensorFlow"),
    ({"distribution": {"instance_groups": ["g1"]}}, "distribution.instance_groups", "heterogeneous"),
    ({"distribution": {"smdistributed": {"dataparallel": {"enabled": True}}},
      "instance_type": "ml.p5.48xlarge", "framework_version": "2.2.0", "py_version": "py310"},
     "distribution.smdistributed", "p5"),
    ({"distribution": {"smdistributed": {"dataparallel": {"enabled": True}}},
      "image_uri": "763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-training:2.0.1-gpu-py310-cu121",
      "framework_version": None, "py_version": None}, "distribution.smdistributed", "CUDA > 11"),
    ({"distribution": {"smdistributed": {"modelparallel": {"enabled": True,
                                                           "parameters": {"partitions": 0}}}},
      "framework_version": "1.13.1", "py_version": "py39"},
     "distribution.smdistributed.modelparallel.parameters.partitions", "positive integer"),
    ({"distribution": {"smdistributed": {"modelparallel": {"enabled": True, "parameters": "mp.json"}}},
      "framework_version": "1.13.1", "py_version": "py39"},
     "distribution.smdistributed.modelparallel.parameters", "as a mapping"),
    ({"distribution": {"mpi": {"enabled": True, "custom_mpi_options": "x" * 2500}}}, "distribution",
     "at most 2500"),
])
def test_refusals_name_the_key_the_value_and_the_fix(
    overrides: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(SpecError) as err:
        spec(**overrides)
    assert err.value.field == field
    assert words in str(err.value)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{field}=")


def test_distribution_keys_count_towards_the_100_hyperparameters() -> None:
    many = {f"k{i}": i for i in range(94)}
    spec(hyperparameters=many)  # 94 + 5 script keys
    with pytest.raises(SpecError, match="at most 100 hyperparameters"):
        spec(hyperparameters=many, distribution=TORCHRUN)  # + 2 distribution keys


def test_smp_version_without_an_smp_image() -> None:
    smp = {"torch_distributed": {"enabled": True}, "smdistributed": {"modelparallel": {"enabled": True}}}
    with pytest.raises(SpecError, match="py_version"):
        image(distribution=smp)  # SMP config 2.3.0 is py310 only, as in the SDK


def test_version_tables_are_the_sdks() -> None:
    assert SMDDP_VERSIONS[-1] == "2.2.0" and "2.3.0" not in SMDDP_VERSIONS
    assert TORCHRUN_GPU_VERSIONS[0] == "1.13.1" and TORCHRUN_GPU_VERSIONS[-1] == "2.8.0"
