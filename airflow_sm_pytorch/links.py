"""Console links on the task in Airflow's UI: training job, its logs, model, endpoint, endpoint logs.

How Airflow 3.3 shows them, and why this module is built the way it is:

* The UI's "Extra Links" section lists every link *name* the serialized task declares (the DAG processor
  serializes ``operator_extra_links`` at parse time); the REST endpoint
  ``/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links`` answers ``null`` for a link
  whose XCom is missing or empty, and the UI draws no button for ``null`` but still draws the section's
  heading. So a task that declares links and runs on the local runtime shows an empty section: only a
  task that declares *no* link shows none. :class:`ExtraLinks` declares none when the operator's
  instance type is, at parse time, literally one of the local runtime's (``local``, ``local_gpu``).
* On the worker, when the task ends (success, failure, deferral, reschedule), the task runner calls
  ``get_link`` of every link in ``task.operator_extra_links`` and pushes the result to the link's
  ``xcom_key``, empty or not. :func:`store_links` therefore narrows the running operator's links to those
  it stored (none on the local runtime): no empty XCom. Our links' ``xcom_key`` is the key the URL is
  stored under, so that push rewrites the same row with the same value: each URL is stored once.
* The URLs are formatted and pushed at execute time, so nothing needs AWS to draw the links.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import Context

#: console domain per partition (the Amazon provider's ``BaseAwsLink.get_aws_domain``); others have none
_DOMAINS = {"aws": "aws.amazon.com", "aws-cn": "amazonaws.cn", "aws-us-gov": "amazonaws-us-gov.com"}
#: the local runtime's instance types: a task that names one literally runs where there is no console
LOCAL_INSTANCE_TYPES = ("local", "local_gpu")
#: where, on the running operator, the URLs that :func:`store_links` stored are kept
_URLS_ATTR = "_sm_pytorch_link_urls"


class _UrlLink(BaseOperatorLink):
    """A link whose whole URL is stored in XCom under ``key`` (also its ``xcom_key``)."""

    name: ClassVar[str]
    key: ClassVar[str]

    @property
    def xcom_key(self) -> str:
        return self.key

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        stored = vars(operator).get(_URLS_ATTR) if hasattr(operator, "__dict__") else None
        if stored and stored.get(self.key):
            return stored[self.key]  # stored by this process: no XCom round trip
        from airflow.sdk.execution_time.xcom import XCom

        try:
            return XCom.get_value(key=self.key, ti_key=ti_key) or ""
        except Exception:  # noqa: BLE001 - a missing link must never break the task or the UI
            return ""


class TrainingJobLink(_UrlLink):
    name = "SageMaker Training Job"
    key = "sm_pytorch_training_job_url"


class TrainingLogsLink(_UrlLink):
    name = "Training Job Logs"
    key = "sm_pytorch_training_logs_url"


class ModelLink(_UrlLink):
    name = "SageMaker Model"
    key = "sm_pytorch_model_url"


class EndpointLink(_UrlLink):
    name = "SageMaker Endpoint"
    key = "sm_pytorch_endpoint_url"


class EndpointLogsLink(_UrlLink):
    name = "Endpoint Logs"
    key = "sm_pytorch_endpoint_logs_url"


#: every link class, for the provider's ``extra-links``
LINK_CLASSES: tuple[type[_UrlLink], ...] = (TrainingJobLink, TrainingLogsLink, ModelLink, EndpointLink,
                                            EndpointLogsLink)


def _logs_fragment(group: str, stream_prefix: str | None = None) -> str:
    """CloudWatch's ``#logsV2:`` fragment: the console wants ``/``, ``?`` and ``=`` encoded its own way."""

    def enc(text: str) -> str:
        return quote(quote(text, safe=""), safe="").replace("%", "$")

    fragment = f"logsV2:log-groups/log-group/{enc(group)}"
    if stream_prefix:
        fragment += f"$3FlogStreamNameFilter$3D{enc(stream_prefix)}"
    return fragment


