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
* **Uploading** (whenever Training was reached: success, failure or stop): ``model/`` ->
  ``<S3OutputPath>/<job>/output/model.tar.gz`` (or ``.../output/model/`` uncompressed with
  ``CompressionType: NONE``), ``output/data`` -> ``.../output/output.tar.gz``, checkpoints -> their S3Uri.

Differences from SageMaker, on purpose (see also :mod:`.contract`):

* Always an argv list, never a shell. The PyTorch DLC joins the argv and re-parses it with ``/bin/sh``
  (containers.md §3.1), so there a value with spaces is split and ``$()`` runs; here every hyperparameter
  value stays one argv element, verbatim. ``.sh`` entry points run directly (shebang) or via ``/bin/sh``.
* FastFile and Pipe input modes are emulated by File (data copied before the script starts);
  ``inputdataconfig.json`` says ``File``. ``ManifestFile``/``AugmentedManifestFile``, FSx/EFS channels,
  more than one instance, ``ContainerEntrypoint`` and MPI/smddp/XLA distributions fail the job with a
  ``ClientError`` that says so; ``torch_distributed`` runs ``python -m torch.distributed.run --nnodes 1``.
* Checkpoints are restored before and uploaded after the run, not continuously during it.
* Failures before Training (bad request, download, unsafe archive) upload nothing, as no container ran.
* ``FailureReason`` is SageMaker's ``AlgorithmError: <failure file>, exit code: 1`` (the toolkit exits 1 on
  user errors), clipped to 1024 characters; runtime-side problems read ``ClientError: ...``.
* The runtime's AWS credentials (``AWS_ACCESS_KEY_ID``/``SECRET``/``SESSION_TOKEN``) are not passed to the
  script unless the request's ``Environment`` sets them; other runtime env vars are inherited.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_sm_pytorch._redact import MASK, is_sensitive
from airflow_sm_pytorch.local.training import contract, staging, venvs
from airflow_sm_pytorch.local.training.process import ProcessResult, run_streamed
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


class _End(Exception):
    def __init__(self, status: str, secondary: str, reason: str | None = None) -> None:
        super().__init__(reason or status)
        self.status, self.secondary, self.reason = status, secondary, reason


def _client_error(message: str) -> _End:
    return _End("Failed", "Failed", f"ClientError: {message}"[:MAX_REASON])


def run_training_job(request: dict, job_dir: Path, events: JobEvents, *, storage: Storage, cache_dir: Path,
                     grace_period: float = 10.0) -> JobResult:
    """Run the job to its end and say how it ended (see the module docstring)."""
    return _TrainingJob(request, Path(job_dir), events, storage, Path(cache_dir), grace_period).run()


