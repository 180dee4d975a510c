"""``distribution=`` as SageMaker SDK 2.257.6's ``PyTorch`` takes it: its checks and the hyperparameters sent.

Sources (contracts/sdk-requests.md §2): ``PyTorch.__init__`` and ``_pytorch_distribution_configuration``
(``src/sagemaker/pytorch/estimator.py``), ``Framework._distribution_configuration`` (``estimator.py``) and
``fw_utils.validate_distribution`` with its helpers. The SDK adds no ``Environment`` entries: everything
travels as hyperparameters, JSON-encoded like the user's.

What each strategy adds (raw values; the caller JSON-encodes them):

* ``{"torch_distributed": {"enabled": True}}`` (torchrun): ``sagemaker_torch_distributed_enabled``,
  ``sagemaker_instance_type``.
* ``{"pytorchddp": {"enabled": True}}`` is rewritten to ``{"smdistributed": {"dataparallel": ...}}`` (SDK
  >= 2.222): ``sagemaker_distributed_dataparallel_enabled``, ``sagemaker_instance_type``,
  ``sagemaker_distributed_dataparallel_custom_mpi_options`` (default ``""``).
* ``{"mpi": {"enabled", "processes_per_host", "custom_mpi_options"}}``: ``sagemaker_mpi_enabled``,
  ``sagemaker_mpi_num_of_processes_per_host`` (only when given), ``sagemaker_mpi_custom_mpi_options``.
* ``torch_distributed`` + ``{"smdistributed": {"modelparallel": ...}}`` (SMP v2, image ``pytorch-smp``):
  ``mp_parameters`` (when non-empty), ``sagemaker_distributed_dataparallel_enabled: false``,
  ``sagemaker_instance_type``, ``sagemaker_torch_distributed_enabled``. ``mpi`` + ``modelparallel`` is
  SMP v1 on the training image.
* ``{"parameter_server": {"enabled": True}}``: ``sagemaker_parameter_server_enabled`` (the PyTorch
  container ignores it and runs one process per host).
* ``{"instance_groups": []}``: ``sagemaker_distribution_instance_groups: []``.
* A disabled strategy still sends its keys (``false``), except ``torch_distributed``, as in the SDK.

``pytorchddp`` follows SDK 2.257, not the legacy ``sagemaker_pytorch_ddp_enabled`` key: the container's
mpirun-based runner is the same for both, and the smdistributed library's framework-version list applies,
so ``pytorchddp`` on PyTorch 2.3+ is refused unless ``image_uri`` is given.

Where we refuse more than the SDK (it accepts these and then ignores or mangles them): an unknown strategy
or argument key (the SDK ignores it silently), ``enabled`` that is not a boolean, ``processes_per_host``
that is not a positive integer (the SDK drops 0 and quotes strings), ``custom_mpi_options`` that is not a
string, two launch strategies enabled at once (the SDK silently drops ``mpi`` beside ``torch_distributed``),
``modelparallel.parameters`` given as a file path, and heterogeneous ``instance_groups`` (not supported
by ``TrainingSpec``; the SDK refuses them too without the estimator's ``instance_groups``).

Where we refuse less: ``torch_distributed`` on the local runtime's ``local`` (CPU) instance type. The SDK
refuses torchrun on every CPU type (without ``image_uri``), but ``local`` only ever reaches our local
runtime, which launches torchrun over gloo with one process per host; ``local_gpu`` counts as a GPU, as
in the SDK. CPU ``ml.*`` types are refused as the SDK does.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_sm_pytorch.builders import hyperparameters as hp
from airflow_sm_pytorch.builders.images import instance_family
from airflow_sm_pytorch.exceptions import SpecError

if TYPE_CHECKING:
    from airflow_sm_pytorch.specs import TrainingSpec

FIELD = "distribution"
#: Each strategy the PyTorch estimator takes, with the arguments its mapping may hold.
STRATEGIES: dict[str, tuple[str, ...]] = {
    "torch_distributed": ("enabled",),
    "pytorchddp": ("enabled", "custom_mpi_options"),
    "mpi": ("enabled", "processes_per_host", "custom_mpi_options"),
    "smdistributed": ("dataparallel", "modelparallel"),
    "parameter_server": ("enabled",),
    "instance_groups": (),  # a list of instance group names, not a mapping
}
SMDISTRIBUTED: dict[str, tuple[str, ...]] = {
    "dataparallel": ("enabled", "custom_mpi_options"),
    "modelparallel": ("enabled", "parameters"),
}
#: Strategies the SDK knows but that cannot work here, with why and what would.
REFUSED = {
    "pytorchxla": "Distributed training through PyTorch XLA is currently only supported when SageMaker "
                  "Training Compiler is enabled (compiler_config), which this provider does not build; use "
                  "torch_distributed",
    "multi_worker_mirrored_strategy": "Multi Worker Mirrored Strategy is a TensorFlow strategy; for PyTorch "
                                      "use torch_distributed (torchrun) or mpi",
}
#: Names people reach for, and the key that means it.
ALIASES = {"torchrun": "torch_distributed", "ddp": "pytorchddp", "mpirun": "mpi", "smddp": "smdistributed",
           "dataparallel": "smdistributed", "modelparallel": "smdistributed"}
#: ``fw_utils.SM_DATAPARALLEL_SUPPORTED_FRAMEWORK_VERSIONS["pytorch"]`` (smdistributed data parallel,
#: hence also ``pytorchddp``); checked only without ``image_uri``.
SMDDP_VERSIONS = ("1.6", "1.6.0", "1.7", "1.7.1", "1.8", "1.8.0", "1.8.1", "1.9", "1.9.0", "1.9.1", "1.10",
                  "1.10.0", "1.10.2", "1.11", "1.11.0", "1.12", "1.12.0", "1.12.1", "1.13.1", "2.0.0",
                  "2.0.1", "2.1.0", "2.1.2", "2.2.0")
#: ``TORCH_DISTRIBUTED_GPU_SUPPORTED_FRAMEWORK_VERSIONS`` (exact strings: "2.3" is not "2.3.0").
TORCHRUN_GPU_VERSIONS = ("1.13.1", "2.0.0", "2.0.1", "2.1.0", "2.1.2", "2.2.0", "2.3.0", "2.3.1", "2.4.1",
                         "2.5.1", "2.6.0", "2.7.1", "2.8.0")
#: ``TRAINIUM_SUPPORTED_TORCH_DISTRIBUTED_FRAMEWORK_VERSIONS``.
TORCHRUN_TRAINIUM_VERSIONS = ("1.11", "1.11.0", "1.12", "1.12.0", "1.12.1", "1.13.1", "2.0.0")
#: ``Framework.UNSUPPORTED_DLC_IMAGE_FOR_SM_PARALLELISM``.
SMDIST_UNSUPPORTED_IMAGES = ("2.0.1-gpu-py310-cu121",)
#: Combinations the SDK builds on purpose: SMDDP or SMP v2 under torchrun, SMP v1 under mpirun.
COMBINATIONS = ({"torch_distributed", "dataparallel"}, {"torch_distributed", "modelparallel"},
                {"mpi", "modelparallel"})
TORCHRUN = '{"torch_distributed": {"enabled": true}}'


def _error(path: str, value: Any, fix: str, problem: str = "is invalid") -> SpecError:
    return SpecError(f"{FIELD}.{path}" if path else FIELD, value, fix, problem=problem)


def _known(value: Mapping[str, Any], allowed: list[str], path: str, what: str) -> None:
    for key in value:
        if key not in allowed:
            close = [ALIASES[key]] if key in ALIASES else difflib.get_close_matches(str(key), allowed, n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"use one of {list(allowed)}"
            raise _error(f"{path}.{key}" if path else str(key), value[key], fix, problem=f"is not {what}")


def _enabled(options: Mapping[str, Any]) -> bool:
    return bool(options.get("enabled", False))


# ------------------------------------------------------------------------------ shape
def _check_options(name: str, options: Any, allowed: tuple[str, ...]) -> None:
    """One strategy's mapping: known keys, a boolean ``enabled``, typed MPI options."""
    if not isinstance(options, Mapping):
        raise _error(name, options, f'use a mapping such as {{"enabled": true}} (keys: {list(allowed)})',
                     problem="is not a mapping")
    _known(options, list(allowed), name, f"an argument of {name}")
    if "enabled" in options and not isinstance(options["enabled"], bool):
        raise _error(f"{name}.enabled", options["enabled"], "use true or false (a string such as 'true' "
                     "would reach the container quoted)", problem="is not a boolean")
    if "custom_mpi_options" in options and not isinstance(options["custom_mpi_options"], str):
        raise _error(f"{name}.custom_mpi_options", options["custom_mpi_options"],
                     "use one string of mpirun options, e.g. '-x NCCL_DEBUG=WARN'", problem="is not a string")
    count = options.get("processes_per_host")
    if "processes_per_host" in options and not _positive(count):
        raise _error(f"{name}.processes_per_host", count, "use a positive integer (processes started on "
                     "each instance, usually its GPU count), or leave it out for one per GPU, else one",
                     problem="is not a positive integer")


