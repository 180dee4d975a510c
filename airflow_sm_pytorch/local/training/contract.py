"""The SageMaker training-container contract, as pure functions: the ``/opt/ml`` tree, the config files,
hyperparameters -> argv, and the ``SM_*`` environment the PyTorch DLC's toolkits give the user script.

Formats follow sagemaker-training-toolkit 5.x and sagemaker-pytorch-training 3.x exactly
(``shared/contracts/containers.md`` §1-§3). Where the local runtime differs, on purpose:

* **Paths.** There is no ``/opt/ml`` here: each job gets ``<job_dir>/opt/ml`` and every path
  (``SM_MODEL_DIR``, ``SM_CHANNEL_*``, ``SAGEMAKER_BASE_DIR``, the JSON in ``SM_TRAINING_ENV`` ...) is that
  real absolute path. Scripts that read the variables (as they should) behave the same; hard-coded
  ``/opt/ml/...`` does not.
  ``CheckpointConfig.LocalPath`` (default ``/opt/ml/checkpoints``) is mapped under the job directory the
  same way (``<job_dir>/<LocalPath>``).
* **Network.** Hosts ``algo-1..algo-N`` all on loopback: ``network_interface_name`` /
  ``SM_NETWORK_INTERFACE_NAME`` / ``NCCL_SOCKET_IFNAME`` are ``lo`` (SageMaker: ``eth0``), and
  ``MASTER_ADDR`` is ``127.0.0.1`` because ``algo-1`` does not resolve here (the toolkit sets it to the
  master host name; ``master_hostname`` in ``SM_TRAINING_ENV`` stays ``algo-1``). ``MASTER_PORT`` is the
  job's own port when the runner gives one (the toolkit's 7777 otherwise). ``gethostname()`` is the
  machine's name, not ``algo-k``.
* **Hardware counts are true**: ``SM_NUM_CPUS`` = ``os.cpu_count()``, ``SM_NUM_GPUS`` = GPU lines of
  ``nvidia-smi --list-gpus`` (0 without it), ``SM_NUM_NEURONS`` = ``neuron-ls -j`` cores (0 without it; the
  toolkit's hard-coded 64 for trn2.48xlarge is not copied: this machine is not one).
* ``SM_FRAMEWORK_MODULE`` is the PyTorch DLC's ``sagemaker_pytorch_container.training:main`` (the image's
  ``SAGEMAKER_TRAINING_MODULE``; a request ``Environment`` can override it) although that module is not
  what runs here: this runtime emulates it.
* ``PYTHONPATH`` is the code dir, then whatever ``PYTHONPATH`` the environment had, not the toolkit's whole
  ``sys.path``: the runtime's site-packages on ``PYTHONPATH`` would shadow a job venv's own packages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CURRENT_HOST = "algo-1"
INSTANCE_GROUP = "homogeneousCluster"
NETWORK_INTERFACE = "lo"
MASTER_ADDR = "127.0.0.1"
MASTER_PORT = "7777"
FRAMEWORK_MODULE = "sagemaker_pytorch_container.training:main"
DEFAULT_CHECKPOINT_PATH = "/opt/ml/checkpoints"

#: ``sagemaker_training.params.SAGEMAKER_HYPERPARAMETERS``: never user arguments, never framework params.
SAGEMAKER_HYPERPARAMETERS = (
    "sagemaker_program", "sagemaker_submit_directory", "sagemaker_enable_cloudwatch_metrics",
    "sagemaker_region", "sagemaker_container_log_level", "sagemaker_job_name", "default_user_module_name",
    "_tuning_objective_metric", "sagemaker_s3_output",
)
#: Framework params that put the current group into ``distribution_instance_groups``.
DISTRIBUTION_FLAGS = (
    "sagemaker_mpi_enabled", "sagemaker_parameter_server_enabled",
    "sagemaker_distributed_dataparallel_enabled",
    "sagemaker_pytorch_ddp_enabled", "sagemaker_pytorch_xla_multi_worker_enabled",
    "sagemaker_multi_worker_mirrored_strategy_enabled", "sagemaker_torch_distributed_enabled",
)


@dataclass(frozen=True)
class JobPaths:
    """The job's ``opt/ml`` tree (``base``) and the paths the toolkit derives from it."""

    base: Path

    @classmethod
    def for_job(cls, job_dir: str | os.PathLike[str]) -> JobPaths:
        return cls(Path(os.path.abspath(job_dir)) / "opt" / "ml")

    code = property(lambda self: self.base / "code")
    model = property(lambda self: self.base / "model")
    input = property(lambda self: self.base / "input")
    input_config = property(lambda self: self.base / "input" / "config")
    input_data = property(lambda self: self.base / "input" / "data")
    output = property(lambda self: self.base / "output")
    output_data = property(lambda self: self.base / "output" / "data")
    output_intermediate = property(lambda self: self.base / "output" / "intermediate")
    failure = property(lambda self: self.base / "output" / "failure")
    success = property(lambda self: self.base / "output" / "success")

    def channel(self, name: str) -> Path:
        return self.input_data / name

    def local_path(self, container_path: str) -> Path:
        """Map an absolute container path (``/opt/ml/checkpoints``) to its place under the job directory."""
        rel = [p for p in container_path.split("/") if p not in ("", ".")]
        if ".." in rel:
            raise ValueError(f"{container_path!r} must not contain '..'")
        return self.base.parent.parent.joinpath(*rel)

    def create(self) -> None:
        for d in (self.code, self.model, self.input_config, self.input_data, self.output_data,
                  self.output_intermediate):
            d.mkdir(parents=True, exist_ok=True)


