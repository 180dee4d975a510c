"""Console links: the right URL per partition, stored once, none where there is no console, registered."""

from types import SimpleNamespace

import pytest
from airflow.sdk import BaseOperator

import airflow_sm_pytorch
from airflow_sm_pytorch import links
from airflow_sm_pytorch.links import (
    EndpointLink,
    EndpointLogsLink,
    ExtraLinks,
    ModelLink,
    TrainingJobLink,
    TrainingLogsLink,
    console_urls,
    resource_urls,
    store_links,
)
from airflow_sm_pytorch.operators.train import PyTorchTrainOperator


def test_console_urls_per_partition():
    urls = console_urls("us-west-2", "aws", "job-1")
    assert urls[TrainingJobLink.key] == \
        "https://us-west-2.console.aws.amazon.com/sagemaker/home?region=us-west-2#/jobs/job-1"
    assert urls[TrainingLogsLink.key] == (
        "https://us-west-2.console.aws.amazon.com/cloudwatch/home?region=us-west-2#logsV2:log-groups/log-group/"
        "$252Faws$252Fsagemaker$252FTrainingJobs$3FlogStreamNameFilter$3Djob-1$252F")
    assert console_urls("cn-north-1", "aws-cn", "j")[TrainingJobLink.key].startswith(
        "https://cn-north-1.console.amazonaws.cn/sagemaker/")
    assert "amazonaws-us-gov.com" in console_urls("us-gov-west-1", "aws-us-gov", "j")[TrainingJobLink.key]
    assert console_urls("us-iso-east-1", "aws-iso", "j") == {}


@pytest.mark.parametrize(("region", "host"), [
    ("us-east-1", "https://us-east-1.console.aws.amazon.com"),
    ("cn-north-1", "https://cn-north-1.console.amazonaws.cn"),
    ("us-gov-west-1", "https://us-gov-west-1.console.amazonaws-us-gov.com"),
])
def test_every_resource_in_every_partition_with_a_console(region, host):
    urls = resource_urls(region, training_job="job-1", model="m-1", endpoint="ep-1")  # partition from region
    assert urls == {
        TrainingJobLink.key: f"{host}/sagemaker/home?region={region}#/jobs/job-1",
        TrainingLogsLink.key: f"{host}/cloudwatch/home?region={region}#logsV2:log-groups/log-group/"
                              "$252Faws$252Fsagemaker$252FTrainingJobs$3FlogStreamNameFilter$3Djob-1$252F",
        ModelLink.key: f"{host}/sagemaker/home?region={region}#/models/m-1",
        EndpointLink.key: f"{host}/sagemaker/home?region={region}#/endpoints/ep-1",
        EndpointLogsLink.key: f"{host}/cloudwatch/home?region={region}#logsV2:log-groups/log-group/"
                              "$252Faws$252Fsagemaker$252FEndpoints$252Fep-1",
    }


def test_only_named_resources_and_no_console_no_urls():
    assert set(resource_urls("eu-west-1", model="m")) == {ModelLink.key}
    assert resource_urls("eu-west-1") == {}
    assert resource_urls("us-iso-east-1", training_job="j") == {}  # the ISO partitions have no public console


# ----------------------------------------------------------------------------------------- store_links
class _Train(BaseOperator):
    operator_extra_links = ExtraLinks(TrainingJobLink(), TrainingLogsLink(),
                                      instance_type=lambda op: op.estimator.get("instance_type"))

    def __init__(self, *, estimator, **kwargs):
        super().__init__(**kwargs)
        self.estimator = estimator


class _Deploy(BaseOperator):
    operator_extra_links = (ModelLink(), EndpointLink(), EndpointLogsLink())


class _Ti:
    def __init__(self):
        self.pushed = {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, fmt, *args):
        self.lines.append(fmt % args)


def _context(task):
    return {"ti": _Ti(), "task": task}


def test_on_aws_the_urls_are_pushed_once_logged_and_are_the_task_links():
    task = _Train(task_id="t", estimator={"instance_type": "ml.g5.xlarge"})
    context, log = _context(task), _Log()
    hook = SimpleNamespace(region="cn-north-1", is_local=False)
    stored = store_links(context, hook, training_job="job-1", model="ignored: not declared", log=log)
    assert stored == context["ti"].pushed == resource_urls("cn-north-1", training_job="job-1")
    assert log.lines == [f"Console: {url}" for url in stored.values()]
    # the task runner pushes get_link() to each link's xcom_key when the task ends: the same key, same URL
    assert [(link.xcom_key, link.get_link(task, ti_key=None)) for link in task.operator_extra_links] == \
        list(stored.items())


