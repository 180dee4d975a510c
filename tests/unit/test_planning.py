"""``airflow-sm-pytorch plan train``: the exact request on stdout, or one ``error:`` paragraph and exit 2."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from airflow_sm_pytorch.planning import plan_main

SEED = Path(__file__).resolve().parents[1] / "fixtures" / "builders" / "seed"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
               AWS_CONFIG_FILE="/nonexistent", **extra)
    return env


def run_cli(spec: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "airflow_sm_pytorch", "plan", "train", "--spec", str(spec)],
                          cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=120)


def test_seed_example() -> None:
    result = run_cli(SEED / "spec.yaml", SEED)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    request = plan["CreateTrainingJob"]
    job = request["TrainingJobName"]
    assert re.fullmatch(r"pytorch-training-\d{4}(-\d\d){5}-\d{1,3}", job)
    code = f"s3://sagemaker-us-west-2-123456789012/{job}/source/sourcedir.tar.gz"
    assert plan["uploads"] == [{"uri": code, "members": ["pytorch-train.py"]}]
    assert request["AlgorithmSpecification"] == {
        "TrainingInputMode": "File",
        "TrainingImage": "763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-training:1.8.0-gpu-py3",
        "EnableSageMakerMetricsTimeSeries": True,
    }
    assert request["HyperParameters"] == {
        "epochs": "20", "batch-size": "64", "learning-rate": "0.1",
        "sagemaker_submit_directory": json.dumps(code), "sagemaker_program": '"pytorch-train.py"',
        "sagemaker_container_log_level": "20", "sagemaker_job_name": json.dumps(job),
        "sagemaker_region": '"us-west-2"',
    }
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["train", "test"]
    assert request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == (
        "s3://my-data-bucket/path/to/my/training/data")
    assert request["ResourceConfig"] == {"VolumeSizeInGB": 30, "InstanceCount": 1,
                                         "InstanceType": "ml.p3.2xlarge"}
    assert request["RoleArn"] == ROLE and "region" not in request


@pytest.mark.parametrize("content, words", [
    ("entry_point: pytorch-train.py\ninstance_count: 0\n", "role"),
    ("{not: yaml: at all", "not valid JSON or YAML"),
    ("- a\n- b\n", "is not a mapping"),
])
def test_error_is_one_paragraph_without_traceback(tmp_path: Path, content: str, words: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(content)
    result = run_cli(spec, SEED, AWS_REGION="us-west-2")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert words in lines[0]


def _plan(
    spec: dict[str, Any] | str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, Any, str]:
    path = tmp_path / "spec.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    code = plan_main(argparse.Namespace(spec=str(path)))
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else None, err


def _seed(**overrides: Any) -> dict[str, Any]:
    base = dict(entry_point="pytorch-train.py", source_dir=str(SEED), role=ROLE, instance_type="ml.m5.xlarge",
                instance_count=1, framework_version="2.3.0", py_version="py311", job_name="job-1",
                region="us-west-2", default_bucket="bucket-1")
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_json_spec_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, plan, _ = _plan(_seed(), tmp_path, capsys)
    assert code == 0 and plan["CreateTrainingJob"]["TrainingJobName"] == "job-1"
    assert plan_main(argparse.Namespace(spec=str(tmp_path / "nope.yaml"))) == 2
    assert capsys.readouterr().err.startswith("error: cannot read")


def test_region_from_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    code, _, err = _plan(_seed(region=None), tmp_path, capsys)
    assert code == 2 and "region" in err and "AWS_REGION" in err
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    code, plan, _ = _plan(_seed(region=None), tmp_path, capsys)
    assert code == 0
    assert plan["CreateTrainingJob"]["HyperParameters"]["sagemaker_region"] == '"eu-west-1"'


def test_default_bucket_from_sts(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    class FakeSts:
        def get_caller_identity(self) -> dict[str, str]:
            calls.append("GetCallerIdentity")
            return {"Account": "210987654321"}

    fake = types.ModuleType("boto3")
    fake.client = lambda service, region_name=None: FakeSts()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "boto3", fake)
    code, plan, _ = _plan(_seed(default_bucket=None), tmp_path, capsys)
    assert code == 0 and calls == ["GetCallerIdentity"]
    output = plan["CreateTrainingJob"]["OutputDataConfig"]["S3OutputPath"]
    assert output == "s3://sagemaker-us-west-2-210987654321/"
    calls.clear()
    code, plan, _ = _plan(_seed(default_bucket=None, output_path="s3://out-1/x"), tmp_path, capsys)
    assert code == 0 and calls == []  # not needed: the code goes to the output bucket


def test_no_credentials_asks_for_default_bucket(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in _env().items():
        monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("AWS_") and k not in _env()]:
        monkeypatch.delenv(key)
    code, _, err = _plan(_seed(default_bucket=None), tmp_path, capsys)
    assert code == 2 and "set default_bucket" in err and "Traceback" not in err


def test_local_runtime_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    spec = _seed(local=True, default_bucket=f"file://{tmp_path}/store", instance_type="local",
                 inputs={"train": str(data)})
    code, plan, _ = _plan(spec, tmp_path, capsys)
    assert code == 0
    assert plan["uploads"][0]["uri"] == f"file://{tmp_path}/store/job-1/source/sourcedir.tar.gz"
    channel = plan["CreateTrainingJob"]["InputDataConfig"][0]
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"file://{data}"
    code, _, err = _plan(_seed(local="yes"), tmp_path, capsys)
    assert code == 2 and "local" in err
    code, _, err = _plan(_seed(local=True, default_bucket=None), tmp_path, capsys)
    assert code == 2 and "default_bucket" in err


def test_plan_prints_the_distribution_hyperparameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _seed(instance_type="ml.p4d.24xlarge", instance_count=2,
                 distribution={"mpi": {"enabled": True, "processes_per_host": 8, "custom_mpi_options": "-v"}})
    code, plan, _ = _plan(spec, tmp_path, capsys)
    assert code == 0
    sent = plan["CreateTrainingJob"]["HyperParameters"]
    assert {k: sent[k] for k in sent if "mpi" in k} == {"sagemaker_mpi_enabled": "true",
                                                         "sagemaker_mpi_num_of_processes_per_host": "8",
                                                         "sagemaker_mpi_custom_mpi_options": '"-v"'}
    code, plan, _ = _plan(_seed(instance_type="ml.p4d.24xlarge", distribution={"torch_distributed": {
        "enabled": True}}), tmp_path, capsys)
    assert plan["CreateTrainingJob"]["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"


def test_planning_does_not_import_airflow() -> None:
    code = "import sys, airflow_sm_pytorch.planning; print('airflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False"


# ------------------------------------------------------------------------------ spec files read as Python would
def _yaml_spec(tmp_path: Path, body: str) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"entry_point: pytorch-train.py\nsource_dir: {SEED}\nrole: {ROLE}\n"
                    "instance_type: ml.m5.xlarge\ninstance_count: 1\nframework_version: '2.3.0'\n"
                    "py_version: py311\njob_name: job-1\nregion: us-west-2\ndefault_bucket: bucket-1\n" + body)
    return spec


def test_exponent_floats_are_floats_in_yaml_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _yaml_spec(tmp_path, "hyperparameters: {lr: 1e-5, wd: 1E+3, eps: .5, n: 010, big: 0x10, "
                                "steps: 1_000, hms: 1:30, version: 2.3.0}\n")
    assert plan_main(argparse.Namespace(spec=str(spec))) == 0
    sent = json.loads(capsys.readouterr().out)["CreateTrainingJob"]["HyperParameters"]
    assert {k: sent[k] for k in ("lr", "wd", "eps", "n", "big")} == {
        "lr": "1e-05", "wd": "1000.0", "eps": "0.5", "n": "10", "big": "16"}
    # YAML 1.2 has no '_' separators or base-60 numbers: they stay strings, as in JSON
    assert (sent["steps"], sent["hms"], sent["version"]) == ('"1_000"', '"1:30"', '"2.3.0"')
    code, plan, _ = _plan('{"hyperparameters": {"lr": 1e-05}, ' + json.dumps(_seed())[1:], tmp_path, capsys)
    assert code == 0 and plan["CreateTrainingJob"]["HyperParameters"]["lr"] == "1e-05"


def test_bad_json_spec_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _plan('{"entry_point": "x.py",}', tmp_path, capsys)
    assert code == 2 and err.startswith("error: ") and "is not valid JSON" in err and err.count("\n") == 1


@pytest.mark.parametrize("overrides, words", [
    ({"entry_point": "/etc/passwd", "source_dir": None}, "entry_point='/etc/passwd' is an absolute path"),
    ({"entry_point": "/etc/passwd"}, "entry_point='/etc/passwd' is an absolute path"),
    ({"entry_point": "../outside/evil.py"}, "entry_point='../outside/evil.py' is outside source_dir"),
    ({"instance_count": None}, "instance_count=None is required"),
    ({"base_job_name": "my_job", "job_name": None}, "base_job_name='my_job' gives an invalid job name"),
    ({"role": "arn:aws:iam::123456789012:role/" + "r" * 2100}, "role='arn:aws:iam::123456789012:role/rrr"),
    ({"tags": {"aws:team": "ml"}}, "tags='aws:team' is a reserved tag key"),
    ({"distribution": {"pytorchddp": {"enabled": True}}, "instance_type": "ml.p4d.24xlarge"},
     "distribution.pytorchddp={'enabled': True} is not supported with framework_version 2.3.0"),
    ({"distribution": {"torch_distributed": {"enabled": True}}},
     "distribution.torch_distributed={'enabled': True} is not supported on instance_type ml.m5.xlarge"),
])
def test_plan_refuses_with_the_users_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           overrides: dict[str, Any], words: str) -> None:
    code, _, err = _plan(_seed(**overrides), tmp_path, capsys)
    assert code == 2 and words in err and err.count("\n") == 1


# ------------------------------------------------------------------------------ plan deploy
def run_deploy(spec: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "airflow_sm_pytorch", "plan", "deploy", "--spec", str(spec)],
                          cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=120)


DEPLOY_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_plan_deploy_trained_job_prints_the_three_requests(tmp_path: Path) -> None:
    spec = tmp_path / "deploy.yaml"
    spec.write_text(f"""region: us-west-2
