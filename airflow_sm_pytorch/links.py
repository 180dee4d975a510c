"""Console links on the task in Airflow's UI: the training job and its CloudWatch logs.

The operator stores the URLs in XCom when it knows the job (``persist``); the links read them back.
On the local runtime there is no console, so no link is stored and the UI shows none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import Context

_DOMAINS = {"aws": "aws.amazon.com", "aws-cn": "amazonaws.cn", "aws-us-gov": "amazonaws-us-gov.com"}


def console_urls(region: str, partition: str, job_name: str) -> dict[str, str]:
    """The SageMaker console page of a training job and its log streams; empty where there is no console."""
    domain = _DOMAINS.get(partition)
    if domain is None:
        return {}
    base = f"https://{region}.console.{domain}"
    return {
        TrainingJobLink.key: f"{base}/sagemaker/home?region={region}#/jobs/{job_name}",
        TrainingLogsLink.key: f"{base}/cloudwatch/home?region={region}#logStream:"
        f"group=/aws/sagemaker/TrainingJobs;prefix={job_name};streamFilter=typeLogStreamPrefix",
    }


class _UrlLink(BaseOperatorLink):
    name: ClassVar[str]
    key: ClassVar[str]

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        try:
            return XCom.get_value(key=self.key, ti_key=ti_key) or ""
        except Exception:  # noqa: BLE001 - a missing link must never break the UI
            return ""


class TrainingJobLink(_UrlLink):
    name = "SageMaker Training Job"
    key = "sm_pytorch_training_job_url"


class TrainingLogsLink(_UrlLink):
    name = "Training Job Logs"
    key = "sm_pytorch_training_logs_url"


def persist(context: Context, urls: dict[str, str]) -> None:
    for key, url in urls.items():
        context["ti"].xcom_push(key=key, value=url)