def resource_urls(region: str, partition: str | None = None, *, training_job: str | None = None,
                  model: str | None = None, endpoint: str | None = None) -> dict[str, str]:
    """Console URLs (by link key) of the named resources; empty where the partition has no console.

    ``partition`` defaults to the region's (``cn-*`` is ``aws-cn``, ``us-gov-*`` is ``aws-us-gov``).
    """
    if partition is None:
        from airflow_sm_pytorch.builders.images import partition_for

        partition = partition_for(region)
    domain = _DOMAINS.get(partition)
    if domain is None or not region:
        return {}
    base = f"https://{region}.console.{domain}"
    sagemaker = f"{base}/sagemaker/home?region={region}#"
    cloudwatch = f"{base}/cloudwatch/home?region={region}#"
    urls: dict[str, str] = {}
    if training_job:
        urls[TrainingJobLink.key] = f"{sagemaker}/jobs/{training_job}"
        # the job's streams are <job>/algo-N-…: the trailing slash keeps <job>-t2's streams out
        urls[TrainingLogsLink.key] = cloudwatch + _logs_fragment("/aws/sagemaker/TrainingJobs",
                                                                 f"{training_job}/")
    if model:
        urls[ModelLink.key] = f"{sagemaker}/models/{model}"
    if endpoint:
        urls[EndpointLink.key] = f"{sagemaker}/endpoints/{endpoint}"
        urls[EndpointLogsLink.key] = cloudwatch + _logs_fragment(f"/aws/sagemaker/Endpoints/{endpoint}")
    return urls


def console_urls(region: str, partition: str, job_name: str) -> dict[str, str]:
    """The SageMaker console page of a training job and its log streams; empty where there is no console."""
    return resource_urls(region, partition, training_job=job_name)


def persist(context: Context, urls: Mapping[str, str]) -> None:
    """Push ``urls`` (link key -> URL) to the task's XCom."""
    for key, url in urls.items():
        context["ti"].xcom_push(key=key, value=url)


def _where(where: Any) -> tuple[str, str | None, bool]:
    """(region, partition or None, is_local) from a hook, a ``(region, partition)`` pair or a region."""
    if isinstance(where, str):
        return where, None, False
    if isinstance(where, tuple):
        region, partition = where
        return region, partition, False
    if getattr(where, "is_local", False):
        return "", None, True  # no console: the region is not needed (nor read)
    return where.region, None, False


def store_links(context: Context, where: Any, *, training_job: str | None = None, model: str | None = None,
                endpoint: str | None = None, is_local: bool | None = None, log: Any = None,
                operator: Any = None) -> dict[str, str]:
    """Store the console URLs of the task's resources once, and show only those links.

    ``where``: the hook (its ``region`` and ``is_local``), a ``(region, partition)`` pair, or a region.
    Call it in ``execute`` as soon as the resources are named (after the create call) with ``log=self.log``
    (each URL is logged once, as ``Console: <url>``), and again with no ``log`` wherever a task resumes
    (``execute_complete``; each poke of a sensor in reschedule mode, whose XComs Airflow clears). It
    needs no AWS call. On the local runtime (or with ``do_xcom_push=False``) it stores nothing and the
    task pushes no empty link XCom. Only the links the operator declares are stored. Returns what it
    stored.
    """
    operator = context["task"] if operator is None else operator
    region, partition, local = _where(where)
    if is_local is not None:
        local = is_local
    declared = {link.key: link for link in type(operator).operator_extra_links if isinstance(link, _UrlLink)}
    urls: dict[str, str] = {}
    if not local and getattr(operator, "do_xcom_push", True):
        urls = {key: url for key, url in resource_urls(region, partition, training_job=training_job,
                                                      model=model, endpoint=endpoint).items()
                if key in declared}
    # the running operator's own links: the task runner pushes get_link() of exactly these when it ends
    vars(operator)["operator_extra_links"] = tuple(declared[key] for key in urls)
    vars(operator)[_URLS_ATTR] = urls
    persist(context, urls)
    if log is not None:
        for url in urls.values():
            log.info("Console: %s", url)
    return urls


class ExtraLinks:
    """``operator_extra_links`` that an operator declares only where they can lead somewhere.

    Use as ``operator_extra_links = ExtraLinks(TrainingJobLink(), TrainingLogsLink(),
    instance_type=lambda op: op.estimator.get("instance_type"))``. Read on the class (``partial()``,
    ``expand()``) it is every link; read on an operator whose instance type is, when the DAG is parsed,
    literally a local runtime's type (not a template), it is none, so that Airflow's UI shows no "Extra
    Links" section for it. :func:`store_links` replaces it on the running operator with the links it stored.
    """

    def __init__(self, *links: BaseOperatorLink, instance_type: Callable[[Any], Any] | None = None) -> None:
        self.links = links
        self.instance_type = instance_type

    def __get__(self, operator: Any, owner: type | None = None) -> tuple[BaseOperatorLink, ...]:
        if operator is None or self.instance_type is None:
            return self.links
        try:
            instance_type = self.instance_type(operator)
        except Exception:  # noqa: BLE001 - not known (yet): declare the links
            return self.links
        return () if isinstance(instance_type, str) and instance_type in LOCAL_INSTANCE_TYPES else self.links

    def __iter__(self):  # read through the class's __dict__ (e.g. by tooling): behave as the links
        return iter(self.links)

    def __len__(self) -> int:
        return len(self.links)