def _check_smdistributed(value: Any) -> None:
    if not isinstance(value, Mapping):
        raise _error("smdistributed", value, 'smdistributed strategy requires a dictionary, e.g. '
                     '{"dataparallel": {"enabled": true}}', problem="is not a mapping")
    if len(value) > 1:
        raise _error("smdistributed", dict(value), "Cannot use more than 1 smdistributed strategy: keep "
                     f"one of {list(SMDISTRIBUTED)}", problem="has more than one strategy")
    _known(value, list(SMDISTRIBUTED), "smdistributed", "an smdistributed strategy")
    for name, options in value.items():
        _check_options(f"smdistributed.{name}", options, SMDISTRIBUTED[name])
    parallel = value.get("modelparallel")
    if parallel is not None and parallel.get("enabled", False) is True:
        _check_mp_parameters(parallel.get("parameters", {}))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive(value: Any) -> bool:
    return _number(value) and isinstance(value, int) and value >= 1


def _check_mp_parameters(params: Any) -> None:
    """``fw_utils.validate_mp_config`` (its rules apply to SMP v1 keys; SMP v2 keys pass through)."""
    path = "smdistributed.modelparallel.parameters"
    if not isinstance(params, Mapping):
        raise _error(path, params, "give the model-parallel parameters as a mapping, e.g. "
                     '{"tensor_parallel_degree": 8} (a JSON file path is not read)',
                     problem="is not a mapping")
    choices: dict[str, list[Any]] = {"pipeline": ["simple", "interleaved", "_only_forward"],
                                     "placement_strategy": ["spread", "cluster"],
                                     "optimize": ["speed", "memory"]}
    choices.update({k: [True, False] for k in ("auto_partition", "contiguous", "load_partition", "horovod",
                                                  "ddp", "deterministic_server")})
    for key, allowed in choices.items():
        if key in params and params[key] not in allowed:
            raise _error(f"{path}.{key}", params[key], f"{key} must be a value in: {allowed}")
    for key in ("microbatches", "partitions", "active_microbatches"):
        if key in params and not _positive(params[key]):
            raise _error(f"{path}.{key}", params[key], f"The number of {key} must be a positive integer.")
    rules = (
        ("partition_file" in params and not isinstance(params["partition_file"], str),
         "partition_file", "'partition_file' must be a str."),
        (params.get("auto_partition") is False and "default_partition" not in params, "auto_partition",
         "default_partition must be supplied if auto_partition is set to False!"),
        ("default_partition" in params and not (_number(params["default_partition"])
                                                and _number(params.get("partitions"))
                                                and params["default_partition"] < params["partitions"]),
         "default_partition", "default_partition must be less than the number of partitions!"),
        ("memory_weight" in params and not (_number(params["memory_weight"])
                                            and 0.0 <= params["memory_weight"] <= 1.0), "memory_weight",
         "memory_weight must be between 0.0 and 1.0!"),
        ("ddp_port" in params and "ddp" not in params, "ddp_port",
         "`ddp_port` needs `ddp` to be set as well"),
        ("ddp_dist_backend" in params and "ddp" not in params, "ddp_dist_backend",
         "`ddp_dist_backend` needs `ddp` to be set as well"),
        ("ddp_port" in params and not (_number(params["ddp_port"]) and isinstance(params["ddp_port"], int)
                                       and params["ddp_port"] >= 0),
         "ddp_port", "use a port number >= 0"),
        (params.get("horovod", False) and params.get("ddp", False), "ddp",
         "'ddp' and 'horovod' cannot be simultaneously enabled."),
    )
    for broken, key, fix in rules:
        if broken:
            raise _error(f"{path}.{key}", params.get(key), fix)


