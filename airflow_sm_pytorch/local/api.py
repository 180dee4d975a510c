"""The SageMaker and CloudWatch Logs operations the local runtime serves: one handler per operation.

Handlers take the decoded JSON 1.1 request and return the response dict; every refusal is an
:class:`ApiError` with the AWS error code (``__type``) and message botocore turns into ``ClientError``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shlex
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
from airflow_sm_pytorch.local.hosting import Hosting, HostingError
from airflow_sm_pytorch.local.store import (JOB_MARKER, JobExists, Store, job_marker, kill_marked,
                                            kill_process_group, process_alive, process_start)
from airflow_sm_pytorch.local.training.contract import check_program
from airflow_sm_pytorch.storage import parse_uri

ACCOUNT = "000000000000"
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
_TOKEN = re.compile(r"([fb])/(\d{1,56})")


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _page_offset(token: str | None, code: str) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
        if isinstance(offset, int) and offset >= 0:
            return offset
    except (ValueError, KeyError, TypeError, binascii.Error):
        pass
    raise ApiError(code, "Invalid pagination token" if code == "ValidationException"
                   else "The specified nextToken is invalid.")


def _epoch(value: Any) -> float:
    """A JSON-protocol timestamp (epoch seconds; ISO 8601 text is accepted too) as epoch seconds."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class Api:
    def __init__(self, store: Store, root: Path, allowed_paths: Iterable[Path] = ()) -> None:
        self.store = store
        self.root = Path(root)
        #: Where ``file://`` outputs and checkpoints may be written: the root and ``--allow-path`` dirs.
        self.writable = (Path(os.path.realpath(self.root)), *allowed_paths)
        self.hosting = Hosting(store, self.root)
        self._ops: dict[tuple[str, str], Callable[[dict[str, Any], str], dict[str, Any]]] = {
            ("sagemaker", "CreateTrainingJob"): self.create_training_job,
            ("sagemaker", "DescribeTrainingJob"): self.describe_training_job,
            ("sagemaker", "StopTrainingJob"): self.stop_training_job,
            ("sagemaker", "ListTrainingJobs"): self.list_training_jobs,
            **{("sagemaker", op): handler for op, handler in self.hosting.ops.items()},
            ("logs", "DescribeLogStreams"): self.describe_log_streams,
            ("logs", "GetLogEvents"): self.get_log_events,
            ("logs", "FilterLogEvents"): self.filter_log_events,
        }

    def dispatch(self, target: str, params: dict[str, Any], region: str) -> dict[str, Any]:
        prefix, _, op = target.partition(".")
        service = {"SageMaker": "sagemaker", "Logs_20140328": "logs"}.get(prefix)
        handler = self._ops.get((service or "", op))
        if handler is None:
            raise ApiError("UnknownOperationException",
                           f"The local runtime does not implement {target or '(no X-Amz-Target)'}")
        from airflow_sm_pytorch.builders.validation import validate_request
        from airflow_sm_pytorch.exceptions import SpecError

        bad = "ValidationException" if service == "sagemaker" else "InvalidParameterException"
        try:  # every limit, pattern and enum of botocore's model, at every depth ("local" instance types too)
            validate_request(op, params, allow_file_uris=True, service=service)
        except SpecError as exc:
            raise ApiError(bad, str(exc)) from None
        try:
            return handler(params, region)
        except HostingError as exc:
            raise ApiError(exc.code, exc.message, exc.status) from None

    # -- SageMaker ------------------------------------------------------------------------------
    def create_training_job(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        name = params["TrainingJobName"]
        self._check_program(params)
        self._check_locations(params)
        arn = f"arn:aws:sagemaker:{region}:{ACCOUNT}:training-job/{name.lower()}"
        try:
            self.store.create_job(name, arn, region, params)
        except JobExists:
            existing = self.store.get_job(name)
            raise ApiError("ResourceInUse", "Training job names must be unique within an AWS account and "
                           "region, and a training job with this name already exists "
                           f"({existing['arn'] if existing else arn})")
        self._launch(name)
        return {"TrainingJobArn": arn}

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

    def _launch(self, name: str) -> None:
        job_dir = self.root / "jobs" / name
        try:
            job_dir.mkdir(parents=True, exist_ok=True)
            with open(job_dir / "supervisor.log", "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "airflow_sm_pytorch.local.supervisor", "--root", str(self.root),
                     "--job", name],
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
        offset = _page_offset(params.get("NextToken"), "ValidationException")
        size = params.get("MaxResults", 10)
        page = jobs[offset:offset + size]
        if status and "MaxResults" in params:
            # As documented: MaxResults jobs are taken first, then filtered by StatusEquals.
            page = [j for j in page if _status(j) == status]
        out: dict[str, Any] = {"TrainingJobSummaries": [_summary(j) for j in page]}
        if offset + size < len(jobs):
            out["NextToken"] = _page_token(offset + size)
        return out

    # -- CloudWatch Logs ------------------------------------------------------------------------
    def _check_group(self, params: dict[str, Any]) -> str:
        """The log group a request names (by name or ARN); it must be one a resource has logged to."""
        name, ident = params.get("logGroupName"), params.get("logGroupIdentifier")
        if name and ident:
            raise ApiError("InvalidParameterException",
                           "LogGroup name and LogGroup ARN are mutually exclusive parameters.")
        if ident:
            if ident.startswith("arn:") and ":log-group:" in ident:
                ident = ident.split(":log-group:", 1)[1]
            name = ident
            name = name[:-2] if name.endswith(":*") else name
        if not name:
            raise ApiError("InvalidParameterException", "Should provide either name or identifier")
        if name not in self.store.log_groups():
            raise ApiError("ResourceNotFoundException", "The specified log group does not exist.")
        return name

    def describe_log_streams(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        group = self._check_group(params)
        prefix, order = params.get("logStreamNamePrefix"), params.get("orderBy", "LogStreamName")
        if prefix and order == "LastEventTime":
            raise ApiError("InvalidParameterException",
                           "Cannot order by LastEventTime with a logStreamNamePrefix.")
        streams = self.store.log_streams(prefix, group)
        if order == "LastEventTime":
            streams.sort(key=lambda s: (s["last_event"] or s["creation_time"], s["name"]))
        if params.get("descending"):
            streams.reverse()
        offset = _page_offset(params.get("nextToken"), "InvalidParameterException")
        size = params.get("limit", 50)
        page = streams[offset:offset + size]
        out: dict[str, Any] = {"logStreams": [
            {
                "logStreamName": s["name"],
                "creationTime": s["creation_time"],
                **({"firstEventTimestamp": s["first_event"]} if s["first_event"] is not None else {}),
                **({"lastEventTimestamp": s["last_event"]} if s["last_event"] is not None else {}),
                **({"lastIngestionTime": s["last_ingestion"]} if s["last_ingestion"] is not None else {}),
                "arn": f"arn:aws:logs:{region}:{ACCOUNT}:log-group:{group}:log-stream:{s['name']}",
                "storedBytes": 0,  # deprecated by CloudWatch Logs, which reports 0 too
            }
            for s in page
        ]}
        if offset + size < len(streams):
            out["nextToken"] = _page_token(offset + size)
        return out

    def get_log_events(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        """CloudWatch Logs paging: ``f/<id>`` reads events with id >= id onward, ``b/<id>`` those before.

        With no newer events the forward token handed back is the one passed in, so a tailer that
        keeps passing ``nextForwardToken`` sees every event exactly once.
        """
        group = self._check_group(params)
        stream = params["logStreamName"]
        if self.store.log_stream(stream, group) is None:
            raise ApiError("ResourceNotFoundException", "The specified log stream does not exist.")
        token = params.get("nextToken")
        if token:
            match = _TOKEN.fullmatch(token)
            if match is None:
                raise ApiError("InvalidParameterException", "The specified nextToken is invalid.")
            forward, position = match.group(1) == "f", int(match.group(2))
        else:
            forward, position = bool(params.get("startFromHead", False)), None
        window = {"start": params.get("startTime"), "end": params.get("endTime"),
                  "limit": params.get("limit", 10000)}
        if forward:
            events = self.store.log_events([stream], after=position or 0, **window)
        else:
            events = self.store.log_events([stream], before=position, newest=True, **window)
        if events:
            fwd, back = events[-1]["id"] + 1, events[0]["id"]
        else:  # nothing there: hand the same position back, in both directions
            fwd = back = position or 0
        return {
            "events": [{"timestamp": e["timestamp"], "message": e["message"], "ingestionTime": e["ingestion"]}
                       for e in events],
            "nextForwardToken": f"f/{fwd:056d}",
            "nextBackwardToken": f"b/{back:056d}",
        }

    def filter_log_events(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        group = self._check_group(params)
        names, prefix = params.get("logStreamNames"), params.get("logStreamNamePrefix")
        if names and prefix:
            raise ApiError("InvalidParameterException",
                           "logStreamNames and logStreamNamePrefix are mutually exclusive parameters.")
        streams = [s["name"] for s in self.store.log_streams(prefix, group)]
        if names:
            streams = [s for s in streams if s in set(names)]
        match = _pattern(params.get("filterPattern") or "")
        limit = params.get("limit", 10000)
        after = _page_offset(params.get("nextToken"), "InvalidParameterException")
        end = None if params.get("endTime") is None else params["endTime"] + 1  # inclusive here
        found: list[dict[str, Any]] = []
        more = False
        while len(found) < limit:
            batch = self.store.log_events(streams, after=after, start=params.get("startTime"),
                                          end=end, limit=5000)
            if not batch:
                break
            for event in batch:
                after = event["id"] + 1
                if match(event["message"]):
                    found.append(event)
                    if len(found) == limit:
                        more = bool(self.store.log_events(streams, after=after, limit=1))
                        break
        out: dict[str, Any] = {
            "events": [{"logStreamName": e["stream"], "timestamp": e["timestamp"], "message": e["message"],
                        "ingestionTime": e["ingestion"], "eventId": str(e["id"])} for e in found],
            "searchedLogStreams": [{"logStreamName": s, "searchedCompletely": not more} for s in streams],
        }
        if more:
            out["nextToken"] = _page_token(after)
        return out


def _pattern(text: str) -> Callable[[str], bool]:
    """Plain CloudWatch term patterns: every term (or "quoted phrase") must occur, ``-term`` must not."""
    if text.strip()[:1] in ("{", "["):
        raise ApiError("InvalidParameterException", "The local runtime supports only term filter patterns "
                                                    "(words, \"phrases\", -exclusions).")
    try:
        terms = shlex.split(text)
    except ValueError:
        raise ApiError("InvalidParameterException", "Invalid character(s) in term") from None
    need = [t for t in terms if not t.startswith("-")]
    avoid = [t[1:] for t in terms if t.startswith("-") and len(t) > 1]
    return lambda message: all(t in message for t in need) and not any(t in message for t in avoid)


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
