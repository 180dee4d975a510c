"""SageMaker PyTorch Deep Learning Container image URIs, resolved from shipped data tables.

Data: ``builders/data/{pytorch,pytorch-neuron,pytorch-smp,hyperpod-recipes-neuron}.json`` are the SDK's
``src/sagemaker/image_uri_config/*.json`` from **sagemaker 2.257.6** (the PyPI wheel of git tag
``v2.257.6``, = branch ``master-v2`` at ``fc582aaa``), re-formatted but otherwise unchanged; each file's
``_source`` key records the original path and its sha256. The rules below follow that release's
``src/sagemaker/image_uris.py`` (``retrieve``, ``_processor``, ``_format_tag``,
``get_training_image_uri``) and ``utils.base_name_from_image``; see contracts/sdk-requests.md §3.

SDK behaviours kept on purpose (they decide which URI a job really gets):

* the tag starts with the version string exactly as given (``"2.1"`` -> ``:2.1-gpu-py310``); aliases
  only locate the config entry;
* ``trn*``/``inf*`` instances switch to ``pytorch-neuron`` (training only, processors ``["trn"]``), also
  for inference; a config with a single version returns that version for any unaliased input, so every
  PyTorch version on Trainium resolves to the 1.11.0 neuron image (as the SDK does);
* Graviton families switch to ``inference_graviton``; an accelerator type switches to ``eia``;
  serverless inference uses ``cpu``; ``p2`` with PyTorch >= 1.13 is refused;
* ``p4d`` or an ``smdistributed`` distribution appends ``cu110-ubuntu18.04[-v3]`` to 1.6 GPU tags.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_sm_pytorch.exceptions import SpecError

_DATA = Path(__file__).with_name("data")

_GRAVITON_FAMILIES = frozenset({"m6g", "m6gd", "c6g", "c6gd", "c6gn", "c7g", "r6g", "r6gd"})
_NEURON_REPOS = frozenset({"pytorch-training-neuron", "pytorch-training-neuronx"})
# Appended to "<tag>" when the instance family is p4d or the distribution uses smdistributed.
_P4D_SMDIST_SUFFIX = {
    "1.6-gpu-py36": "cu110-ubuntu18.04-v3",
    "1.6.0-gpu-py36": "cu110-ubuntu18.04",
    "1.6-gpu-py3": "cu110-ubuntu18.04-v3",
    "1.6.0-gpu-py3": "cu110-ubuntu18.04",
}
# botocore endpoints.json partitions: (region regex, partition, DNS suffix); the ECR host is
# ecr.<region>.<suffix> in every partition.
_PARTITIONS = (
    (re.compile(r"^(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+$"), "aws", "amazonaws.com"),
    (re.compile(r"^cn\-\w+\-\d+$"), "aws-cn", "amazonaws.com.cn"),
    (re.compile(r"^us\-gov\-\w+\-\d+$"), "aws-us-gov", "amazonaws.com"),
    (re.compile(r"^us\-iso\-\w+\-\d+$"), "aws-iso", "c2s.ic.gov"),
    (re.compile(r"^us\-isob\-\w+\-\d+$"), "aws-iso-b", "sc2s.sgov.gov"),
    (re.compile(r"^eu\-isoe\-\w+\-\d+$"), "aws-iso-e", "cloud.adc-e.uk"),
    (re.compile(r"^us\-isof\-\w+\-\d+$"), "aws-iso-f", "csp.hci.ic.gov"),
    (re.compile(r"^eusc\-(de)\-\w+\-\d+$"), "aws-eusc", "amazonaws.eu"),
)
_FAMILY_RE = re.compile(r"^ml[\._]([a-z\d\-]+)\.?\w*$")
_IMAGE_RE = re.compile(r"^(.+/)?([^:/]+)(:[^:]+)?$")

# src/sagemaker/pytorch/training_recipes.json: "gpu_image" / "neuron_image".
RECIPE_GPU_VERSION, RECIPE_GPU_CONTAINER = "2.4.1", "cu121"
RECIPE_NEURON_VERSION = "2.1.2"

_SCOPE_FILES = {
    "neuron": ("pytorch-neuron", "training"),
    "smp": ("pytorch-smp", "training"),
    "recipes-neuron": ("hyperpod-recipes-neuron", "training"),
}


@functools.cache
def _load(name: str) -> dict[str, Any]:
    data = json.loads((_DATA / f"{name}.json").read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _supported(label: str, options: Any) -> str:
    return f"Supported {label}(s): {', '.join(options)}."


def _unsupported(field: str, value: Any, fix: str) -> SpecError:
    return SpecError(field, value, fix, problem="is not supported")


# ---------------------------------------------------------------------------- regions and names
def partition_for(region: str) -> str:
    """AWS partition of ``region`` (``"aws"`` when no partition pattern matches)."""
    for pattern, partition, _ in _PARTITIONS:
        if pattern.match(region or ""):
            return partition
    return "aws"


def ecr_hostname(region: str) -> str:
    """``ecr.<region>.<partition DNS suffix>``, as botocore's endpoint resolver builds it."""
    for pattern, _, suffix in _PARTITIONS:
        if pattern.match(region or ""):
            return f"ecr.{region}.{suffix}"
    return f"ecr.{region}.amazonaws.com"