def check_program(program: str) -> str:
    """``sagemaker_program`` must name a file inside the code directory: relative, no ``..``, no NUL.

    Returns it unchanged; a :class:`ValueError` says what is wrong (the runtime never runs, or makes
    executable, anything outside a job's own tree).
    """
    text = str(program)
    parts = text.replace("\\", "/").split("/")
    if not text.strip() or "\x00" in text:
        raise ValueError(f"sagemaker_program {text!r} is empty or holds a NUL character")
    if text.startswith(("/", "~")) or ".." in parts:
        raise ValueError(f"sagemaker_program {text!r} is not a relative path inside the code directory: "
                         "give the entry point relative to source_dir (e.g. 'train.py')")
    return text


# ---------------------------------------------------------------------------- hyperparameters
def decode_hyperparameters(raw: Mapping[str, str] | None) -> dict[str, Any]:
    """``json.loads`` every value; a non-JSON value stays the raw string (``read_hyperparameters``)."""
    decoded: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        try:
            decoded[key] = json.loads(value)
        except (ValueError, TypeError):
            decoded[key] = value
    return decoded


def split_hyperparameters(hps: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(user, additional_framework_parameters, sagemaker)``.

    ``sagemaker`` = reserved keys and every ``sagemaker_*`` key; ``user`` = the rest (``mp_parameters``
    included); framework params = the ``sagemaker`` keys not in the reserved tuple.
    """
    sagemaker = {k: v for k, v in hps.items() if k in SAGEMAKER_HYPERPARAMETERS or k.startswith("sagemaker_")}
    user = {k: v for k, v in hps.items() if k not in sagemaker}
    framework = {k: v for k, v in sagemaker.items() if k not in SAGEMAKER_HYPERPARAMETERS}
    return user, framework, sagemaker


def _decode(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin1")
    return str(value)


def to_cmd_args(user_hps: Mapping[str, Any]) -> list[str]:
    """``mapping.to_cmd_args``: sorted keys, ``--key``/``-k``, ``str()`` values, dicts as ``k=v,...``."""
    args: list[str] = []
    for key in sorted(user_hps):
        name = _decode(key)
        args.append(("--%s" % name if len(name) > 1 else "-%s" % name) if name else "")
        value = user_hps[key]
        if hasattr(value, "items"):
            args.append(",".join("%s=%s" % (k, v) for k, v in sorted(value.items())))
        else:
            args.append(_decode(value))
    return args


def format_env_value(value: Any) -> str:
    """``mapping.to_env_vars`` values: str as-is, None -> "", bytes latin1, else compact sorted JSON."""
    if isinstance(value, bytes):
        return value.decode("latin1")
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


# ---------------------------------------------------------------------------- hosts
@dataclass(frozen=True)
class Host:
    """One host of a job: its name (``algo-k``), instance group and instance type."""

    name: str
    group: str = INSTANCE_GROUP
    instance_type: str = "local"


def host_name(index: int) -> str:
    return f"algo-{index + 1}"


def cluster(resource: Mapping[str, Any] | None) -> list[Host]:
    """The hosts of a request's ``ResourceConfig``: ``algo-1..algo-N`` for ``InstanceCount = N``, or, with
    ``InstanceGroups``, numbered on in the groups' order (the first group's hosts first)."""
    resource = resource or {}
    groups = resource.get("InstanceGroups") or []
    if not groups:
        groups = [{"InstanceGroupName": INSTANCE_GROUP, "InstanceType": resource.get("InstanceType"),
                   "InstanceCount": resource.get("InstanceCount", 1)}]
    hosts: list[Host] = []
    for group in groups:
        for _ in range(int(group.get("InstanceCount", 1))):
            hosts.append(Host(host_name(len(hosts)), str(group.get("InstanceGroupName") or INSTANCE_GROUP),
                              str(group.get("InstanceType") or "local")))
    return hosts


# ---------------------------------------------------------------------------- config files
def resource_config(instance_type: str, current_host: str = CURRENT_HOST,
                    hosts: Sequence[Host] | None = None) -> dict[str, Any]:
    """``resourceconfig.json`` of ``current_host``. Every host gets the same lists in the same (sorted) order,
    ``instance_groups[].hosts`` included, so that master and node ranks agree everywhere (§4.4)."""
    hosts = list(hosts) if hosts else [Host(current_host, INSTANCE_GROUP, instance_type)]
    me = next(h for h in hosts if h.name == current_host)
    groups: dict[str, dict[str, Any]] = {}
    for host in hosts:
        group = groups.setdefault(host.group, {"instance_group_name": host.group,
                                               "instance_type": host.instance_type, "hosts": []})
        group["hosts"].append(host.name)
    for group in groups.values():
        group["hosts"].sort()
    return {
        "current_host": current_host,
        "current_instance_type": me.instance_type,
        "current_group_name": me.group,
        "hosts": sorted(h.name for h in hosts),
        "instance_groups": list(groups.values()),
        "network_interface_name": NETWORK_INTERFACE,
    }


def input_data_config(channels: list[Mapping[str, Any]], *, effective_mode: str = "File") -> dict[str, Any]:
    """``inputdataconfig.json`` as SageMaker writes it, one entry per channel of ``InputDataConfig``.

    ``TrainingInputMode`` is the mode the channel really gets here: FastFile and Pipe are emulated by
    File, so a script that branches on ``Pipe`` reads files rather than waiting on a FIFO.
    """
    config: dict[str, Any] = {}
    for ch in channels:
        s3 = (ch.get("DataSource") or {}).get("S3DataSource") or {}
        local = (ch.get("DataSource") or {}).get("FileDataSource") or {}
        entry: dict[str, Any] = {}
        if ch.get("ContentType"):
            entry["ContentType"] = ch["ContentType"]
        entry["RecordWrapperType"] = ch.get("RecordWrapperType") or "None"
        entry["S3DistributionType"] = (s3.get("S3DataDistributionType")
                                       or local.get("FileDataDistributionType") or "FullyReplicated")
        entry["TrainingInputMode"] = effective_mode
        if ch.get("CompressionType") and ch["CompressionType"] != "None":
            entry["CompressionType"] = ch["CompressionType"]
        config[ch["ChannelName"]] = entry
    return config


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


# ---------------------------------------------------------------------------- the machine
def num_cpus() -> int:
    return os.cpu_count() or 1


def num_gpus() -> int:
    """Lines starting with ``GPU `` in ``nvidia-smi --list-gpus``; 0 when it is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return 0
    try:
        out = subprocess.run([exe, "--list-gpus"], capture_output=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.decode("utf-8", "replace").split("\n") if line.startswith("GPU "))


