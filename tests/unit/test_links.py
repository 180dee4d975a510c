"""Console links: the right URL per partition, none where there is no console, registered with Airflow."""

import airflow_sm_pytorch
from airflow_sm_pytorch.links import TrainingJobLink, TrainingLogsLink, console_urls
from airflow_sm_pytorch.operators.train import PyTorchTrainOperator


def test_console_urls_per_partition():
    urls = console_urls("us-west-2", "aws", "job-1")
    assert urls[TrainingJobLink.key] == \
        "https://us-west-2.console.aws.amazon.com/sagemaker/home?region=us-west-2#/jobs/job-1"
    assert "group=/aws/sagemaker/TrainingJobs;prefix=job-1" in urls[TrainingLogsLink.key]
    assert console_urls("cn-north-1", "aws-cn", "j")[TrainingJobLink.key].startswith(
        "https://cn-north-1.console.amazonaws.cn/sagemaker/")
    assert "amazonaws-us-gov.com" in console_urls("us-gov-west-1", "aws-us-gov", "j")[TrainingJobLink.key]
    assert console_urls("us-iso-east-1", "aws-iso", "j") == {}


def test_links_are_on_the_operator_and_registered_with_the_provider():
    names = {link.name for link in PyTorchTrainOperator.operator_extra_links}
    assert names == {"SageMaker Training Job", "Training Job Logs"}
    registered = airflow_sm_pytorch.get_provider_info()["extra-links"]
    assert registered == ["airflow_sm_pytorch.links.TrainingJobLink", "airflow_sm_pytorch.links.TrainingLogsLink"]