def base_name_from_image(image_uri: str) -> str:
    """Repository part of an image URI: ``.../pytorch-training:2.3.0-gpu-py311`` -> ``pytorch-training``."""
    match = _IMAGE_RE.match(image_uri)
    return match.group(2) if match else image_uri


# ---------------------------------------------------------------------------- processors
def instance_family(instance_type: str | None) -> str:
    """``ml.p4d.24xlarge`` -> ``p4d``, as the SDK's family regex reads it; ``""`` when it does not match."""
    match = _FAMILY_RE.match(instance_type) if isinstance(instance_type, str) else None
    return match.group(1) if match else ""


def _classify(instance_type: str, available: tuple[str, ...] = ()) -> str:
    if instance_type.startswith("local"):
        return "cpu" if instance_type == "local" else "gpu"
    if instance_type.startswith("neuron"):
        return "neuron"
    family = instance_family(instance_type)
    if not family:
        fix = "use a SageMaker instance type such as ml.m5.xlarge or ml.g5.xlarge, or local / local_gpu"
        raise SpecError("instance_type", instance_type, fix)
    if family in available:
        return family
    if family.startswith("inf"):
        return "inf"
    if family.startswith("trn"):
        return "trn"
    return "gpu" if family[0] in ("g", "p") else "cpu"


def processor_for(instance_type: str | None) -> str:
    """``cpu`` | ``gpu`` | ``trn`` | ``inf`` for an instance type; ``local`` -> cpu, ``local_gpu`` -> gpu.

    ``None`` (serverless inference) gives ``cpu``; an unparseable type raises :class:`SpecError`.
    """
    return "cpu" if instance_type is None else _classify(instance_type)


def _processor(instance_type: str | None, available: list[str] | None, serverless: bool) -> str | None:
    if not available:
        return None
    if len(available) == 1 and not instance_type:
        return available[0]
    if serverless:
        return "cpu"
    if not instance_type:
        fix = "pass an instance type such as ml.g5.xlarge, or use serverless inference"
        raise SpecError("instance_type", instance_type, fix, problem="is required")
    processor = _classify(instance_type, tuple(available))
    if processor not in available:
        fix = f"this image has no {processor} variant. {_supported('processor', available)}"
        raise _unsupported("instance_type", instance_type, fix)
    return processor


# ---------------------------------------------------------------------------- versions
def _version_tuple(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in re.findall(r"\d+", version)]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _scope_config(name: str, scope: str, accelerator_type: str | None) -> dict[str, Any]:
    config = _load(name)
    if accelerator_type:
        if not accelerator_type.startswith("ml.eia") and accelerator_type != "local_sagemaker_notebook":
            fix = "use an Elastic Inference type such as ml.eia2.medium"
            raise SpecError("accelerator_type", accelerator_type, fix)
        scope = "eia"
    if len(config) == 1:  # a config with one scope serves every scope
        scope = next(iter(config))
    return config[scope]


def _check_version(framework: str, version: str, config: Mapping[str, Any]) -> str:
    keys, aliases = list(config["versions"]), list(config.get("version_aliases", {}))
    if len(keys) == 1 and version not in aliases:
        return keys[0]
    if version not in keys and version not in aliases:
        raise _unsupported("framework_version", version, _supported(f"{framework} version", keys + aliases))
    return version


def _check_py(py_version: str | None, entry: Mapping[str, Any], strict: bool) -> str | None:
    available = entry.get("py_versions")
    if not available:
        return None
    if py_version is None:
        if len(available) == 1 and not strict:
            return available[0]
        raise SpecError("py_version", None, _supported("Python version", available), problem="is required")
    if py_version not in available:
        raise _unsupported("py_version", py_version, _supported("Python version", available))
    return py_version


def supported_versions(scope: str = "training") -> list[str]:
    """Versions and aliases accepted for ``scope``, in the order the SDK's error message lists them.

    ``scope``: ``training``, ``inference``, ``eia``, ``inference_graviton`` (pytorch.json), ``neuron``,
    ``smp`` or ``recipes-neuron``.
    """
    name, key = _SCOPE_FILES.get(scope, ("pytorch", scope))
    config = _load(name)
    if key not in config:
        raise SpecError("scope", scope, _supported("scope", [*config, *_SCOPE_FILES]))
    return list(config[key]["versions"]) + list(config[key].get("version_aliases", {}))