def num_neurons() -> int:
    """Sum of ``nc_count`` in ``neuron-ls -j``; 0 when it is absent or fails."""
    exe = shutil.which("neuron-ls")
    if not exe:
        return 0
    try:
        out = subprocess.run([exe, "-j"], capture_output=True, timeout=30, check=True).stdout
        return sum(int(dev.get("nc_count", 0)) for dev in json.loads(out))
    except (OSError, subprocess.SubprocessError, ValueError, TypeError, AttributeError):
        return 0


def torch_version() -> str | None:
    """The base environment's torch version, read from its metadata (torch is never imported here)."""
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------- environment
@dataclass(frozen=True)
class _Distribution:
    """Where the distribution runs (§4.4): its instance groups, hosts and master."""

    groups: list[str]
    hosts: list[str]
    master: str


def distribution(resource_config: Mapping[str, Any], framework: Mapping[str, Any]) -> _Distribution:
    """``distribution_instance_groups``, ``distribution_hosts`` and ``master_hostname`` as the toolkit derives
    them from ``resourceconfig.json`` and the framework hyperparameters."""
    hosts = list(resource_config["hosts"])
    current_group = resource_config.get("current_group_name", INSTANCE_GROUP)
    groups_cfg = resource_config.get("instance_groups", []) or []
    if "sagemaker_distribution_instance_groups" in framework:
        groups = list(framework["sagemaker_distribution_instance_groups"])
    else:
        groups = [current_group] if any(framework.get(f, False) for f in DISTRIBUTION_FLAGS) else []
    if groups_cfg:
        dist_hosts = [h for g in groups_cfg if g["instance_group_name"] in groups for h in g["hosts"]]
    else:
        dist_hosts = list(hosts)
    return _Distribution(groups, dist_hosts, dist_hosts[0] if dist_hosts else hosts[0])