class _TrainingJob:
    def __init__(self, request: dict, job_dir: Path, events: JobEvents, storage: Storage, cache_dir: Path,
                 grace_period: float) -> None:
        self.req, self.job_dir, self.events, self.storage = request, job_dir, events, storage
        self.cache_dir, self.grace = cache_dir, grace_period
        self.name = request["TrainingJobName"]
        self.paths = contract.JobPaths.for_job(job_dir)
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
        max_run = (request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
        self.max_run = max_run
        self.deadline = time.monotonic() + float(max_run) if max_run else None
        self.stop_reason: str | None = None
        self.model_artifacts: str | None = None
        self.hardware: dict[str, int] = {}
        self.instance_type = "local"
        self.checkpoint: tuple[Path, str] | None = None

    # ------------------------------------------------------------------ plumbing
    def log(self, message: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now)) + ",%03d" % (now % 1 * 1000)
        for line in message.split("\n"):
            self.events.log(HOST, f"{stamp} sagemaker-local INFO     {line}", int(now * 1000))

    def should_stop(self) -> str | None:
        if self.stop_reason is None:
            if self.events.stop_requested():
                self.stop_reason = "stop"
            elif self.deadline is not None and time.monotonic() >= self.deadline:
                self.stop_reason = "timeout"
        return self.stop_reason

    def on_stop(self, reason: str) -> None:
        why = "Stop requested" if reason == "stop" else f"MaxRuntimeInSeconds={self.max_run} exceeded"
        self.log(f"{why}: sending SIGTERM to the job's processes (SIGKILL after {self.grace:g}s)")
        self.events.status("Stopping", "Stopping the training job")

    def stopped(self, reason: str) -> _End:
        if reason == "stop":
            return _End("Stopped", "Stopped")
        return _End("Stopped", "MaxRuntimeExceeded",
                    f"MaxRuntimeExceeded: the job ran longer than MaxRuntimeInSeconds={self.max_run}")

    def check_stop(self) -> None:
        reason = self.should_stop()
        if reason:
            raise self.stopped(reason)

    # ------------------------------------------------------------------ the job
    def run(self) -> JobResult:
        start = time.time()
        self.paths.create()
        probe = threading.Thread(target=self._probe_hardware, daemon=True)
        probe.start()
        trained = False
        try:
            self.check_stop()
            self.events.status("Downloading", "Downloading input data")
            self.instance_type = staging.validate(self.req, self.framework, self.entry)
            staging.fetch_code(self.storage, self.sm.get("sagemaker_submit_directory"), self.paths.code,
                               self.job_dir, self.log)
            staging.fetch_channels(self.storage, self.req, self.paths, self.log, self.check_stop)
            self.checkpoint = staging.checkpoint_location(self.req, self.paths)
            staging.restore_checkpoints(self.storage, self.checkpoint, self.log)
            self._write_configs()
            self.check_stop()
            self.events.status("Training", "Training image download completed. Training in progress.")
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
        if trained:
            outcome = self._upload(outcome)
        return JobResult(
            status=outcome.status, secondary_status=outcome.secondary, failure_reason=outcome.reason,
            model_artifacts=self.model_artifacts,
            final_metrics=[{"MetricName": n, "Value": v, "Timestamp": ts}
                           for n, (v, ts) in self.final.items()],
            training_start_time=start, training_end_time=time.time(),
        )

    def _probe_hardware(self) -> None:
        self.hardware = {"cpus": contract.num_cpus(), "gpus": contract.num_gpus(),
                         "neurons": contract.num_neurons()}

    def _write_configs(self) -> None:
        cfg = self.paths.input_config
        contract.write_json(cfg / "hyperparameters.json", self.raw_hps)
        self.resource_config = contract.resource_config(self.instance_type)
        contract.write_json(cfg / "resourceconfig.json", self.resource_config)
        self.input_data_config = contract.input_data_config(self.req.get("InputDataConfig") or [])
        contract.write_json(cfg / "inputdataconfig.json", self.input_data_config)
        if self.checkpoint is not None:
            contract.write_json(cfg / "checkpointconfig.json", {"LocalPath": str(self.checkpoint[0]),
                                                                "S3Uri": self.checkpoint[1]})
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

    def _child_env(self, python: str) -> dict[str, str]:
        env = self._base_env()
        env.update(contract.training_env(
            paths=self.paths, hyperparameters=self.hps, resource_config=self.resource_config,
            input_data_config=self.input_data_config, job_name=self.name, environment=self.environment,
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
            cpus=self.hardware.get("cpus", contract.num_cpus()), gpus=self.hardware.get("gpus", 0),
            neurons=self.hardware.get("neurons", 0), torch=contract.torch_version(),
            base_pythonpath=env.get("PYTHONPATH"),
        ))
        bins = dict.fromkeys([os.path.dirname(python), os.path.dirname(sys.executable)])
        env["PATH"] = os.pathsep.join([*bins, env.get("PATH", "")])
        return env

    def _script_line(self, line: str, ts: int) -> None:
        self.events.log(HOST, line, ts)
        for name, regex in self.metrics:
            match = regex.search(line)
            if match is None:
                continue
            try:
                value = float(match.group(1) if regex.groups else match.group(0))
            except (TypeError, ValueError):
                continue
            self.final[name] = (value, ts / 1000.0)

    def _run(self, argv: Sequence[str], env: dict[str, str],
             on_line: Callable[[str, int], None]) -> ProcessResult:
        pids: list[int] = []

        def on_start(pid: int) -> None:
            pids.append(pid)
            if self.events.started is not None:
                self.events.started(pid)

        try:
            return run_streamed(argv, cwd=self.paths.code, env=env, on_line=on_line,
                                should_stop=self.should_stop, on_stop=self.on_stop, on_start=on_start,
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

    def _command(self, etype: str, python: str) -> list[str]:
        args = contract.to_cmd_args(self.user)
        entry = str(self.entry)
        if self.framework.get("sagemaker_torch_distributed_enabled"):
            if etype != "PYTHON_PROGRAM":
                raise _client_error("Python packages are not supported for torch_distributed. "
                                    "Please use a python script as the entry-point")
            hw = self.hardware
            nproc = self.framework.get("sagemaker_mpi_num_of_processes_per_host") or (
                hw.get("gpus") or hw.get("neurons") or 1)
            return [python, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
                    entry, *args]
        if etype == "PYTHON_PACKAGE":
            return [python, "-m", entry.replace(".py", ""), *args]
        if etype == "PYTHON_PROGRAM":
            return [python, entry, *args]
        path = self._inside_code(entry)
        if path.is_file():
            os.chmod(path, path.stat().st_mode | 0o111)
            with open(path, "rb") as fh:
                head = fh.read(4)
            if head.startswith(b"#!") or head == b"\x7fELF":
                return [f"./{entry}", *args]
        return ["/bin/sh", f"./{entry}", *args]

    def _inside_code(self, entry: str) -> Path:
        """``entry`` resolved (links followed) inside the code dir; a path that leads anywhere else fails the
        job: nothing outside the job's tree is ever chmodded or run."""
        code = self.paths.code.resolve()
        path = (code / entry).resolve()
        if not path.is_relative_to(code) or path == code:
            raise _client_error(f"sagemaker_program={entry!r} is not a file inside the code directory; "
                                "refusing to run it")
        return path

    def _train(self) -> _End:
        etype = contract.entry_point_type(self.paths.code, str(self.entry))
        python = self._install(etype)
        argv = self._command(etype, python)
        env = self._child_env(python)
        self.log("Invoking script with the following command:\n\n" + self._shown(argv) + "\n")
        self.check_stop()
        result = self._run(argv, env, self._script_line)
        if result.stopped:
            return self.stopped(result.stopped)
        if result.returncode == 0:
            self.paths.success.touch()
            self.log("Reporting training SUCCESS")
            return _End("Completed", "Completed")
        return self._failure("ExecuteUserScriptError", result, self._shown(argv))

    def _shown(self, argv: Sequence[str]) -> str:
        """The command line as logged: values of secret-looking hyperparameters are masked."""
        secrets = {value for key, hp in self.user.items() if is_sensitive(str(key))
                   for value in contract.to_cmd_args({key: hp})[1:] if value}
        return " ".join(MASK if arg in secrets else arg for arg in argv)

    def _failure(self, error_class: str, result: ProcessResult, cmd: str) -> _End:
        extra = "OutOfMemory: Process killed by SIGKILL (signal 9)" if result.returncode == 137 else None
        info = f'\nExtraInfo "{extra}"' if extra else ""
        message = (f'{error_class}:\nExitCode {result.returncode}\nErrorMessage "{result.error_message}"'
                   f'{info}\nCommand "{cmd}"').strip()
        failure = self.paths.failure
        if failure.exists():
            text = failure.read_text(encoding="utf-8", errors="replace")
        else:
            failure.write_text(message, encoding="utf-8")
            text = message
        self.log(f"Reporting training FAILURE\n{message}")
        suffix = ", exit code: 1"
        body = text[:MAX_REASON - len("AlgorithmError: ") - len(suffix)]
        return _End("Failed", "Failed", f"AlgorithmError: {body}{suffix}")

    # ------------------------------------------------------------------ Uploading
    def _upload(self, outcome: _End) -> _End:
        self.events.status("Uploading", "Uploading generated training model")
        try:
            self.model_artifacts = staging.upload_artifacts(self.storage, self.req, self.paths, self.job_dir,
                                                            self.checkpoint, self.log)
        except Exception as err:
            self.log(f"Uploading the artifacts failed: {type(err).__name__}: {err}")
            if outcome.status == "Completed":
                return _client_error(f"Artifact upload failed: {type(err).__name__}: {err}")
        return outcome
