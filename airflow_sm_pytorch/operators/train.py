"""``PyTorchTrainOperator``: the SageMaker SDK's ``PyTorch(...).fit(...)`` as an Airflow task.

Importing this module is cheap: no boto3, botocore, torch, omegaconf or numpy (the hook, and with it
boto3, is created on first use inside ``execute``). A test pins this.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_sm_pytorch._redact import redact, secrets
from airflow_sm_pytorch.links import TrainingJobLink, TrainingLogsLink
from airflow_sm_pytorch.operators.tagging import merge_tags, task_tags
from airflow_sm_pytorch.specs import TrainingSpec

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook

#: The estimator's keyword arguments (plus ``inputs`` and ``job_name``) the operator accepts.
ESTIMATOR_ARGS = frozenset(f.name for f in dataclasses.fields(TrainingSpec))
_INT_ARGS = frozenset(
    f.name for f in dataclasses.fields(TrainingSpec) if str(f.type).startswith("int")
)
_BOOL_ARGS = frozenset(f.name for f in dataclasses.fields(TrainingSpec) if str(f.type).startswith("bool"))


class PyTorchTrainOperator(BaseOperator):
    """Train a PyTorch script on SageMaker (or the local runtime) and wait for it, streaming its logs.

    Takes the same keyword arguments as ``sagemaker.pytorch.PyTorch`` (``entry_point``, ``source_dir``,
    ``hyperparameters``, ``instance_type``, ``framework_version`` …) plus ``inputs`` and ``job_name`` as
    in ``fit``; all of them are templated and shown as one JSON object (``estimator``) in the UI.

    Jinja renders templates to strings: give the DAG ``render_template_as_native_obj=True`` so that
    templated hyperparameters stay numbers, as the SDK would send them.

    The job name is deterministic for the task instance (dag, task, run, map index; not the try), so a
    retried or cleared task re-attaches to its job instead of starting a second one; pass ``job_name``
    to choose it yourself. ``on_kill`` stops the job.

    :param aws_conn_id: the AWS connection: AWS itself, or the local runtime (see the README).
    :param region_name: overrides the connection's region.
    :param wait: wait for the job to end (the SDK's ``fit(wait=...)``).
    :param logs: stream the job's CloudWatch logs into the task log while waiting (``True``/``"All"``),
        or not (``False``/``"None"``), as ``fit(logs=...)``.
    :param poll_interval: seconds between status checks.
    :param max_ingestion_time: give up waiting after this many seconds (the job keeps running).
    :param spec: a :class:`TrainingSpec` (or dict) to start from; keyword arguments override it.

    Returns (XCom) a compact, JSON-safe summary: job name, ARN, status, ``S3ModelArtifacts``, billable
    seconds, final metrics, image and the hyperparameters as sent (secrets masked).
    """

    template_fields = ("estimator", "aws_conn_id", "region_name")
    template_fields_renderers = {"estimator": "json"}
    operator_extra_links = (TrainingJobLink(), TrainingLogsLink())
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
        **kwargs: Any,
    ) -> None:
        estimator = {name: kwargs.pop(name) for name in list(kwargs) if name in ESTIMATOR_ARGS}
        super().__init__(**kwargs)
        base = spec.to_dict() if isinstance(spec, TrainingSpec) else dict(spec or {})
        self.estimator: dict[str, Any] = {**base, **estimator}
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.wait = wait
        self.logs = logs not in (False, None, "None")
        self.poll_interval = poll_interval
        self.max_ingestion_time = max_ingestion_time
        self.job_name: str | None = None

    @cached_property
    def hook(self) -> SageMakerPyTorchHook:
        from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook

        return SageMakerPyTorchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    def build_spec(self) -> TrainingSpec:
        """The rendered estimator arguments as a spec (Jinja renders numbers to strings; undo that)."""
        return TrainingSpec.from_dict({k: _native(k, v) for k, v in self.estimator.items()})

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.log import mask_secret

        from airflow_sm_pytorch.builders.naming import task_job_name

        spec = self.build_spec()
        hidden = list(secrets(spec.to_dict()))
        for secret in hidden:
            mask_secret(secret)
        ti = context["ti"]
        self.job_name = spec.job_name or task_job_name(
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=getattr(ti, "map_index", -1),
            base_job_name=spec.base_job_name,
        )
        spec = dataclasses.replace(spec, tags=merge_tags(spec.tags, task_tags(ti), self.log.warning))
        plan = self.hook.plan_training(spec, job_name=self.job_name)
        self.log.info("CreateTrainingJob request:\n%s", json.dumps(redact(plan.request), indent=2))
        description, created = self.hook.submit_training(plan)
        self.log.info("%s training job %s", "Created" if created else "Attached to", self.job_name)
        self._persist_links(context)
        if self.wait:
            description = self.hook.wait_for_training_job(
                self.job_name,
                logs=self.logs,
                poll_interval=self.poll_interval,
                timeout=self.max_ingestion_time,
                log_sink=self.log.info,
                mask=hidden,
            )
        return summarize(description, created=created)

    def _persist_links(self, context: Context) -> None:
        from airflow_sm_pytorch.builders.images import partition_for
        from airflow_sm_pytorch.links import console_urls, persist

        if self.hook.is_local or not self.do_xcom_push:
            return
        urls = console_urls(self.hook.region, partition_for(self.hook.region), self.job_name or "")
        for url in urls.values():
            self.log.info("Console: %s", url)
        persist(context, urls)

    def on_kill(self) -> None:
        if self.job_name:
            self.hook.stop_training_job(self.job_name)


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