def _check_shape(distribution: Mapping[str, Any]) -> None:
    for key in distribution:
        if key in REFUSED:
            raise _error(str(key), distribution[key], REFUSED[key], problem="is not supported")
    _known(distribution, list(STRATEGIES), "", "a distribution strategy")
    for name, options in distribution.items():
        if name == "smdistributed":
            _check_smdistributed(options)
        elif name == "instance_groups":
            if options != []:
                raise _error(name, options, "remove it: training instance groups (heterogeneous clusters) "
                             "are not supported here; use one instance_type with instance_count",
                             problem="is not supported")
        else:
            _check_options(name, options, STRATEGIES[name])
    if "pytorchddp" in distribution and "smdistributed" in distribution:
        raise _error("", dict(distribution), "Cannot use both pytorchddp and smdistributed distribution "
                     'options together: pytorchddp is smdistributed data parallel; keep {"smdistributed": '
                     '{"dataparallel": ...}} only', problem="has two data-parallel strategies")


def _launchers(distribution: Mapping[str, Any]) -> set[str]:
    """The enabled strategies, smdistributed ones by their own names."""
    enabled = {name for name, options in distribution.items()
               if name not in ("smdistributed", "instance_groups") and _enabled(options)}
    return enabled | {name for name, options in (distribution.get("smdistributed") or {}).items()
                      if _enabled(options)}


