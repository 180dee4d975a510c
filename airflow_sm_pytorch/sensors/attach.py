"""``AttachSensor``: the SDK's ``PyTorch.attach(training_job_name)`` as an Airflow sensor.

Waits for a training job started elsewhere (another DAG, a notebook, the console) in poke, reschedule
or deferrable mode, streaming its log into the task log, and returns what the training operator
returns plus what ``attach`` recovers, so ``DeployOperator(training_job=<its XCom>)`` deploys it.

Cheap to import (no boto3): the hook is made on first use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.sensor import BaseSensorOperator, PokeReturnValue

from airflow_sm_pytorch.exceptions import RequestRejected, SpecError
from airflow_sm_pytorch.links import TrainingJobLink, TrainingLogsLink, store_links
from airflow_sm_pytorch.operators.common import defer, fail_fast, raise_for_event
from airflow_sm_pytorch.operators.train import JOB_LOG, summarize

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_sm_pytorch.hooks.logs import JobLog
    from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook

#: With no ``timeout`` the sensor waits as long as SageMaker lets a job run: MaxRuntimeInSeconds and
#: MaxWaitTimeInSeconds are at most 28 days each (a spot job waits, then runs).
LONGEST_JOB = timedelta(days=56)
_POSITION_PREFIX = "sm_pytorch_log_position_"


class AttachSensor(BaseSensorOperator):
    """Wait for training job ``training_job_name`` to end, streaming its log; succeed when it Completed.

    Returns (XCom) the training operator's summary (job name, ARN, status, ``S3ModelArtifacts``, metrics,
    image …) with what ``PyTorch.attach`` recovers: ``FrameworkVersion`` and ``PyVersion`` (from the
    image), ``EntryPoint``, ``SourceDir`` and the JSON-decoded ``HyperParameters`` (secrets masked).

    A Failed or Stopped job fails the sensor with its FailureReason and the last log lines; an unknown
    job name or an empty one fails it at once, without retries.

    Modes: ``poke`` (holds a worker slot), ``reschedule`` (frees it between pokes; the log position is kept
    in an Airflow Variable for the try, deleted when the try ends), ``deferrable=True`` (waits in the
    triggerer; on resume the log since the last position is printed, at most ``resume_log_lines`` per
    host). In every mode the log continues where it stopped: no line lost, none repeated. Killing the
    sensor never stops the job (it did not start it).

    :param timeout: seconds (or a ``timedelta``) after which the sensor gives up; default
        ``LONGEST_JOB``, the longest a SageMaker job can take — no shorter hidden default.
    """

    template_fields: Sequence[str] = ("training_job_name", "aws_conn_id", "region_name")
    operator_extra_links = (TrainingJobLink(), TrainingLogsLink())  # the connection decides: stored on AWS only
    ui_color = "#f5a34b"

    def __init__(self, *, training_job_name: str, aws_conn_id: str | None = "aws_default",
                 region_name: str | None = None, logs: bool = True, deferrable: bool | None = None,
                 poke_interval: float | timedelta = 30, timeout: float | timedelta | None = None,
                 resume_log_lines: int | None = 1000, **kwargs: Any) -> None:
        from airflow_sm_pytorch.operators.common import default_deferrable

        super().__init__(poke_interval=poke_interval, timeout=LONGEST_JOB if timeout is None else timeout,
                         **kwargs)
        self.training_job_name = training_job_name
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.logs = logs not in (False, None, "None")
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.resume_log_lines = resume_log_lines
        self._tokens: dict[str, str | None] = {}

    @cached_property
    def hook(self) -> SageMakerPyTorchHook:
        from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook

        return SageMakerPyTorchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    @property
    def poll_interval(self) -> float:
        return float(self.poke_interval)

    @property
    def job_name(self) -> str:
        name = str(self.training_job_name or "").strip()
        if not name:
            raise SpecError("training_job_name", self.training_job_name, "give the name of an existing "
                            "training job (a template that renders to it)", problem="is empty")
        return name

    @fail_fast
    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        name = self.job_name
        self._describe(name)
        store_links(context, self.hook, training_job=name, log=self.log, operator=self)
        job_log = self._job_log(name, {})
        if job_log is not None:
            job_log.poll()
        defer(self, "TrainingJob", name, limit=float(self.timeout), stop_on_kill=False,
              carry={"log_tokens": job_log.tokens if job_log else None})
        return None  # not reached: defer raises

    @fail_fast
    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:

        name = self.job_name
        store_links(context, self.hook, training_job=name, operator=self)
        job_log = self._job_log(name, (event.get("carry") or {}).get("log_tokens") or {})
        description = self._describe(name, patiently=True)
        if job_log is not None:
            job_log.tail(self.resume_log_lines)
        raise_for_event(event, lambda: self._failure(name, description, job_log))
        return self._result(description)

    def poke(self, context: Context) -> PokeReturnValue | bool:
        from airflow_sm_pytorch.hooks.errors import is_transient
        from airflow_sm_pytorch.hooks.resources import TRAINING_JOB

        name = self.job_name
        try:
            description = self._describe(name)
        except RequestRejected as err:
            if not is_transient(err):
                raise
            self.log.warning("DescribeTrainingJob %s failed (%s); trying again at the next poke", name, err)
            return False
        # a rescheduled sensor's XComs are cleared at every poke: store the links each time, log them once
        store_links(context, self.hook, training_job=name, operator=self,
                    log=self.log if not getattr(self, "_links_logged", False) else None)
        self._links_logged = True
        job_log = self._job_log(name, self._load_position(context))
        if job_log is not None:
            job_log.poll()
            self._save_position(context, job_log.tokens)
        self.log.info("Training job %s: %s / %s", name, description["TrainingJobStatus"],
                      description.get("SecondaryStatus"))
        outcome = TRAINING_JOB.outcome(description)
        if outcome == "retry":
            return False
        self._forget_position(context)
        if outcome == "failure":
            raise self._failure(name, description, job_log)
        return PokeReturnValue(is_done=True, xcom_value=self._result(description))

    # ---------------------------------------------------------------- helpers
    def _describe(self, name: str, *, patiently: bool = False) -> dict[str, Any]:
        description = (self.hook.describe_patiently("TrainingJob", name, poll_interval=self.poll_interval)
                       if patiently else self.hook.describe("TrainingJob", name))
        if description is None:
            raise RequestRejected("DescribeTrainingJob", "ResourceNotFound",
                                  f"training job {name} does not exist in {self.hook.region} on "
                                  f"{'the local runtime' if self.hook.is_local else 'SageMaker'}: check the "
                                  "name, the connection and the region")
        return description

    def _failure(self, name: str, description: dict[str, Any], job_log: JobLog | None) -> Exception:
        """The job's FailureReason with the log lines around the error."""
        from airflow_sm_pytorch.hooks.logs import JobLog
        from airflow_sm_pytorch.hooks.waiting import failure

        return (job_log or JobLog(self.hook, name, str)).annotated(failure("TrainingJob", name, description))

    def _job_log(self, name: str, tokens: dict[str, str | None]) -> JobLog | None:
        if not self.logs:
            return None
        from airflow_sm_pytorch.hooks.logs import JobLog

        return JobLog(self.hook, name, JOB_LOG.info, tokens=tokens)

    def _result(self, description: dict[str, Any]) -> dict[str, Any]:
        from airflow_sm_pytorch._redact import redact
        from airflow_sm_pytorch.builders.deploy import attach_params

        self._description = description
        attached = attach_params(description)
        attached["HyperParameters"] = redact(attached["HyperParameters"])
        return {**summarize(description), **attached}

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the attached job's input channels in, its model artifacts out."""
        from airflow_sm_pytorch.lineage import training_lineage

        return training_lineage(getattr(self, "_description", None))

    # The log position across pokes: in memory for poke mode; a rescheduled sensor is a new process each
    # poke and Airflow clears its XComs on every run, so the position lives in a Variable for the try.
    def _position_key(self, context: Context) -> str:
        ti = context["ti"]
        ident = f"{ti.dag_id}/{ti.task_id}/{ti.run_id}/{getattr(ti, 'map_index', -1)}/{ti.try_number}"
        return _POSITION_PREFIX + hashlib.sha256(ident.encode()).hexdigest()[:24]

    def _load_position(self, context: Context) -> dict[str, str | None]:
        if self.mode != "reschedule":
            return self._tokens
        from airflow.sdk import Variable

        raw = Variable.get(self._position_key(context), default=None)
        return dict(json.loads(raw)) if raw else {}

    def _save_position(self, context: Context, tokens: dict[str, str | None]) -> None:
        if self.mode != "reschedule":
            self._tokens = tokens
            return
        from airflow.sdk import Variable

        Variable.set(self._position_key(context), json.dumps(tokens),
                     description=f"log position of {self.task_id} following {self.training_job_name}")

    def _forget_position(self, context: Context) -> None:
        if self.mode == "reschedule":
            from airflow.sdk import Variable

            Variable.delete(self._position_key(context))

