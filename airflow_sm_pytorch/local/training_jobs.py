"""SageMaker training jobs on the local runtime: Create/Describe/Stop/List, and the detached supervisor
each job runs under (:mod:`.supervisor`). A job whose supervisor died is Failed at the next look, and
what is left of it is killed (its process group, and every process carrying its marker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow_sm_pytorch.local.config import is_within
from airflow_sm_pytorch.local.protocol import ACCOUNT, ApiError, page_offset, page_token
from airflow_sm_pytorch.local.store import (
    JOB_MARKER,
    JobExists,
    Store,
    job_marker,
    kill_marked,
    kill_process_group,
    process_alive,
    process_start,
)
from airflow_sm_pytorch.local.training import spot
from airflow_sm_pytorch.local.training.contract import check_program
from airflow_sm_pytorch.storage import parse_uri

NOT_FOUND = "Requested resource not found."
#: CreateTrainingJob members that DescribeTrainingJob reports back (botocore's model: input ∩ output).
ECHOED = ("HyperParameters", "AlgorithmSpecification", "RoleArn", "InputDataConfig", "OutputDataConfig",
          "ResourceConfig", "VpcConfig", "StoppingCondition", "EnableNetworkIsolation",
          "EnableInterContainerTrafficEncryption", "EnableManagedSpotTraining", "CheckpointConfig",
          "DebugHookConfig", "DebugRuleConfigurations", "TensorBoardOutputConfig", "ExperimentConfig",
          "ProfilerConfig", "ProfilerRuleConfigurations", "Environment", "RetryStrategy", "RemoteDebugConfig",
          "InfraCheckConfig", "ServerlessJobConfig", "MlflowConfig", "ModelPackageConfig")
#: A supervisor that has not recorded its pid this long after CreateTrainingJob never started.
_LAUNCH_GRACE_S = 30.0


def _epoch(value: Any) -> float:
    """A JSON-protocol timestamp (epoch seconds; ISO 8601 text is accepted too) as epoch seconds."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class TrainingJobs:
    def __init__(self, store: Store, root: Path, allowed_paths: Iterable[Path] = (),
                 spot_interruptions: spot.SpotInterruptions | None = None) -> None:
        self.store = store
        self.root = Path(root)
        #: Spot interruptions every managed spot job gets unless its tag says otherwise (``local serve
        #: --spot-interruptions`` / ``$SM_PYTORCH_LOCAL_SPOT_INTERRUPTIONS``); see :mod:`.training.spot`.
        self.spot_interruptions = spot_interruptions
        #: Where ``file://`` outputs and checkpoints may be written: the root and ``--allow-path`` dirs.
        self.writable = (Path(os.path.realpath(self.root)), *allowed_paths)
        self.ops: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
            "CreateTrainingJob": self.create_training_job, "DescribeTrainingJob": self.describe_training_job,
            "StopTrainingJob": self.stop_training_job, "ListTrainingJobs": self.list_training_jobs,
        }

    def create_training_job(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        name = params["TrainingJobName"]
        self._check_program(params)
        self._check_locations(params)
        interruptions = self._check_spot(params)
        arn = f"arn:aws:sagemaker:{region}:{ACCOUNT}:training-job/{name.lower()}"
        try:
            self.store.create_job(name, arn, region, params)
        except JobExists:
            existing = self.store.get_job(name)
            raise ApiError("ResourceInUse", "Training job names must be unique within an AWS account and "
                           "region, and a training job with this name already exists "
                           f"({existing['arn'] if existing else arn})")
        self._launch(name, interruptions)
        return {"TrainingJobArn": arn}

    def _check_spot(self, params: dict[str, Any]) -> spot.SpotInterruptions | None:
        """Managed spot training needs MaxWaitTimeInSeconds (>= MaxRuntimeInSeconds: the validator checks
        that); returns the spot interruptions to rehearse (None for an on-demand job, whatever is asked)."""
        stopping = params.get("StoppingCondition") or {}
        if spot.is_spot(params) and not stopping.get("MaxWaitTimeInSeconds"):
            raise ApiError("ValidationException", "StoppingCondition.MaxWaitTimeInSeconds is required for "
                           "managed spot training (EnableManagedSpotTraining): set it (max_wait) to at least "
                           "MaxRuntimeInSeconds; it covers waiting for spot capacity plus the training")
        try:
            return spot.for_job(params, self.spot_interruptions)
        except ValueError as exc:
            raise ApiError("ValidationException", str(exc)) from None

    @staticmethod
    def _check_program(params: dict[str, Any]) -> None:
        program = (params.get("Environment") or {}).get("SAGEMAKER_PROGRAM")
        if program is None:
            raw = (params.get("HyperParameters") or {}).get("sagemaker_program")
            try:
                program = json.loads(raw) if raw is not None else None
            except ValueError:
                program = raw
        if program is None:
            return  # staging fails the job with "no entry point", as the container would
        try:
            check_program(str(program))
        except ValueError as exc:
            raise ApiError("ValidationException", str(exc)) from None

    def _check_locations(self, params: dict[str, Any]) -> None:
        """``file://`` writes only under the root or an allowed directory; ``file://`` reads must exist."""
        writes = [("OutputDataConfig.S3OutputPath", (params.get("OutputDataConfig") or {}).get("S3OutputPath")),
                  ("CheckpointConfig.S3Uri", (params.get("CheckpointConfig") or {}).get("S3Uri"))]
        for field, uri in writes:
            if not (isinstance(uri, str) and uri.startswith("file://")):
                continue
            path = parse_uri(uri).path
            if not is_within(path, self.writable):
                allowed = ", ".join(str(p) for p in self.writable)
                raise ApiError("ValidationException",
                               f"{field} {uri} is outside the directories the local runtime may write to "
                               f"({allowed}): write under its root, or allow the directory with "
                               "`airflow-sm-pytorch local serve --allow-path DIR` (on a connection that starts "
                               "the runtime: sm_pytorch.local_runtime.allow_paths)")
        reads = [(f"InputDataConfig[{ch.get('ChannelName')}]",
                  ((ch.get("DataSource") or {}).get("S3DataSource") or {}).get("S3Uri")
                  or ((ch.get("DataSource") or {}).get("FileDataSource") or {}).get("FileUri"))
                 for ch in params.get("InputDataConfig") or []]
        submit = (params.get("HyperParameters") or {}).get("sagemaker_submit_directory")
        if submit:
            try:
                reads.append(("HyperParameters.sagemaker_submit_directory", json.loads(submit)))
            except ValueError:
                reads.append(("HyperParameters.sagemaker_submit_directory", submit))
        for field, uri in reads:
            if isinstance(uri, str) and uri.startswith("file://") and not os.path.exists(parse_uri(uri).path):
                raise ApiError("ValidationException",
                               f"{field} {uri} does not exist on the local runtime's machine: create it first "
                               "(e.g. hook.upload_data) or fix the path")

    def _launch(self, name: str, interruptions: spot.SpotInterruptions | None = None) -> None:
        job_dir = self.root / "jobs" / name
        rehearse = ["--spot-interruptions", str(interruptions)] if interruptions is not None else []
        try:
            job_dir.mkdir(parents=True, exist_ok=True)
            with open(job_dir / "supervisor.log", "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "airflow_sm_pytorch.local.supervisor", "--root", str(self.root),
                     "--job", name, *rehearse],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=job_dir,
                    start_new_session=True, close_fds=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", JOB_MARKER: job_marker(self.store.get_job(name))},
                )
        except OSError as exc:
            self.store.finish(name, status="Failed", secondary_status="Failed",
                              failure_reason="InternalServerError: the local runtime could not start the "
                                             f"job supervisor: {exc}")
            return
        self.store.set_supervisor(name, proc.pid, process_start(proc.pid))
        threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()  # no zombies

    def _job(self, name: str) -> dict[str, Any]:
        job = self.store.get_job(name)
        if job is None:
            raise ApiError("ValidationException", NOT_FOUND)
        if job["status"] == "InProgress" and self.reap(job):
            job = self.store.get_job(name) or job
        return job

    def reap(self, job: dict[str, Any]) -> bool:
        """Mark an InProgress job whose supervisor is gone (or whose PID was reused) Failed; first SIGKILL
        the process group it recorded, if still the same group (nobody else would ever stop the script)."""
        pid = job.get("supervisor_pid")
        if pid is None:
            if time.time() - job["creation_time"] < _LAUNCH_GRACE_S:
                return False
            detail = "it never started (the server stopped before launching it)"
        elif process_alive(pid, job.get("supervisor_start")):
            return False
        else:
            detail = f"(pid {pid}) while the job was InProgress"
        log = self.root / "jobs" / job["name"] / "supervisor.log"
        reason = f"the local runtime's job supervisor exited unexpectedly {detail}; see {log}"
        marker = job_marker(job)

        def kill_leftovers(pgid: int | None, start: str | None) -> None:
            kill_process_group(pgid, start)
            kill_marked(marker)  # what left the group (setsid) too

        return self.store.fail_orphan(job["name"], pid, reason, before=kill_leftovers)

    def reap_all(self) -> int:
        return sum(self.reap(job) for job in self.store.in_progress())

    def describe_training_job(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        job = self._job(params["TrainingJobName"])
        out: dict[str, Any] = {
            "EnableNetworkIsolation": False,
            "EnableInterContainerTrafficEncryption": False,
            "EnableManagedSpotTraining": False,
        }
        out.update((k, v) for k, v in job["request"].items() if k in ECHOED)
        out.update(
            TrainingJobName=job["name"],
            TrainingJobArn=job["arn"],
            TrainingJobStatus=_status(job),
            SecondaryStatus=job["secondary_status"],
            CreationTime=job["creation_time"],
            LastModifiedTime=job["last_modified_time"],
            SecondaryStatusTransitions=[
                {"Status": t["status"], "StartTime": t["start_time"],
                 **({"EndTime": t["end_time"]} if t["end_time"] is not None else {}),
                 **({"StatusMessage": t["message"]} if t["message"] else {})}
                for t in job["transitions"]
            ],
        )
        optional = {
            "FailureReason": job["failure_reason"],
            "TrainingStartTime": job["training_start_time"],
            "TrainingEndTime": job["training_end_time"],
            "TrainingTimeInSeconds": job["training_seconds"],
            "BillableTimeInSeconds": job["billable_seconds"],
        }
        out.update((k, v) for k, v in optional.items() if v is not None)
        if job["model_artifacts"]:
            out["ModelArtifacts"] = {"S3ModelArtifacts": job["model_artifacts"]}
        if job["final_metrics"]:
            out["FinalMetricDataList"] = job["final_metrics"]
        return out

    def stop_training_job(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        job = self._job(params["TrainingJobName"])
        status = self.store.request_stop(job["name"]) if job["status"] == "InProgress" else job["status"]
        if status != "InProgress":
            raise ApiError("ValidationException",
                           f"The request was rejected because the training job is in status {status}.")
        job = self.store.get_job(job["name"]) or job
        pid = job["supervisor_pid"]
        if job["supervisor_ready"] and process_alive(pid, job["supervisor_start"]):
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass  # it just ended; it polls the store's stop flag anyway
        return {}

    def list_training_jobs(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        jobs = self.store.list_jobs()
        if [self.reap(j) for j in jobs if j["status"] == "InProgress"].count(True):
            jobs = self.store.list_jobs()
        name = params.get("NameContains")
        bounds = [("creation_time", "CreationTimeAfter", 1), ("creation_time", "CreationTimeBefore", -1),
                  ("last_modified_time", "LastModifiedTimeAfter", 1),
                  ("last_modified_time", "LastModifiedTimeBefore", -1)]
        for column, member, sign in bounds:
            if member in params:
                limit = _epoch(params[member])
                jobs = [j for j in jobs if (j[column] - limit) * sign > 0]
        if name:
            jobs = [j for j in jobs if name.lower() in j["name"].lower()]
        sort_by = params.get("SortBy", "CreationTime")
        key: Callable[[dict[str, Any]], Any] = {
            "Name": lambda j: (j["name"], j["creation_time"]),
            "Status": lambda j: (_status(j), j["creation_time"], j["name"]),
        }.get(sort_by, lambda j: (j["creation_time"], j["name"]))
        jobs.sort(key=key, reverse=params.get("SortOrder", "Ascending") == "Descending")
        status = params.get("StatusEquals")
        if status and "MaxResults" not in params:
            jobs = [j for j in jobs if _status(j) == status]
        offset = page_offset(params.get("NextToken"), "ValidationException")
        size = params.get("MaxResults", 10)
        page = jobs[offset:offset + size]
        if status and "MaxResults" in params:
            # As documented: MaxResults jobs are taken first, then filtered by StatusEquals.
            page = [j for j in page if _status(j) == status]
        out: dict[str, Any] = {"TrainingJobSummaries": [_summary(j) for j in page]}
        if offset + size < len(jobs):
            out["NextToken"] = page_token(offset + size)
        return out

def _status(job: dict[str, Any]) -> str:
    """SageMaker's TrainingJobStatus: an InProgress job asked to stop reads ``Stopping`` until it ends."""
    return "Stopping" if job["status"] == "InProgress" and job.get("stop_requested") else job["status"]


def _summary(job: dict[str, Any]) -> dict[str, Any]:
    out = {
        "TrainingJobName": job["name"],
        "TrainingJobArn": job["arn"],
        "CreationTime": job["creation_time"],
        "LastModifiedTime": job["last_modified_time"],
        "TrainingJobStatus": _status(job),
        "SecondaryStatus": job["secondary_status"],
    }
    if job["training_end_time"] is not None:
        out["TrainingEndTime"] = job["training_end_time"]
    return out