def _check_combination(distribution: Mapping[str, Any]) -> None:
    enabled = _launchers(distribution)
    if len(enabled) > 1 and enabled not in COMBINATIONS:
        raise _error("", dict(distribution), f"enable one strategy (enabled here: {sorted(enabled)}); the "
                     "only combinations are torch_distributed with smdistributed dataparallel or "
                     "modelparallel (SMP v2), and mpi with smdistributed modelparallel (SMP v1)",
                     problem="enables more than one strategy")


# ------------------------------------------------------------------------------ where it runs
def _hardware(instance_type: str) -> str:
    """``gpu`` (``p*``/``g*``, ``local_gpu``), ``trn``, ``local`` or ``cpu`` (``fw_utils._is_*_instance``)."""
    if instance_type in ("local", "local_gpu"):
        return "gpu" if instance_type == "local_gpu" else "local"
    family = instance_family(instance_type)
    if family.startswith("trn"):
        return "trn"
    return "gpu" if family.startswith(("p", "g")) else "cpu"


def _check_trainium(spec: TrainingSpec, original: Mapping[str, Any]) -> None:
    """``validate_distribution_for_instance_type``: on trn* only torch_distributed (keys, enabled or not)."""
    keys = list(original)
    if _hardware(spec.instance_type or "") != "trn" or not keys or keys == ["torch_distributed"]:
        return
    what = f"strategy {keys[0]}" if len(keys) == 1 else f"strategies {keys}"
    raise _error("", dict(original), f"Trainium instances ({spec.instance_type}) run only torch_distributed: "
                 f"use {TORCHRUN} (the distribution {what} is not supported there)",
                 problem="is not supported on Trainium")


