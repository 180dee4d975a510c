"""Image URI resolution (builders/images.py) against the URIs verified with sagemaker 2.257.6."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from airflow_sm_pytorch.builders import images
from airflow_sm_pytorch.builders.images import (
    base_name_from_image,
    ecr_hostname,
    inference_image_uri,
    partition_for,
    processor_for,
    recipe_gpu_image_uri,
    recipe_neuron_image_uri,
    smp_image_uri,
    supported_versions,
    training_image_uri,
)
from airflow_sm_pytorch.exceptions import SpecError

pytestmark = pytest.mark.fast  # the quick lane: scripts/test.sh -m fast

DLC = "763104351884"
SMP = "658645717510"
MP = {"torch_distributed": {"enabled": True}, "smdistributed": {"modelparallel": {"enabled": True}}}


def train(version="2.3.0", py="py311", instance="ml.p3.2xlarge", region="us-west-2", **kw):
    return training_image_uri(
        framework_version=version, py_version=py, instance_type=instance, region=region, **kw
    )


def infer(version="2.3.0", py="py311", instance="ml.g4dn.xlarge", region="us-west-2", **kw):
    return inference_image_uri(
        framework_version=version, py_version=py, instance_type=instance, region=region, **kw
    )


# ----------------------------------------------------------------------------- verified URIs (contract §3)
@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ("us-east-1", f"{DLC}.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-gpu-py311"),
        ("us-west-2", f"{DLC}.dkr.ecr.us-west-2.amazonaws.com/pytorch-training:2.3.0-gpu-py311"),
        ("eu-west-1", f"{DLC}.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.3.0-gpu-py311"),
        ("cn-north-1", "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/pytorch-training:2.3.0-gpu-py311"),
        (
            "cn-northwest-1",
            "727897471807.dkr.ecr.cn-northwest-1.amazonaws.com.cn/pytorch-training:2.3.0-gpu-py311",
        ),
        (
            "us-gov-west-1",
            "442386744353.dkr.ecr.us-gov-west-1.amazonaws.com/pytorch-training:2.3.0-gpu-py311",
        ),
        (
            "us-gov-east-1",
            "446045086412.dkr.ecr.us-gov-east-1.amazonaws.com/pytorch-training:2.3.0-gpu-py311",
        ),
        ("us-iso-east-1", "886529160074.dkr.ecr.us-iso-east-1.c2s.ic.gov/pytorch-training:2.3.0-gpu-py311"),
        (
            "us-isob-east-1",
            "094389454867.dkr.ecr.us-isob-east-1.sc2s.sgov.gov/pytorch-training:2.3.0-gpu-py311",
        ),
        (
            "us-isof-south-1",
            "454834333376.dkr.ecr.us-isof-south-1.csp.hci.ic.gov/pytorch-training:2.3.0-gpu-py311",
        ),
        ("af-south-1", "626614931356.dkr.ecr.af-south-1.amazonaws.com/pytorch-training:2.3.0-gpu-py311"),
        ("il-central-1", "780543022126.dkr.ecr.il-central-1.amazonaws.com/pytorch-training:2.3.0-gpu-py311"),
    ],
)
def test_training_2_3_0_gpu_per_region(region, expected):
    assert train(region=region) == expected


def test_training_cpu_instance():
    assert (
        train(instance="ml.c5.xlarge")
        == f"{DLC}.dkr.ecr.us-west-2.amazonaws.com/pytorch-training:2.3.0-cpu-py311"
    )


def test_legacy_sagemaker_pytorch_repository():
    assert (
        train(version="1.1.0", py="py3")
        == "520713654638.dkr.ecr.us-west-2.amazonaws.com/sagemaker-pytorch:1.1.0-gpu-py3"
    )


def test_latest_training_version():
    assert train(version="2.8.0", py="py312", instance="ml.g5.xlarge") == (
        f"{DLC}.dkr.ecr.us-west-2.amazonaws.com/pytorch-training:2.8.0-gpu-py312"
    )


def test_alias_keeps_user_version_in_tag():
    assert train(version="2.1", py="py310").endswith("/pytorch-training:2.1-gpu-py310")
    assert train(version="2.1.0", py="py310").endswith("/pytorch-training:2.1.0-gpu-py310")
    assert train(version="2.5", py="py311").endswith("/pytorch-training:2.5-gpu-py311")  # alias of 2.5.1


def test_local_modes():
    assert train(instance="local").endswith(":2.3.0-cpu-py311")
    assert train(instance="local_gpu").endswith(":2.3.0-gpu-py311")


def test_iso_regions_only_up_to_2_3_0():
    with pytest.raises(SpecError) as err:
        train(version="2.4.0", region="us-iso-east-1")
    assert err.value.field == "region" and "us-east-1" in err.value.fix


# ----------------------------------------------------------------------------- neuron, p4d, smdistributed
def test_trainium_uses_neuron_config():
    assert train(version="1.11.0", py="py38", instance="ml.trn1.32xlarge") == (
        f"{DLC}.dkr.ecr.us-west-2.amazonaws.com/pytorch-training-neuron:1.11.0-neuron-py38-sdk2.4.0-ubuntu20.04"
    )


def test_trainium_single_version_config_ignores_requested_version():
    # SDK parity: pytorch-neuron.json has one version, so any unaliased version resolves to it.
    assert train(version="2.1.0", py="py38", instance="ml.trn1.2xlarge").endswith(
        "/pytorch-training-neuron:1.11.0-neuron-py38-sdk2.4.0-ubuntu20.04"
    )
    with pytest.raises(SpecError) as err:
        train(version="2.1.0", py="py310", instance="ml.trn1.2xlarge")
    assert err.value.field == "py_version" and "py38" in err.value.fix


def test_trainium_region_not_in_neuron_config():
    with pytest.raises(SpecError) as err:
        train(version="1.11.0", py="py38", instance="ml.trn1.32xlarge", region="cn-north-1")
    assert err.value.field == "region"


def test_p4d_and_smdistributed_suffix_only_for_1_6():
    assert train(version="1.6.0", py="py3", instance="ml.p4d.24xlarge").endswith(
        ":1.6.0-gpu-py3-cu110-ubuntu18.04"
    )
    assert train(version="1.6", py="py36", instance="ml.p4d.24xlarge").endswith(
        ":1.6-gpu-py36-cu110-ubuntu18.04-v3"
    )
    dp = {"smdistributed": {"dataparallel": {"enabled": True}}}
    assert train(version="1.6.0", py="py36", instance="ml.p3.16xlarge", distribution=dp).endswith(
        ":1.6.0-gpu-py36-cu110-ubuntu18.04"
    )
    assert train(instance="ml.p4d.24xlarge").endswith(":2.3.0-gpu-py311")
    assert train(version="1.6.0", py="py3", instance="ml.p3.2xlarge").endswith(":1.6.0-gpu-py3")


# ----------------------------------------------------------------------------- SMP and recipes
def test_smp_images():
    base = f"{SMP}.dkr.ecr.us-west-2.amazonaws.com/smdistributed-modelparallel"
    kw = {"instance_type": "ml.p5.48xlarge", "region": "us-west-2"}
    assert (
        smp_image_uri(framework_version="2.4.1", py_version="py311", **kw) == f"{base}:2.4.1-gpu-py311-cu121"
    )
    assert (
        smp_image_uri(framework_version="2.5.1", py_version="py311", **kw) == f"{base}:2.5.1-gpu-py311-cu124"
    )
    assert (
        smp_image_uri(framework_version="2.2.0", py_version="py310", **kw) == f"{base}:2.2.0-gpu-py310-cu121"
    )
    assert (
        smp_image_uri(
            framework_version="2.0.1", py_version="py310", instance_type="ml.p4d.24xlarge", region="us-west-2"
        )
        == f"{base}:2.0.1-gpu-py310-cu118"
    )


def test_smp_2_3_0_with_py311_is_rejected():
    with pytest.raises(SpecError) as err:
        smp_image_uri(
            framework_version="2.3.0", py_version="py311", instance_type="ml.p5.48xlarge", region="us-west-2"
        )
    assert err.value.field == "py_version" and "py310" in err.value.fix


def test_smp_rejects_cpu_and_unsupported_region():
    with pytest.raises(SpecError) as err:
        smp_image_uri(
            framework_version="2.4.1", py_version="py311", instance_type="ml.c5.xlarge", region="us-west-2"
        )
    assert err.value.field == "instance_type"
    with pytest.raises(SpecError) as err:
        smp_image_uri(
            framework_version="2.4.1", py_version="py311", instance_type="ml.p5.48xlarge", region="af-south-1"
        )
    assert err.value.field == "region"


def test_training_with_modelparallel_distribution_selects_smp():
    assert train(version="2.4.1", instance="ml.p5.48xlarge", distribution=MP) == (
        f"{SMP}.dkr.ecr.us-west-2.amazonaws.com/smdistributed-modelparallel:2.4.1-gpu-py311-cu121"
    )
    off = {"torch_distributed": {"enabled": True}, "smdistributed": {"modelparallel": {"enabled": False}}}
    assert train(distribution=off).endswith("/pytorch-training:2.3.0-gpu-py311")


@pytest.mark.parametrize("region", ["us-west-2", "us-east-1", "eu-west-1"])
def test_recipe_images(region):
    assert recipe_neuron_image_uri(region=region) == (
        f"{DLC}.dkr.ecr.{region}.amazonaws.com/pytorch-training-neuronx:2.1.2-neuronx-py310-sdk2.20.2-ubuntu20.04"
    )
    assert recipe_gpu_image_uri(region=region) == (
        f"{SMP}.dkr.ecr.{region}.amazonaws.com/smdistributed-modelparallel:2.4.1-gpu-py311-cu121"
    )


def test_recipe_neuron_ca_west():
    assert recipe_neuron_image_uri(region="ca-west-1").startswith(
        "204538143572.dkr.ecr.ca-west-1.amazonaws.com/"
    )


# ----------------------------------------------------------------------------- inference
def test_inference_images():
    assert infer() == f"{DLC}.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference:2.3.0-gpu-py311"
    assert (
        infer(version="2.6.0", py="py312")
        == f"{DLC}.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference:2.6.0-gpu-py312"
    )
    assert infer(version="2.6", py="py312", instance="ml.m5.xlarge").endswith(
        "/pytorch-inference:2.6-cpu-py312"
    )
    assert infer(version="1.1.0", py="py3").startswith(
        "520713654638.dkr.ecr.us-west-2.amazonaws.com/sagemaker-pytorch:"
    )


def test_inference_serverless_is_cpu():
    assert (
        infer(instance=None, serverless=True)
        == f"{DLC}.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference:2.3.0-cpu-py311"
    )
    assert infer(instance="ml.g5.xlarge", serverless=True).endswith(":2.3.0-cpu-py311")


def test_inference_without_instance_type():
    with pytest.raises(SpecError) as err:
        infer(instance=None)
    assert err.value.field == "instance_type"


def test_inference_training_only_version():
    with pytest.raises(SpecError) as err:
        infer(version="2.8.0", py="py312")
    assert (
        err.value.field == "framework_version" and "2.6.0" in err.value.fix and "2.8.0" not in err.value.fix
    )


def test_graviton_inference():
    assert infer(version="2.4.0", instance="ml.c6g.xlarge") == (
        f"{DLC}.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference-graviton:2.4.0-cpu-py311-ubuntu22.04-sagemaker"
    )
    assert infer(version="2.2", py="py310", instance="ml.m6g.large").endswith(
        "/pytorch-inference-graviton:2.2-cpu-py310-ubuntu20.04-sagemaker"
    )
    with pytest.raises(SpecError):
        infer(version="2.6.0", py="py312", instance="ml.c7g.xlarge")  # graviton stops at 2.4.0


def test_eia_inference():
    assert infer(version="1.5.1", py="py3", instance="ml.m5.large", accelerator_type="ml.eia2.medium") == (
        f"{DLC}.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference-eia:1.5.1-cpu-py3"
    )
    with pytest.raises(SpecError) as err:
        infer(version="1.5.1", py="py3", instance="ml.m5.large", accelerator_type="ml.g4dn.xlarge")
    assert err.value.field == "accelerator_type"
    with pytest.raises(SpecError):
        infer(accelerator_type="ml.eia2.medium")  # 2.3.0 has no EIA image


def test_inference_on_neuron_instances_follows_sdk():
    # SDK parity: inf*/trn* always route to pytorch-neuron (training scope, processor trn only).
    with pytest.raises(SpecError) as err:
        infer(version="1.11.0", py="py38", instance="ml.inf2.xlarge")
    assert err.value.field == "instance_type" and "trn" in err.value.fix
    assert infer(version="1.11.0", py="py38", instance="ml.trn1.2xlarge").endswith(
        "/pytorch-training-neuron:1.11.0-neuron-py38-sdk2.4.0-ubuntu20.04"
    )


# ----------------------------------------------------------------------------- errors
def test_unknown_version_lists_every_key_and_alias():
    with pytest.raises(SpecError) as err:
        train(version="2.9.0")
    e = err.value
    assert e.field == "framework_version" and e.value == "2.9.0"
    assert e.fix.startswith("Supported pytorch version(s): 0.4.0, 1.0.0, 1.1.0,")
    assert e.fix.endswith("2.6, 2.7, 2.8.")
    assert e.fix == "Supported pytorch version(s): " + ", ".join(supported_versions("training")) + "."


def test_py_version_mismatch_names_allowed():
    with pytest.raises(SpecError) as err:
        train(py="py310")
    assert err.value.field == "py_version" and err.value.fix == "Supported Python version(s): py311."
    with pytest.raises(SpecError) as err:
        train(version="1.4.0", py="py38")
    assert err.value.fix == "Supported Python version(s): py2, py3, py36."


def test_py_version_none_is_rejected_when_config_has_py_versions():
    with pytest.raises(SpecError) as err:
        train(py=None)
    assert err.value.field == "py_version" and "py311" in err.value.fix


def test_unknown_region():
    with pytest.raises(SpecError) as err:
        train(region="xx-nowhere-1")
    assert err.value.field == "region" and "us-west-2" in err.value.fix and "cn-north-1" in err.value.fix


@pytest.mark.parametrize("version", ["1.13.1", "1.13", "2.0.0", "2.3"])
def test_p2_rejected_from_1_13(version):
    py = {"1.13.1": "py39", "1.13": "py39", "2.0.0": "py310", "2.3": "py311"}[version]
    with pytest.raises(SpecError) as err:
        train(version=version, py=py, instance="ml.p2.xlarge")
    assert err.value.field == "instance_type" and "P2" in err.value.fix


def test_p2_allowed_before_1_13():
    assert train(version="1.12.1", py="py38", instance="ml.p2.xlarge").endswith(":1.12.1-gpu-py38")


def test_invalid_instance_type():
    with pytest.raises(SpecError) as err:
        train(instance="p3.2xlarge")
    assert err.value.field == "instance_type"


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        train(version="nope")


# ----------------------------------------------------------------------------- helpers
@pytest.mark.parametrize(
    ("instance_type", "processor"),
    [
        ("ml.c5.xlarge", "cpu"),
        ("ml.m5.large", "cpu"),
        ("ml.p3.2xlarge", "gpu"),
        ("ml.g5.xlarge", "gpu"),
        ("ml.p4d.24xlarge", "gpu"),
        ("ml.p5.48xlarge", "gpu"),
        ("ml.trn1.32xlarge", "trn"),
        ("ml.trn1n.32xlarge", "trn"),
        ("ml.inf2.xlarge", "inf"),
        ("ml.c6g.xlarge", "cpu"),
        ("local", "cpu"),
        ("local_gpu", "gpu"),
        (None, "cpu"),
    ],
)
def test_processor_for(instance_type, processor):
    assert processor_for(instance_type) == processor


@pytest.mark.parametrize(
    ("region", "partition", "host"),
    [
        ("us-east-1", "aws", "ecr.us-east-1.amazonaws.com"),
        ("il-central-1", "aws", "ecr.il-central-1.amazonaws.com"),
        ("cn-north-1", "aws-cn", "ecr.cn-north-1.amazonaws.com.cn"),
        ("us-gov-west-1", "aws-us-gov", "ecr.us-gov-west-1.amazonaws.com"),
        ("us-iso-east-1", "aws-iso", "ecr.us-iso-east-1.c2s.ic.gov"),
        ("us-isob-east-1", "aws-iso-b", "ecr.us-isob-east-1.sc2s.sgov.gov"),
        ("us-isof-east-1", "aws-iso-f", "ecr.us-isof-east-1.csp.hci.ic.gov"),
        ("eu-isoe-west-1", "aws-iso-e", "ecr.eu-isoe-west-1.cloud.adc-e.uk"),
    ],
)
def test_partition_and_hostname(region, partition, host):
    assert partition_for(region) == partition
    assert ecr_hostname(region) == host


@pytest.mark.parametrize(
    ("image", "base"),
    [
        (f"{DLC}.dkr.ecr.us-west-2.amazonaws.com/pytorch-training:2.3.0-gpu-py311", "pytorch-training"),
        (f"{DLC}.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference:2.3.0-gpu-py311", "pytorch-inference"),
        ("123.dkr.ecr.us-east-1.amazonaws.com/team/my-image:latest", "my-image"),
        ("my-image", "my-image"),
        ("localhost:5000/img", "img"),
    ],
)
def test_base_name_from_image(image, base):
    assert base_name_from_image(image) == base


def test_supported_versions():
    training = supported_versions()
    assert training[:3] == ["0.4.0", "1.0.0", "1.1.0"] and "2.8.0" in training and training[-1] == "2.8"
    assert supported_versions("inference")[-1] == "2.6"
    assert "2.8.0" not in supported_versions("inference")
    assert supported_versions("eia") == ["1.3.1", "1.5.1", "1.3", "1.5"]
    assert supported_versions("neuron") == ["1.11.0", "1.11"]
    assert "2.4.1" in supported_versions("smp")
    with pytest.raises(SpecError):
        supported_versions("bogus")


# ----------------------------------------------------------------------------- data tables
DATA = Path(images.__file__).with_name("data")


@pytest.mark.parametrize("name", ["pytorch", "pytorch-neuron", "pytorch-smp", "hyperpod-recipes-neuron"])
def test_data_tables_are_well_formed(name):
    data = json.loads((DATA / f"{name}.json").read_text())
    assert "2.257.6" in data["_source"]["package"]
    for scope, config in data.items():
        if scope.startswith("_"):
            continue
        for alias, target in config["version_aliases"].items():
            assert target in config["versions"], (scope, alias)
        for version, entry in config["versions"].items():
            assert entry["repository"] and entry["registries"], (scope, version)
            assert all(acct.isdigit() and len(acct) == 12 for acct in entry["registries"].values())


def test_registry_facts():
    data = json.loads((DATA / "pytorch.json").read_text())
    assert len(data["training"]["versions"]["2.4.0"]["registries"]) == 38
    smp = json.loads((DATA / "pytorch-smp.json").read_text())["training"]["versions"]
    assert {a for v in smp.values() for a in v["registries"].values()} == {SMP}
    assert all(len(v["registries"]) == 17 for v in smp.values())


def test_imports_stdlib_only():
    tree = ast.parse(Path(images.__file__).read_text())
    roots = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    roots |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    stdlib = {"__future__", "collections", "functools", "json", "re", "pathlib", "typing"}
    assert roots <= stdlib | {"airflow_sm_pytorch"}