def _entry_point(environment: Mapping[str, str], sagemaker: Mapping[str, Any]) -> tuple[Any, Any]:
    """``(user_entry_point, module_name)``: ``SAGEMAKER_PROGRAM`` wins over the hyperparameter."""
    program_env = environment.get("SAGEMAKER_PROGRAM")
    entry = program_env or sagemaker.get("sagemaker_program")
    module = program_env if program_env is not None else str(sagemaker.get("sagemaker_program", None))
    return entry, (module[:-3] if module and module.endswith(".py") else module)


def _training_env_properties(
    paths: JobPaths, hyperparameters: Mapping[str, Any], rc: Mapping[str, Any],
    input_data_config: Mapping[str, Any], job_name: str, environment: Mapping[str, str],
    cpus: int, gpus: int, neurons: int,
) -> dict[str, Any]:
    """The 37 properties of ``SM_TRAINING_ENV`` (``dict(Environment)``)."""
    user, framework, sagemaker = split_hyperparameters(hyperparameters)
    current_host = rc["current_host"]
    current_group = rc.get("current_group_name", INSTANCE_GROUP)
    groups_cfg = rc.get("instance_groups", []) or []
    group_names = [g["instance_group_name"] for g in groups_cfg]
    dist = distribution(rc, framework)
    entry, module_name = _entry_point(environment, sagemaker)
    mp = environment.get("SM_HP_MP_PARAMETERS")
    return {
        "additional_framework_parameters": framework,
        "channel_input_dirs": {ch: str(paths.channel(ch)) for ch in input_data_config},
        "current_host": current_host,
        "current_instance_group": current_group,
        "current_instance_group_hosts": next(
            (g["hosts"] for g in groups_cfg if g["instance_group_name"] == current_group), []),
        "current_instance_type": rc.get("current_instance_type", "local"),
        "distribution_hosts": dist.hosts,
        "distribution_instance_groups": dist.groups,
        "framework_module": environment.get("SAGEMAKER_TRAINING_MODULE", FRAMEWORK_MODULE),
        "hosts": list(rc["hosts"]),
        "hyperparameters": user,
        "input_config_dir": str(paths.input_config),
        "input_data_config": dict(input_data_config),
        "input_dir": str(paths.input),
        "instance_groups": group_names,
        "instance_groups_dict": {g["instance_group_name"]: g for g in groups_cfg},
        "is_hetero": len(group_names) > 1,
        "is_master": current_host == dist.master,
        "is_modelparallel_enabled": mp and mp != "{}",
        "is_smddpmprun_installed": False,
        "is_smddprun_installed": False,
        "job_name": job_name,
        "log_level": sagemaker.get("sagemaker_container_log_level", 20),
        "master_hostname": dist.master,
        "model_dir": str(paths.model),
        "module_dir": str(sagemaker.get("sagemaker_submit_directory", str(paths.code))),
        "module_name": module_name,
        "network_interface_name": rc.get("network_interface_name", "eth0"),
        "num_cpus": cpus,
        "num_gpus": gpus,
        "num_neurons": neurons,
        "output_data_dir": str(paths.output_data),
        "output_dir": str(paths.output),
        "output_intermediate_dir": str(paths.output_intermediate),
        "resource_config": dict(rc),
        "topology": rc.get("topology"),
        "user_entry_point": entry,
    }