def _check_smddp(spec: TrainingSpec, name: str, options: Mapping[str, Any]) -> None:
    """``_validate_smdataparallel_args``: versions and Python, only without ``image_uri``."""
    if spec.image_uri:
        return
    if spec.framework_version not in SMDDP_VERSIONS:
        also = "since SDK 2.222 pytorchddp runs on it: " if name == "pytorchddp" else ""
        raise _error(name, dict(options), f"{also}the smdistributed data parallel library supports "
                     f"PyTorch up to 2.2.0 ({list(SMDDP_VERSIONS)}); use torch_distributed ({TORCHRUN}) on "
                     f"{spec.framework_version}, or one of those framework versions, or pass image_uri of an "
                     "image that has the library",
                     problem=f"is not supported with framework_version {spec.framework_version}")
    if "py3" not in (spec.py_version or ""):
        raise _error(name, dict(options), "smdistributed data parallel needs Python 3: use py_version py3 or "
                     "later (e.g. py310)", problem=f"is not supported with py_version {spec.py_version}")


def _check_torchrun(spec: TrainingSpec, options: Mapping[str, Any]) -> None:
    """``validate_torch_distributed_distribution`` (our one exception: the local runtime's ``local``)."""
    name, value = "torch_distributed", dict(options)
    hardware = _hardware(spec.instance_type or "")
    if not spec.image_uri:
        if "py3" not in (spec.py_version or ""):
            raise _error(name, value, "torchrun needs Python 3: use py_version py3 or later (e.g. "
                         "py311)", problem=f"is not supported with py_version {spec.py_version}")
        if hardware == "cpu":
            raise _error(name, value, "torchrun is supported only on GPU (ml.p*, ml.g*, local_gpu) and "
                         "Trainium (ml.trn*) instances: use such an instance_type, mpi on CPU instances, the "
                         "local runtime's 'local' type, or image_uri of your own image",
                         problem=f"is not supported on instance_type {spec.instance_type}")
        versions = {"gpu": TORCHRUN_GPU_VERSIONS, "trn": TORCHRUN_TRAINIUM_VERSIONS}.get(hardware)
        if versions is not None and spec.framework_version not in versions:
            raise _error(name, value, f"on {spec.instance_type} use framework_version one of "
                         f"{list(versions)} (exact strings), or pass image_uri",
                         problem=f"is not supported with framework_version {spec.framework_version}")
    if spec.entry_point is not None and not spec.entry_point.endswith(".py"):
        raise _error(name, value, "torchrun runs only Python programs: give an entry_point ending in .py "
                     "(the container refuses shell scripts and packages too)",
                     problem=f"is not supported with entry_point {spec.entry_point}")


def _check_smdistributed_hardware(spec: TrainingSpec, distribution: Mapping[str, Any]) -> None:
    """``Framework._distribution_configuration``: smdistributed without torchrun on p5 or a CUDA 12 DLC."""
    if "smdistributed" not in distribution or _enabled(distribution.get("torch_distributed") or {}):
        return
    if "p5.48xlarge" in (spec.instance_type or ""):
        raise _error("smdistributed", dict(distribution["smdistributed"]), "SMModelParallel and "
                     f"SMDataParallel do not support p5 instances without torchrun: add {TORCHRUN} beside "
                     "smdistributed, or use ml.p4d.24xlarge", problem="is not supported on ml.p5.48xlarge")
    for image in SMDIST_UNSUPPORTED_IMAGES:
        if image in (spec.image_uri or ""):
            raise _error("smdistributed", dict(distribution["smdistributed"]), "SMDistributed is "
                         f"incompatible with DLC image {spec.image_uri} (CUDA > 11): add {TORCHRUN} or use "
                         "another image",
                         problem="is not supported with this image_uri")