# ---------------------------------------------------------------------------- the resolver
def _retrieve(
    framework: str,
    region: str,
    version: str,
    py_version: str | None,
    instance_type: str | None,
    scope: str,
    *,
    accelerator_type: str | None = None,
    serverless: bool = False,
    container_version: str | None = None,
    distribution: Mapping[str, Any] | None = None,
    strict_py: bool = True,
) -> str:
    family = instance_family(instance_type)
    name, inference_tool = framework, None
    if framework == "pytorch":
        if family.startswith(("inf", "trn")):
            name, inference_tool = "pytorch-neuron", "neuron"
        if family in _GRAVITON_FAMILIES:
            scope = "inference_graviton"
    elif family in _GRAVITON_FAMILIES or "trn" in (instance_type or ""):
        hardware = "Graviton" if family in _GRAVITON_FAMILIES else "Trainium"
        raise _unsupported("instance_type", instance_type, f"{framework} images have no {hardware} variant")
    config = _scope_config(name, scope, accelerator_type)
    version = _check_version(framework, version, config)
    entry = config["versions"][config.get("version_aliases", {}).get(version, version)]
    py = _check_py(py_version, entry, strict_py)
    registries = entry["registries"]
    if region not in registries:
        raise _unsupported("region", region, _supported("region", registries))
    repo = entry["repository"]
    processor = _processor(instance_type, config.get("processors") or entry.get("processors"), serverless)
    if entry.get("container_version"):
        if processor not in entry["container_version"]:
            raise _unsupported(
                "instance_type", instance_type, _supported("processor", entry["container_version"])
            )
        container_version = entry["container_version"][processor]
    if repo in _NEURON_REPOS:  # latest SDK version, compared as strings like the SDK does
        container_version = f"{max(entry['sdk_versions'])}-{container_version}"
    if repo == f"{framework}-inference-graviton":
        container_version = f"{container_version}-sagemaker"
    if framework == "pytorch" and family == "p2" and _version_tuple(version) >= (1, 13):
        fix = "P2 instances are deprecated for PyTorch 1.13 and later; use e.g. ml.g5 or ml.p3"
        raise _unsupported("instance_type", instance_type, fix)
    tag_prefix = entry.get("tag_prefix", version)
    tag = "-".join(x for x in (tag_prefix, inference_tool or processor, py, container_version) if x)
    if instance_type is not None and (family == "p4d" or (distribution and "smdistributed" in distribution)):
        suffix = _P4D_SMDIST_SUFFIX.get(tag) if framework == "pytorch" else None
        tag = f"{tag}-{suffix}" if suffix else tag
    return f"{registries[region]}.dkr.{ecr_hostname(region)}/{repo}:{tag}"


def _uses_smp(distribution: Mapping[str, Any] | None) -> bool:
    if not distribution or "torch_distributed" not in distribution or "smdistributed" not in distribution:
        return False
    smdist = distribution["smdistributed"] or {}
    return "modelparallel" in smdist and bool(smdist["modelparallel"].get("enabled", True))


# ---------------------------------------------------------------------------- public API
def training_image_uri(
    *,
    framework_version: str,
    py_version: str | None,
    instance_type: str,
    region: str,
    distribution: Mapping[str, Any] | None = None,
) -> str:
    """Training image (``get_training_image_uri``). ``distribution``, when given, may select the SMP image
    (``torch_distributed`` + ``smdistributed.modelparallel``) or the 1.6 ``smdistributed`` suffix."""
    if _uses_smp(distribution):
        return smp_image_uri(
            framework_version=framework_version,
            py_version=py_version,
            instance_type=instance_type,
            region=region,
        )
    args = (region, framework_version, py_version, instance_type)
    return _retrieve("pytorch", *args, "training", distribution=distribution)


def inference_image_uri(
    *,
    framework_version: str,
    py_version: str | None,
    instance_type: str | None,
    region: str,
    accelerator_type: str | None = None,
    serverless: bool = False,
) -> str:
    """Serving image (``PyTorchModel.serving_image_uri``): inference, Graviton, EIA or serverless (cpu)."""
    args = (region, framework_version, py_version, instance_type, "inference")
    return _retrieve("pytorch", *args, accelerator_type=accelerator_type, serverless=serverless)


def smp_image_uri(*, framework_version: str, py_version: str | None, instance_type: str, region: str) -> str:
    """SageMaker model-parallel v2 image (``pytorch-smp``), with the SDK's CUDA suffix rules."""
    if "2.5" in framework_version:
        container = "cu124"
    elif "p5" in (instance_type or "") or any(v in framework_version for v in ("2.1", "2.2", "2.3", "2.4")):
        container = "cu121"
    else:
        container = "cu118"
    args = (region, framework_version, py_version, instance_type, "training")
    return _retrieve("pytorch-smp", *args, container_version=container)


def recipe_gpu_image_uri(*, region: str) -> str:
    """HyperPod recipe GPU image: ``pytorch-smp`` 2.4.1, container ``cu121``."""
    args = (region, RECIPE_GPU_VERSION, None, None, "training")
    return _retrieve("pytorch-smp", *args, container_version=RECIPE_GPU_CONTAINER, strict_py=False)


def recipe_neuron_image_uri(*, region: str) -> str:
    """HyperPod recipe Trainium image: ``hyperpod-recipes-neuron`` 2.1.2."""
    return _retrieve(
        "hyperpod-recipes-neuron", region, RECIPE_NEURON_VERSION, None, None, "training", strict_py=False
    )