def test_on_local_nothing_is_stored_and_the_task_ends_with_no_link_to_push():
    task = _Train(task_id="t", estimator={"instance_type": "{{ params.instance_type }}"})
    assert len(task.operator_extra_links) == 2  # templated: declared (the UI lists them)
    context = _context(task)
    class LocalHook:
        is_local = True

        @property
        def region(self):
            raise AssertionError("a local runtime has no console: the region is not read")

    assert store_links(context, LocalHook(), training_job="job-1", log=_Log()) == {}
    assert context["ti"].pushed == {}
    assert task.operator_extra_links == ()  # so the task runner pushes no empty _link_* XCom
    assert len(_Train.operator_extra_links) == 2  # other tasks of the class keep theirs


def test_region_or_region_partition_pair_and_explicit_is_local():
    task = _Deploy(task_id="d")
    context = _context(task)
    store_links(context, ("us-gov-west-1", "aws-us-gov"), model="m", endpoint="ep")
    assert set(context["ti"].pushed) == {ModelLink.key, EndpointLink.key, EndpointLogsLink.key}
    assert all("amazonaws-us-gov.com" in url for url in context["ti"].pushed.values())
    assert {type(link) for link in task.operator_extra_links} == {ModelLink, EndpointLink, EndpointLogsLink}
    again = _context(task)
    assert store_links(again, "us-east-1", model="m", is_local=True) == {} == again["ti"].pushed


def test_do_xcom_push_false_stores_nothing():
    task = _Deploy(task_id="d", do_xcom_push=False)
    context = _context(task)
    assert store_links(context, "us-east-1", endpoint="ep") == {} == context["ti"].pushed
    assert task.operator_extra_links == ()


def test_a_literal_local_instance_type_declares_no_link_so_the_ui_shows_no_section():
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import OperatorSerialization

    with DAG("links_local", schedule=None):
        local = _Train(task_id="local", estimator={"instance_type": "local"})
        gpu = _Train(task_id="gpu", estimator={"instance_type": "local_gpu"})
        aws = _Train(task_id="aws", estimator={"instance_type": "ml.m5.xlarge"})
        odd = _Train(task_id="odd", estimator="{{ var.json.estimator }}")  # not readable: declared
    assert local.operator_extra_links == () == gpu.operator_extra_links
    assert "_operator_extra_links" not in OperatorSerialization.serialize_operator(local)
    assert OperatorSerialization.serialize_operator(aws)["_operator_extra_links"] == {
        "SageMaker Training Job": TrainingJobLink.key, "Training Job Logs": TrainingLogsLink.key}
    assert len(odd.operator_extra_links) == 2


def test_mapped_tasks_declare_every_link():
    from airflow.sdk import DAG

    with DAG("links_mapped", schedule=None):
        mapped = _Train.partial(task_id="m").expand(estimator=[{"instance_type": "ml.m5.xlarge"}])
    assert [link.name for link in mapped.operator_extra_links] == ["SageMaker Training Job", "Training Job Logs"]


def test_get_link_reads_the_xcom_when_the_url_was_stored_by_another_process(monkeypatch):
    from airflow.sdk.execution_time import xcom

    seen = []

    def get_value(*, key, ti_key):
        seen.append((key, ti_key))
        return "https://example/x" if key == ModelLink.key else None

    monkeypatch.setattr(xcom.XCom, "get_value", staticmethod(get_value))
    task = _Deploy(task_id="d")
    assert ModelLink().get_link(task, ti_key="k") == "https://example/x"
    assert EndpointLink().get_link(task, ti_key="k") == ""
    assert seen == [(ModelLink.key, "k"), (EndpointLink.key, "k")]

    def broken(**_):
        raise RuntimeError("no API server")

    monkeypatch.setattr(xcom.XCom, "get_value", staticmethod(broken))
    assert ModelLink().get_link(task, ti_key="k") == ""


def test_persist_and_console_urls_keep_working_for_the_train_operator():
    context = _context(_Deploy(task_id="d"))
    links.persist(context, console_urls("us-east-1", "aws", "j"))
    assert set(context["ti"].pushed) == {TrainingJobLink.key, TrainingLogsLink.key}


_EVERY_LINK = {f"airflow_sm_pytorch.links.{cls.__name__}" for cls in links.LINK_CLASSES}


def test_links_are_on_the_operator_and_registered_with_the_provider():
    names = {link.name for link in PyTorchTrainOperator.operator_extra_links}
    assert names == {"SageMaker Training Job", "Training Job Logs"}
    registered = airflow_sm_pytorch.get_provider_info()["extra-links"]
    assert set(registered) <= _EVERY_LINK
    assert {"airflow_sm_pytorch.links.TrainingJobLink", "airflow_sm_pytorch.links.TrainingLogsLink"} <= set(registered)


def test_the_provider_registers_every_link_class():
    assert set(airflow_sm_pytorch.get_provider_info()["extra-links"]) == _EVERY_LINK
