"""OpenLineage datasets: training channels -> model artifacts, model data -> endpoint, as the Amazon provider
names them (s3://bucket + key) and as the naming spec names local files (file + path)."""

import json
import subprocess
import sys

import pytest

from airflow_sm_pytorch import lineage
from airflow_sm_pytorch.lineage import (
    dataset_id,
    deploy_datasets,
    deploy_lineage,
    endpoint_id,
    training_datasets,
    training_lineage,
)

ARN = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/my-endpoint"


@pytest.mark.parametrize(("uri", "expected"), [
    ("s3://bucket/train/data.csv", ("s3://bucket", "train/data.csv")),
    ("s3://bucket/train/", ("s3://bucket", "train/")),  # as the Amazon provider: the key as given
    ("s3://bucket", ("s3://bucket", "/")),
    ("s3a://bucket/k", ("s3://bucket", "k")),
    ("file:///srv/sm/store/sagemaker-us-east-1/job/output/model.tar.gz",
     ("file", "/srv/sm/store/sagemaker-us-east-1/job/output/model.tar.gz")),
    ("file://localhost/data", ("file", "/data")),
    ("file://nas/data", ("file://nas", "/data")),
    ("/opt/data", ("file", "/opt/data")),
    ("gs://b/k", ("gs://b", "k")),
    ("", None),
    (None, None),
])
def test_dataset_ids_follow_the_naming_spec(uri, expected):
    assert dataset_id(uri) == expected


def _description(*uris, artifacts=None):
    channels = [{"ChannelName": f"c{i}", "DataSource": {"S3DataSource": {"S3Uri": u, "S3DataType": "S3Prefix"}}}
                for i, u in enumerate(uris)]
    out = {"TrainingJobName": "j", "InputDataConfig": channels}
    if artifacts:
        out["ModelArtifacts"] = {"S3ModelArtifacts": artifacts}
    return out


def test_training_channels_in_model_artifacts_out():
    inputs, outputs = training_datasets(_description(
        "s3://data/train/", "s3://data/validation/", "s3://data/train/",
        artifacts="s3://sagemaker-us-east-1-123456789012/j/output/model.tar.gz"))
    assert inputs == [("s3://data", "train/"), ("s3://data", "validation/")]  # one dataset per URI
    assert outputs == [("s3://sagemaker-us-east-1-123456789012", "j/output/model.tar.gz")]


def test_training_on_the_local_runtime_names_files():
    inputs, outputs = training_datasets(_description("file:///data/train", artifacts="file:///rt/j/model.tar.gz"))
    assert (inputs, outputs) == ([("file", "/data/train")], [("file", "/rt/j/model.tar.gz")])


def test_training_edge_cases():
    assert training_datasets({}) == ([], [])
    assert training_datasets(_description("s3://b/k")) == ([("s3://b", "k")], [])  # no artifacts yet
    fsx = {"InputDataConfig": [{"DataSource": {"FileSystemDataSource": {
        "FileSystemId": "fs-1", "FileSystemType": "FSxLustre", "DirectoryPath": "/fsx/train"}}}]}
    assert training_datasets(fsx) == ([("fsxlustre://fs-1", "/fsx/train")], [])


def test_endpoint_identity_from_arn_or_name():
    assert endpoint_id(ARN) == ("arn:aws:sagemaker:us-east-1:123456789012", "endpoint/my-endpoint")
    assert endpoint_id("My-Endpoint", "us-east-1", account_id="123456789012") == endpoint_id(ARN)
    assert endpoint_id("e", "cn-north-1", account_id="1") == ("arn:aws-cn:sagemaker:cn-north-1:1", "endpoint/e")
    assert endpoint_id("e", "us-gov-west-1", account_id="1")[0] == "arn:aws-us-gov:sagemaker:us-gov-west-1:1"
    with pytest.raises(ValueError, match="region and account_id"):
        endpoint_id("e", "us-east-1")
    with pytest.raises(ValueError, match="not an endpoint ARN"):
        endpoint_id("arn:aws:sagemaker:us-east-1:1:model/m")


def test_deploy_model_data_in_endpoint_out():
    repack_of = "s3://b/train/output/model.tar.gz"
    inputs, outputs = deploy_datasets([repack_of, "s3://b/ep/model.tar.gz"], ARN)
    assert inputs == [("s3://b", "train/output/model.tar.gz"), ("s3://b", "ep/model.tar.gz")]
    assert outputs == [("arn:aws:sagemaker:us-east-1:123456789012", "endpoint/my-endpoint")]
    assert deploy_datasets("file:///rt/model.tar.gz", ARN)[0] == [("file", "/rt/model.tar.gz")]
    assert deploy_datasets(None, ARN)[0] == []


def _ids(datasets):
    return [(d.namespace, d.name) for d in datasets]


def test_lineage_objects_without_openlineage_installed(monkeypatch):
    monkeypatch.setattr(lineage, "_classes", lambda: (lineage._Dataset, lineage._Lineage))
    result = training_lineage(_description("s3://d/train", artifacts="s3://o/m.tar.gz"))
    assert (_ids(result.inputs), _ids(result.outputs)) == ([("s3://d", "train")], [("s3://o", "m.tar.gz")])
    assert result.run_facets == {} == result.job_facets
    deployed = deploy_lineage("s3://o/m.tar.gz", "ep", "us-east-1")  # a name with no account: no output
    assert (_ids(deployed.inputs), deployed.outputs) == ([("s3://o", "m.tar.gz")], [])
    assert _ids(deploy_lineage(None, ARN).outputs) == [endpoint_id(ARN)]
    assert training_lineage(None).inputs == []


def test_lineage_objects_are_openlineage_s_where_installed():
    pytest.importorskip("openlineage.client")
    pytest.importorskip("airflow.providers.openlineage")
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    result = training_lineage(_description("s3://d/train", artifacts="file:///rt/m.tar.gz"))
    assert isinstance(result, OperatorLineage)
    assert result.inputs == [Dataset(namespace="s3://d", name="train", facets={})]
    assert result.outputs == [Dataset(namespace="file", name="/rt/m.tar.gz", facets={})]
    deployed = deploy_lineage("s3://o/m.tar.gz", ARN)
    assert deployed.outputs == [Dataset(namespace="arn:aws:sagemaker:us-east-1:123456789012",
                                         name="endpoint/my-endpoint", facets={})]


def test_importing_lineage_pulls_in_neither_openlineage_nor_boto3():
    probe = ("import sys, json, airflow_sm_pytorch.lineage\n"
             "print(json.dumps(sorted(m for m in ('openlineage', 'boto3', 'botocore') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