default_bucket: sagemaker-us-west-2-123456789012
training_job_name: pytorch-training-2024-01-02-03-04-05-678
estimator:
  entry_point: train.py
  source_dir: {DEPLOY_FIXTURES / 'builders' / 'src'}
  role: {ROLE}
  instance_type: ml.p3.2xlarge
  instance_count: 1
  framework_version: "2.3.0"
  py_version: py311
deploy:
  initial_instance_count: 1
  instance_type: ml.g4dn.xlarge
""")
    result = run_deploy(spec, tmp_path)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert list(plan) == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint", "uploads"]
    name = plan["CreateModel"]["ModelName"]
    assert re.fullmatch(r"pytorch-training-\d{4}(-\d\d){5}-\d{1,3}", name)
    assert plan["CreateEndpoint"] == {"EndpointName": name, "EndpointConfigName": name, "Tags": []}
    [upload] = plan["uploads"]
    assert upload["uri"] == f"s3://sagemaker-us-west-2-123456789012/{name}/model.tar.gz"
    assert upload["members"] == ["code", "code/requirements.txt", "code/train.py", "code/utils",
                                 "code/utils/helpers.py"]


def test_plan_deploy_model_with_names_and_eia_warning(tmp_path: Path) -> None:
    spec = tmp_path / "deploy.json"
    spec.write_text(json.dumps({
        "region": "us-west-2", "default_bucket": "my-bucket", "name": "my-model",
        "model": {"model_data": "s3://my-bucket/model.tar.gz", "role": ROLE, "entry_point": "inference.py",
                  "source_dir": str(DEPLOY_FIXTURES / "deploy" / "byom"), "framework_version": "1.5.1",
                  "py_version": "py3"},
        "deploy": {"initial_instance_count": 1, "instance_type": "ml.m5.xlarge", "endpoint_name": "my-endpoint",
                   "accelerator_type": "ml.eia2.medium"}}))
    result = run_deploy(spec, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("warning: accelerator_type") and "Traceback" not in result.stderr
    plan = json.loads(result.stdout)
    assert plan["CreateModel"]["ModelName"] == "my-model"
    assert plan["CreateEndpoint"]["EndpointName"] == "my-endpoint"
    assert plan["uploads"][0]["uri"] == "s3://my-bucket/my-model/model.tar.gz"


@pytest.mark.parametrize("content, words", [
    ("region: us-west-2\ndefault_bucket: b-b-b\ndeploy: {instance_type: ml.m5.xlarge}\n", "model=None is required"),
    ("region: us-west-2\ndefault_bucket: b-b-b\nmodel: {model_data: s3://b-b-b/m.tar.gz, role: " + ROLE
     + ", py_version: py311}\ndeploy: {initial_instance_count: 0, instance_type: ml.m5.xlarge}\n",
     "initial_instance_count=0"),
    ("region: us-west-2\nmodle: {}\n", "did you mean 'model'"),
])
def test_plan_deploy_bad_spec_exits_2(tmp_path: Path, content: str, words: str) -> None:
    spec = tmp_path / "deploy.yaml"
    spec.write_text(content)
    result = run_deploy(spec, tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr
