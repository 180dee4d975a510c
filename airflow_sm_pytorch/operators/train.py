"""``PyTorchTrainOperator``: the SageMaker SDK's ``PyTorch(...).fit(...)`` as an Airflow task.

Importing this module is cheap: no boto3, botocore, torch, omegaconf or numpy (the hook, and with it
boto3, is created on first use inside ``execute``). A test pins this.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_sm_pytorch._redact import redact, secrets
from airflow_sm_pytorch.exceptions import RequestRejected
from airflow_sm_pytorch.links import ExtraLinks, TrainingJobLink, TrainingLogsLink, store_links
from airflow_sm_pytorch.operators.common import defer, fail_fast, raise_for_event
from airflow_sm_pytorch.operators.tagging import merge_tags, task_tags
from airflow_sm_pytorch.specs import TrainingSpec

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_sm_pytorch.hooks.logs import JobLog
    from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook

#: The estimator's keyword arguments (plus ``inputs`` and ``job_name``) the operator accepts.
ESTIMATOR_ARGS = frozenset(f.name for f in dataclasses.fields(TrainingSpec))
_INT_ARGS = frozenset(
    f.name for f in dataclasses.fields(TrainingSpec) if str(f.type).startswith("int")
)
_BOOL_ARGS = frozenset(f.name for f in dataclasses.fields(TrainingSpec) if str(f.type).startswith("bool"))
IF_JOB_EXISTS = ("reattach", "new", "fail")
#: The job's own lines (``[algo-k]``-prefixed when several hosts log) come through a logger of their own,
#: so the task log's source filter separates them from the operator's.
JOB_LOG = logging.getLogger("sagemaker.training_job")


class PyTorchTrainOperator(BaseOperator):
    """Train a PyTorch script on SageMaker (or the local runtime) and wait for it, streaming its logs.

    Takes the same keyword arguments as ``sagemaker.pytorch.PyTorch`` (``entry_point``, ``source_dir``,
    ``hyperparameters``, ``instance_type``, ``framework_version`` …) plus ``inputs`` and ``job_name`` as
    in ``fit``; all of them are templated and shown as one JSON object (``estimator``) in the UI.

    Jinja renders templates to strings: give the DAG ``render_template_as_native_obj=True`` so that
    templated hyperparameters stay numbers, as the SDK would send them.

    Job names are deterministic: try 1 of a task instance (dag, task, run, map index) uses one name, try
    ``n`` the same name with ``-t<n>``; pass ``job_name`` to choose the base yourself. A try never starts a
    second job for itself (run again, e.g. after being killed mid-wait, it re-attaches to its own job), and
    ``if_job_exists`` says what a retry or a clear does about an earlier try's job:

    * ``"reattach"`` (default): re-attach to the latest one when it is InProgress, Stopping or Completed
      (clearing a Completed task returns that job's result without training again); when it Failed or was
      Stopped, train again as a new job (so a retry after fixing code or data retrains);
    * ``"new"``: always train again (a new job per try);
    * ``"fail"``: fail without retrying while an earlier try's job exists.

    ``on_kill`` stops the job.

    ``deferrable=True`` (default: Airflow's ``[operators] default_deferrable``) submits, then waits in the
    triggerer holding no worker slot; on resume the task log gets every host's log lines since the last
    position (at most ``resume_log_lines`` per host), and a user killing the deferred task stops the job
    (Airflow >= 3.3). With ``wait=False`` there is nothing to wait for: the task ends once the job is
    created, deferrable or not.

    Bad input and requests SageMaker refuses as invalid fail the task without retrying; a Failed or
    Stopped job is an ordinary failure, so a retry can train again.

    :param aws_conn_id: the AWS connection: AWS itself, or the local runtime (see the README).
    :param region_name: overrides the connection's region.
    :param wait: wait for the job to end (the SDK's ``fit(wait=...)``).
    :param logs: stream the job's CloudWatch logs into the task log while waiting (``True``/``"All"``),
        or not (``False``/``"None"``), as ``fit(logs=...)``.
    :param poll_interval: seconds between status checks.
    :param max_ingestion_time: give up waiting after this many seconds (the job keeps running); None (the
        default) waits as long as the job runs.
    :param deferrable: wait in the triggerer instead of a worker slot.
    :param resume_log_lines: at most this many lines of each host's log are printed when a deferred task
        resumes (None: all of them).
    :param spec: a :class:`TrainingSpec` (or dict) to start from; keyword arguments override it.

    Returns (XCom) a compact, JSON-safe summary: job name, ARN, status, ``S3ModelArtifacts``, billable
    seconds, final metrics, image and the hyperparameters as sent (secrets masked).
    """

    template_fields = ("estimator", "aws_conn_id", "region_name")
    template_fields_renderers = {"estimator": "json"}
    operator_extra_links = ExtraLinks(TrainingJobLink(), TrainingLogsLink(),
                                      instance_type=lambda op: op.estimator.get("instance_type"))
    ui_color = "#f5a34b"

    def __init__(
        self,
        *,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        wait: bool = True,
        logs: bool | str = True,
        poll_interval: float = 10.0,
        max_ingestion_time: float | None = None,
        spec: TrainingSpec | Mapping[str, Any] | None = None,
        if_job_exists: str = "reattach",
        deferrable: bool | None = None,
        resume_log_lines: int | None = 1000,
        **kwargs: Any,
    ) -> None:
        from airflow_sm_pytorch.operators.common import check_limit, default_deferrable

        if if_job_exists not in IF_JOB_EXISTS:
            from airflow_sm_pytorch.exceptions import SpecError

            raise SpecError("if_job_exists", if_job_exists, f"use one of {list(IF_JOB_EXISTS)}")
        estimator = {name: kwargs.pop(name) for name in list(kwargs) if name in ESTIMATOR_ARGS}
        super().__init__(**kwargs)
        base = spec.to_dict() if isinstance(spec, TrainingSpec) else dict(spec or {})
        self.estimator: dict[str, Any] = {**base, **estimator}
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.wait = wait
        self.logs = logs not in (False, None, "None")
        self.poll_interval = poll_interval
        self.max_ingestion_time = check_limit("max_ingestion_time", max_ingestion_time)
        self.if_job_exists = if_job_exists
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.resume_log_lines = resume_log_lines
        if self.deferrable and not wait:
            self.log.warning("%s: deferrable=True with wait=False: the task ends once the job is created "
                             "(nothing is deferred)", self.task_id)
        self.job_name: str | None = None
        self._description: dict[str, Any] | None = None

    @cached_property
    def hook(self) -> SageMakerPyTorchHook:
        from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook

        return SageMakerPyTorchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    def build_spec(self) -> TrainingSpec:
        """The rendered estimator arguments as a spec (Jinja renders numbers to strings; undo that)."""
        return TrainingSpec.from_dict({k: _native(k, v) for k, v in self.estimator.items()})

    @fail_fast
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_sm_pytorch.builders.naming import task_job_name

        spec = self.build_spec()
        hidden = self._hide_secrets(spec)
        ti = context["ti"]
        base = spec.job_name or task_job_name(
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=getattr(ti, "map_index", -1),
            base_job_name=spec.base_job_name,
        )
        self.job_name = self._job_for_this_try(base, int(getattr(ti, "try_number", 1) or 1))
        spec = dataclasses.replace(spec, tags=merge_tags(spec.tags, task_tags(ti), self.log.warning))
        plan = self.hook.plan_training(spec, job_name=self.job_name)
        # collapsed in the task log (Airflow's log groups); secrets masked
        self.log.info("::group::CreateTrainingJob request (%s)", self.job_name)
        self.log.info("%s", json.dumps(redact(plan.request), indent=2))
        self.log.info("::endgroup::")
        description, created = self.hook.submit_training(plan)
        self.log.info("%s training job %s", "Created" if created else "Attached to", self.job_name)
        store_links(context, self.hook, training_job=self.job_name, log=self.log, operator=self)
        self._description = description
        if not self.wait:
            return summarize(description, created=created)
        job_log = self._job_log(hidden)
        if self.deferrable:
            if job_log is not None:
                job_log.poll()
            defer(self, "TrainingJob", self.job_name, limit=self.max_ingestion_time, stop_on_kill=True,
                  carry={"job_name": self.job_name, "created": created,
                         "log_tokens": job_log.tokens if job_log else None})
        description = self.hook.wait_for_training_job(
            self.job_name,
            logs=self.logs,
            poll_interval=self.poll_interval,
            timeout=self.max_ingestion_time,
            job_log=job_log,
        )
        self._description = description
        return summarize(description, created=created)

    @fail_fast
    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """The deferred task resumes: print the log since the last position, end as the job ended."""
        from airflow_sm_pytorch.hooks.logs import JobLog
        from airflow_sm_pytorch.hooks.waiting import failure

        carry = event.get("carry") or {}
        self.job_name = job_name = carry.get("job_name") or event["name"]
        created = carry.get("created")
        store_links(context, self.hook, training_job=job_name, operator=self)  # Airflow re-pushes links when a task resumes
        job_log = self._job_log(self._hide_secrets(self.build_spec()), tokens=carry.get("log_tokens"))
        description = self.hook.describe_patiently("TrainingJob", job_name, poll_interval=self.poll_interval)
        if job_log is not None:
            job_log.tail(self.resume_log_lines)
        self.log.info("Training job %s: %s", job_name, event.get("message"))

        def failed() -> Exception:
            err = failure("TrainingJob", job_name, description or {"TrainingJobStatus": "Failed"})
            return (job_log or JobLog(self.hook, job_name, str)).annotated(err)

        raise_for_event(event, failed)
        if description is None:
            raise RequestRejected("DescribeTrainingJob", "ResourceNotFound", f"training job {job_name} no "
                                  "longer exists")
        self._description = description
        return summarize(description, created=created)

    def _hide_secrets(self, spec: TrainingSpec) -> list[str]:
        from airflow.sdk.log import mask_secret

        hidden = list(secrets(spec.to_dict()))
        for secret in hidden:
            mask_secret(secret)
        return hidden

    def _job_log(self, hidden: list[str], tokens: dict[str, str | None] | None = None) -> JobLog | None:
        if not self.logs or not self.job_name:
            return None
        from airflow_sm_pytorch.hooks.logs import JobLog

        return JobLog(self.hook, self.job_name, JOB_LOG.info, mask=hidden, tokens=tokens)

    def _job_for_this_try(self, base: str, try_number: int) -> str:
        """The job this try attaches to or creates (see ``if_job_exists``); one Describe per earlier try."""
        own = try_job_name(base, try_number)
        if self.hook.describe("TrainingJob", own) is not None:
            return own  # this very try made it (a retry of the same try, killed mid-wait): attach
        earlier = [(n, d) for n in range(try_number - 1, 0, -1)
                   if (d := self.hook.describe("TrainingJob", try_job_name(base, n))) is not None]
        if not earlier:
            return own
        name, latest = try_job_name(base, earlier[0][0]), earlier[0][1]
        status = latest["TrainingJobStatus"]
        if self.if_job_exists == "fail":
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(
                f"training job {name} of an earlier try exists ({status}) and if_job_exists='fail': delete "
                "it, pass another job_name, or use if_job_exists='reattach' or 'new'")
        if self.if_job_exists == "reattach" and status in ("InProgress", "Stopping", "Completed"):
            self.log.info("Try %d re-attaches to %s (%s), started by try %d", try_number, name, status,
                          earlier[0][0])
            return name
        self.log.info("Try %d starts a new job %s (the latest, %s, is %s)", try_number, own, name, status)
        return own

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the job's input channels in, its model artifacts out (as the Amazon provider's)."""
        from airflow_sm_pytorch.lineage import training_lineage

        return training_lineage(self._description)

    def on_kill(self) -> None:
        if self.job_name:
            self.hook.stop_training_job(self.job_name)


def try_job_name(base: str, try_number: int) -> str:
    """Try 1 uses ``base``; try ``n`` uses ``base-t<n>`` (trimmed to SageMaker's 63 characters)."""
    if try_number <= 1:
        return base
    suffix = f"-t{try_number}"
    return base[:63 - len(suffix)].rstrip("-") + suffix


def summarize(description: Mapping[str, Any], *, created: bool | None = None) -> dict[str, Any]:
    """The XCom: small, JSON-safe, secrets masked."""
    out: dict[str, Any] = {
        "TrainingJobName": description["TrainingJobName"],
        "TrainingJobArn": description.get("TrainingJobArn"),
        "TrainingJobStatus": description.get("TrainingJobStatus"),
        "SecondaryStatus": description.get("SecondaryStatus"),
        "S3ModelArtifacts": (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
        "BillableTimeInSeconds": description.get("BillableTimeInSeconds"),
        "TrainingTimeInSeconds": description.get("TrainingTimeInSeconds"),
        "FinalMetrics": {m["MetricName"]: m["Value"] for m in description.get("FinalMetricDataList") or []},
        "TrainingImage": (description.get("AlgorithmSpecification") or {}).get("TrainingImage"),
        "HyperParameters": redact(dict(description.get("HyperParameters") or {})),
    }
    if description.get("FailureReason"):
        out["FailureReason"] = description["FailureReason"]
    if created is not None:
        out["Created"] = created
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in out.items()}


def _native(name: str, value: Any) -> Any:
    if isinstance(value, str):
        if name in _INT_ARGS and value.strip().lstrip("-").isdigit():
            return int(value)
        if name in _BOOL_ARGS and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
    return value
