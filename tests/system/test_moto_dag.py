"""A DAG against moto (S3, STS, SageMaker on loopback): submits once; the retry submits nothing new."""

from __future__ import annotations

import json

from tests.conftest import boto_client
from tests.system.conftest import ROOT, dags_test, succeeded


def test_retry_reattaches_instead_of_submitting_again(airflow_env, moto_reset):
    s3 = boto_client("s3", moto_reset)
    s3.create_bucket(Bucket="data-bucket")
    s3.put_object(Bucket="data-bucket", Key="train/data.csv", Body=b"1,2,0\n")
    conn = {"conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": moto_reset, "region_name": "us-east-1"}}
    env = {**airflow_env, "AIRFLOW_CONN_SM_MOTO": json.dumps(conn),
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "tests" / "fixtures" / "dags")}

    proc = dags_test(env, "moto_retry")
    output = proc.stdout + proc.stderr
    assert succeeded(proc), output[-4000:]

    jobs = boto_client("sagemaker", moto_reset).list_training_jobs()["TrainingJobSummaries"]
    assert len(jobs) == 1, jobs
    name = jobs[0]["TrainingJobName"]
    assert "simulated: the worker died" in output
    assert f"Created training job {name}" in output
    assert f"Attached to training job {name}" in output
    assert f"Console: https://us-east-1.console.aws.amazon.com/sagemaker/home?region=us-east-1#/jobs/{name}" in output
    # the code was uploaded once, to the SDK's default bucket for moto's account
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="sagemaker-us-east-1-123456789012")["Contents"]]
    assert keys == [f"{name}/source/sourcedir.tar.gz"]