#: ``Environment.to_env_vars`` emission order: (SM_ name, property it comes from).
_SM_VARS = (
    ("hosts", "hosts"), ("network_interface_name", "network_interface_name"), ("hps", "hyperparameters"),
    ("user_entry_point", "user_entry_point"), ("framework_params", "additional_framework_parameters"),
    ("resource_config", "resource_config"), ("input_data_config", "input_data_config"),
    ("output_data_dir", "output_data_dir"), ("channels", None), ("current_host", "current_host"),
    ("current_instance_type", "current_instance_type"), ("current_instance_group", "current_instance_group"),
    ("current_instance_group_hosts", "current_instance_group_hosts"), ("instance_groups", "instance_groups"),
    ("instance_groups_dict", "instance_groups_dict"),
    ("distribution_instance_groups", "distribution_instance_groups"), ("is_hetero", "is_hetero"),
    ("module_name", "module_name"), ("log_level", "log_level"), ("framework_module", "framework_module"),
    ("input_dir", "input_dir"), ("input_config_dir", "input_config_dir"), ("output_dir", "output_dir"),
    ("num_cpus", "num_cpus"), ("num_gpus", "num_gpus"), ("num_neurons", "num_neurons"),
    ("model_dir", "model_dir"), ("module_dir", "module_dir"), ("training_env", None), ("user_args", None),
    ("output_intermediate_dir", "output_intermediate_dir"),
)


def _sm_variables(props: Mapping[str, Any]) -> dict[str, str]:
    """The ``SM_*`` variables (§2.1), in the toolkit's order, formatted as ``mapping.to_env_vars``."""
    computed = {"channels": sorted(props["channel_input_dirs"]), "training_env": dict(props),
                "user_args": to_cmd_args(props["hyperparameters"])}
    sm = {name: (props[prop] if prop else computed[name]) for name, prop in _SM_VARS}
    if props["topology"]:
        sm["topology"] = props["topology"]
    for name, path in props["channel_input_dirs"].items():
        sm["channel_%s" % name] = path
    for key, value in props["hyperparameters"].items():
        sm["hp_%s" % key] = value
    return {"SM_%s" % str(k).upper(): format_env_value(v) for k, v in sm.items()}


def training_env(
    *,
    paths: JobPaths,
    hyperparameters: Mapping[str, Any],
    resource_config: Mapping[str, Any],
    input_data_config: Mapping[str, Any],
    job_name: str,
    environment: Mapping[str, str] | None = None,
    region: str | None = None,
    cpus: int,
    gpus: int,
    neurons: int,
    torch: str | None = None,
    base_pythonpath: str | None = None,
    master_addr: str = MASTER_ADDR,
    master_port: int | str = MASTER_PORT,
) -> dict[str, str]:
    """Every variable the toolkits set for the user process (§2.1 and §2.2), as strings.

    ``hyperparameters`` are the *decoded* ones (all keys); ``environment`` is the request's ``Environment``
    (it may set ``SAGEMAKER_PROGRAM``, ``SAGEMAKER_TRAINING_MODULE``, ``SM_HP_MP_PARAMETERS``).
    ``master_addr``/``master_port`` are where the master host listens (``MASTER_ADDR``/``MASTER_PORT``;
    the toolkit's are ``algo-1``/``7777``, the runner gives each job a port of its own).
    """
    environment = dict(environment or {})
    props = _training_env_properties(paths, hyperparameters, resource_config, input_data_config, job_name,
                                     environment, cpus, gpus, neurons)
    env = _sm_variables(props)
    sagemaker = split_hyperparameters(hyperparameters)[2]
    region = sagemaker.get("sagemaker_region") or region or ""
    env.update({
        "SAGEMAKER_JOB_NAME": str(sagemaker.get("sagemaker_job_name", "")),
        "CURRENT_HOST": props["current_host"],
        "SAGEMAKER_REGION": str(region),
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "NCCL_SOCKET_IFNAME": props["network_interface_name"],
        "NCCL_IB_DISABLE": "1",
        "NCCL_DEBUG": "WARN",
        "TRAINING_JOB_NAME": job_name,
        "SAGEMAKER_BASE_DIR": str(paths.base),
        "PYTHONPATH": os.pathsep.join(p for p in (str(paths.code), base_pythonpath) if p),
    })
    if torch:
        env["SM_DLC_TORCH_VERSION"] = torch
    if region:
        env["AWS_REGION"] = str(region)
    return env


def entry_point_type(code_dir: Path, entry: str) -> str:
    """``_entry_point_type.get``: ``COMMAND`` (``.sh``), ``PYTHON_PACKAGE`` (setup.py), ``PYTHON_PROGRAM``."""
    if entry.endswith(".sh"):
        return "COMMAND"
    if (code_dir / "setup.py").exists():
        return "PYTHON_PACKAGE"
    if entry.endswith(".py"):
        return "PYTHON_PROGRAM"
    return "COMMAND"