# ------------------------------------------------------------------------------ public
def effective_distribution(spec: TrainingSpec) -> dict[str, Any]:
    """The checked ``distribution`` as the SDK keeps it (``pytorchddp`` rewritten to smdistributed
    data parallel); ``{}`` for none. Raises :class:`SpecError` naming ``distribution.<key>``."""
    original = spec.distribution or {}
    _check_shape(original)
    _check_combination(original)
    _check_trainium(spec, original)
    distribution = {k: v for k, v in original.items() if k != "pytorchddp"}
    if "pytorchddp" in original:
        distribution["smdistributed"] = {"dataparallel": original["pytorchddp"]}
    dataparallel = (distribution.get("smdistributed") or {}).get("dataparallel")
    if dataparallel is not None and _enabled(dataparallel):
        _check_smddp(spec, "pytorchddp" if "pytorchddp" in original else "smdistributed.dataparallel",
                     dataparallel)
    if _enabled(distribution.get("torch_distributed") or {}):
        _check_torchrun(spec, distribution["torch_distributed"])
    _check_smdistributed_hardware(spec, distribution)
    return distribution


def _generic(distribution: Mapping[str, Any], instance_type: str | None) -> dict[str, Any]:
    """``Framework._distribution_configuration``, for the strategies a PyTorch estimator accepts."""
    out: dict[str, Any] = {}
    if "instance_groups" in distribution:
        out[hp.INSTANCE_GROUPS] = list(distribution["instance_groups"])
    if "parameter_server" in distribution:
        out[hp.PARAMETER_SERVER_ENABLED] = _enabled(distribution["parameter_server"])
    if "mpi" in distribution:
        mpi = distribution["mpi"]
        out[hp.MPI_ENABLED] = _enabled(mpi)
        if mpi.get("processes_per_host"):
            out[hp.MPI_PROCESSES_PER_HOST] = mpi["processes_per_host"]
        out[hp.MPI_CUSTOM_OPTIONS] = mpi.get("custom_mpi_options", "")
    if "smdistributed" in distribution:
        smdistributed = distribution["smdistributed"]
        parallel = smdistributed.get("modelparallel") or {}
        if parallel.get("enabled", False) is True and parallel.get("parameters"):
            out[hp.MP_PARAMETERS] = dict(parallel["parameters"])
        dataparallel = smdistributed.get("dataparallel") or {}
        out[hp.SMDDP_ENABLED] = _enabled(dataparallel)
        out[hp.INSTANCE_TYPE] = instance_type
        if _enabled(dataparallel):
            out[hp.SMDDP_CUSTOM_OPTIONS] = dataparallel.get("custom_mpi_options", "")
    return out


def distribution_hyperparameters(spec: TrainingSpec) -> dict[str, Any]:
    """The keys ``PyTorch._pytorch_distribution_configuration`` adds, raw, in the SDK's order."""
    distribution = effective_distribution(spec)
    if not _enabled(distribution.get("torch_distributed") or {}):
        out = _generic(distribution, spec.instance_type)
    else:
        out = _generic(distribution, spec.instance_type) if "smdistributed" in distribution else {}
        out[hp.TORCH_DISTRIBUTED_ENABLED] = True
        out[hp.INSTANCE_TYPE] = spec.instance_type
    for key, value in out.items():
        encoded = json.dumps(value)
        if len(encoded) > hp.MAX_VALUE_LENGTH:
            raise _error("", dict(spec.distribution or {}), f"{key} would be {len(encoded)} characters "
                         f"and SageMaker accepts at most {hp.MAX_VALUE_LENGTH}; shorten it",
                         problem="is too long")
    return out
