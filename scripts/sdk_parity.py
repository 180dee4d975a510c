"""Off-CI parity check: our CreateTrainingJob and deploy requests against the real SageMaker Python SDK's.

What: for each configuration below (the seed example, contracts/sdk-requests.md §1.1 and variations on
it), build the request twice and compare them:

* the SDK: ``sagemaker.pytorch.PyTorch(**kwargs).fit(inputs, job_name=..., wait=False, logs=False)``
  with a ``sagemaker.session.Session`` whose boto session is a ``unittest.mock`` stub (region, STS
  account 123456789012, ``create_training_job`` and the S3 ``upload_file`` captured, the uploaded tar's
  member names read, sagemaker_config disabled). It runs in a SUBPROCESS under ``--sdk-python``; this
  script never imports ``sagemaker``;
* ours: ``builders.training.build_training_plan(TrainingSpec.from_dict(...), Session(region, bucket),
  job_name=...)``.

Deploy configurations (``deploy-*``) run ``PyTorch(...).fit(...)`` then ``estimator.deploy(...)``, or
``PyTorchModel(...).deploy(...)`` (``wait=False``; S3 downloads for the repack served from what was
uploaded, a model archive holding ``model.pth`` otherwise) against ``planning.build_deploy`` (what
``plan deploy`` prints). Names are left to each side, so timestamps are normalised to ``-<ts>``; a
repacked archive's members are compared under ``code/`` (the rest is the model's own files).

Distribution configurations (``dist-*``) cover every strategy the PyTorch estimator builds (torchrun on
2x p4d, MPI with processes_per_host and custom_mpi_options, pytorchddp on 2.2.0, Trainium with the default
Neuron image and with an image_uri, SMP v2, ...). Each bad ``distribution=`` input in ``REFUSALS`` is built
on both sides too: where the SDK refuses, we must refuse (our message may say more); where only we refuse
(marked ``ours``), that is a deliberate extra check and the SDK must accept it, so the table shows both.

Requests must be equal (``==``); uploads must have the same URI, the same member set and the same
ExtraArgs, except the SDK's ``ExpectedBucketOwner``, which we leave out on purpose (reported in the
table). Differences are printed as JSON paths with both values. Exit status: 0 when everything matches,
1 otherwise.

How to run (from the repository root, with the PROJECT venv)::

    python3 -m venv /tmp/smvenv && /tmp/smvenv/bin/pip install -q sagemaker==2.257.6   # once
    .venv/bin/python scripts/sdk_parity.py --sdk-python /tmp/smvenv/bin/python [--out docs/sdk-parity.txt]

Not part of CI: CI must not install the SDK (the project exists to avoid depending on it), so this is
run by hand when the builders or the pinned SDK version change; the last result is docs/sdk-parity.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "123456789012"
JOB = "pytorch-training-2024-01-02-03-04-05-678"
SRC = "tests/fixtures/builders/src"
SESSION_KEYS = ("region", "default_bucket", "default_bucket_prefix")
MISSING = "<absent>"
TIMESTAMP = re.compile(r"-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{3}")

# Runs under --sdk-python: argv[1] = output file; stdin = [[name, config], ...].
SDK_RUNNER = r'''
import importlib.metadata as md, io, json, logging, os, sys, tarfile
from unittest import mock
import sagemaker
from sagemaker.inputs import TrainingInput
from sagemaker.model_monitor import DataCaptureConfig
from sagemaker.pytorch import PyTorch, PyTorchModel
from sagemaker.serverless import ServerlessInferenceConfig
from sagemaker.session import Session
ROOT = os.getcwd()
logging.disable(logging.WARNING)
ACCOUNT = "123456789012"

def to_inputs(v):
    if isinstance(v, dict) and "s3_data" in v:
        return TrainingInput(**v)
    if isinstance(v, dict):
        return {k: TrainingInput(**x) if isinstance(x, dict) else x for k, x in v.items()}
    return v

def session_for(region, bucket, prefix, store, uploads, requests):
    def s3_object(b, k):
        def upload_file(path, ExtraArgs=None):
            with open(path, "rb") as f:
                store["s3://%s/%s" % (b, k)] = f.read()
            with tarfile.open(path) as tar:
                uploads.append({"uri": "s3://%s/%s" % (b, k), "members": tar.getnames(),
                                "extra_args": ExtraArgs})
        obj = mock.MagicMock()
        obj.upload_file.side_effect = upload_file
        return obj

    def s3_bucket(b=None, name=None):
        b = b or name

        def download_file(k, target, ExtraArgs=None):
            data = store.get("s3://%s/%s" % (b, k))
            if data is None:  # a model archive nobody uploaded: one weights file
                buf = io.BytesIO()
                with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                    info = tarfile.TarInfo("model.pth"); info.size = 4
                    tar.addfile(info, io.BytesIO(b"1234"))
                data = buf.getvalue()
            with open(target, "wb") as f:
                f.write(data)
        obj = mock.MagicMock()
        obj.download_file.side_effect = download_file
        return obj

    def capture(op):
        return lambda **kw: requests.__setitem__(op, kw) or {}

    s3 = mock.MagicMock()
    s3.Object.side_effect = s3_object
    s3.Bucket.side_effect = s3_bucket
    sm = mock.MagicMock()
    for op in ("CreateTrainingJob", "CreateModel", "CreateEndpointConfig", "CreateEndpoint"):
        snake = "".join("_" + c.lower() if c.isupper() else c for c in op)[1:]
        getattr(sm, snake).side_effect = capture(op)
    sm.describe_training_job.side_effect = lambda **kw: {
        "ModelArtifacts": {"S3ModelArtifacts": "%s/%s/output/model.tar.gz" % (
            requests["CreateTrainingJob"]["OutputDataConfig"]["S3OutputPath"].rstrip("/"), kw["TrainingJobName"])},
        "OutputDataConfig": requests["CreateTrainingJob"]["OutputDataConfig"]}
    sts = mock.MagicMock()
    sts.get_caller_identity.return_value = {"Account": ACCOUNT}
    boto = mock.MagicMock(region_name=region)
    boto.client.side_effect = lambda name, *a, **kw: {"sts": sts, "sagemaker": sm}.get(name, mock.MagicMock())
    boto.resource.return_value = s3
    # The canonical name is left to the SDK to generate (as with no default_bucket argument), so its
    # default-bucket behaviour (ExpectedBucketOwner) is exercised; any other name is passed explicitly.
    generated = "sagemaker-%s-%s" % (region, ACCOUNT)
    return Session(boto_session=boto, sagemaker_client=sm, sagemaker_runtime_client=mock.MagicMock(),
                   default_bucket=None if bucket == generated else bucket,
                   default_bucket_prefix=prefix, sagemaker_config={"SchemaVersion": "1.0"})


def deploy_kwargs(d, session):
    d = dict(d)
    if d.get("serverless_inference_config") is not None:
        d["serverless_inference_config"] = ServerlessInferenceConfig(**d["serverless_inference_config"])
    if d.get("data_capture_config") is not None:
        d["data_capture_config"] = DataCaptureConfig(**d["data_capture_config"], sagemaker_session=session)
    return d


def run(cfg):
    cfg = dict(cfg)
    kind, cwd = cfg.pop("kind", "train"), cfg.pop("cwd", None)
    region, bucket, prefix = (cfg.pop(k, None) for k in ("region", "default_bucket", "default_bucket_prefix"))
    requests, uploads, store = {}, [], {}
    session = session_for(region, bucket, prefix, store, uploads, requests)
    if cwd:
        os.chdir(cwd)
    try:
        if kind == "train":
            inputs, job_name = cfg.pop("inputs", None), cfg.pop("job_name")
            PyTorch(sagemaker_session=session, **cfg).fit(to_inputs(inputs), job_name=job_name, wait=False,
                                                          logs=False)
            return {"request": requests["CreateTrainingJob"], "uploads": uploads}
        deploy = deploy_kwargs(cfg.get("deploy") or {}, session)
        if "estimator" in cfg:
            est = dict(cfg["estimator"])
            inputs = est.pop("inputs", None)
            estimator = PyTorch(sagemaker_session=session, **est)
            estimator.fit(to_inputs(inputs), job_name=cfg["training_job_name"], wait=False, logs=False)
            del uploads[:]
            estimator.deploy(wait=False, model_name=cfg.get("name"), **deploy)
        else:
            model = dict(cfg["model"])
            if cfg.get("name"):
                model["name"] = cfg["name"]
            PyTorchModel(sagemaker_session=session, **model).deploy(wait=False, **deploy)
        return {"request": {op: requests[op] for op in ("CreateModel", "CreateEndpointConfig", "CreateEndpoint")},
                "uploads": uploads}
    finally:
        os.chdir(ROOT)


results = {}
for name, cfg in json.load(sys.stdin):
    try:
        results[name] = run(cfg)
    except Exception as exc:  # reported per configuration
        results[name] = {"error": "%s: %s" % (type(exc).__name__, exc)}
dist = md.distribution("sagemaker")
wheel = (dist.read_text("WHEEL") or "Tag: ?").splitlines()
tag = next(l.split(": ", 1)[1] for l in wheel if l.startswith("Tag:"))
meta = {"version": sagemaker.__version__, "wheel": "sagemaker-%s-%s.whl" % (dist.version, tag),
        "python": sys.version.split()[0]}
with open(sys.argv[1], "w") as f:
    json.dump({"meta": meta, "results": results}, f, default=str)
'''


def configurations() -> list[tuple[str, dict[str, Any]]]:
    """(name, estimator kwargs + inputs + job_name + session keys), all paths relative to ROOT."""
    seed = yaml.safe_load((ROOT / "tests/fixtures/builders/seed/spec.yaml").read_text(encoding="utf-8"))
    seed["entry_point"] = f"tests/fixtures/builders/seed/{seed['entry_point']}"
    base: dict[str, Any] = {
        "entry_point": "train.py", "source_dir": SRC, "role": f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole",
        "instance_type": "ml.p3.2xlarge", "instance_count": 1, "framework_version": "2.3.0",
        "py_version": "py311",
        "hyperparameters": {"epochs": 10, "lr": 0.01, "model_name": "resnet", "flag": True, "lst": [1, 2]},
        "inputs": {"train": "s3://my-bucket/train", "test": "s3://my-bucket/test"}, "region": "us-west-2",
        "job_name": JOB,
    }

    def variant(**changes: Any) -> dict[str, Any]:
        cfg = {**base, **changes}
        cfg.setdefault("default_bucket", f"sagemaker-{cfg['region']}-{ACCOUNT}")
        return {k: v for k, v in cfg.items() if v is not None}

    key = f"arn:aws:kms:us-west-2:{ACCOUNT}:key"
    many = dict(
        instance_type="ml.m5.xlarge", hyperparameters={"epochs": 2}, inputs="s3://my-bucket/data",
        output_kms_key=f"{key}/output-key", volume_kms_key=f"{key}/volume-key",
        keep_alive_period_in_seconds=600, max_run=3600, use_spot_instances=True, max_wait=7200,
        checkpoint_s3_uri="s3://my-bucket/checkpoints", checkpoint_local_path="/opt/ml/checkpoints",
        max_retry_attempts=3, tags=[{"Key": "team", "Value": "ml"}, {"Key": "project", "Value": "demo"}],
        subnets=["subnet-0123456789abcdef0"], security_group_ids=["sg-0123456789abcdef0"],
        environment={"MY_FLAG": "1", "LOG_LEVEL": "debug"},
        metric_definitions=[{"Name": "train:loss", "Regex": "loss=([0-9\\.]+)"}],
        disable_profiler=True, encrypt_inter_container_traffic=True)
    return [
        ("seed-spec-yaml", {**seed, "job_name": JOB}),
        ("sdk-1.1-us-west-2", variant()),
        ("cpu-many-options", variant(**many)),
        ("cpu-training-input", variant(**{**many, "inputs": {
            "s3_data": "s3://my-bucket/data", "input_mode": "FastFile", "distribution": "ShardedByS3Key",
            "content_type": "text/csv"}})),
        ("china-cn-north-1", variant(region="cn-north-1", instance_type="ml.m5.xlarge",
                                     role=f"arn:aws-cn:iam::{ACCOUNT}:role/SageMakerRole",
                                     inputs="s3://my-bucket/data")),
        ("govcloud-us-gov-east-1", variant(region="us-gov-east-1",
                                           role=f"arn:aws-us-gov:iam::{ACCOUNT}:role/SageMakerRole")),
        ("govcloud-us-gov-west-1", variant(region="us-gov-west-1",
                                           role=f"arn:aws-us-gov:iam::{ACCOUNT}:role/SageMakerRole")),
        ("network-isolation", variant(enable_network_isolation=True)),
        ("output-path-other-bucket", variant(output_path="s3://out-bkt/some/prefix",
                                             output_kms_key=f"{key}/output-key")),
        ("code-location", variant(output_path="s3://out-bkt/some/prefix",
                                  code_location="s3://code-bkt/code/prefix")),
        ("default-bucket-prefix", variant(default_bucket_prefix="team/prefix")),
        ("explicit-default-bucket", variant(default_bucket="my-team-bucket")),
        ("trn1-image-uri", variant(instance_type="ml.trn1.32xlarge", framework_version=None, py_version=None,
                                   image_uri=f"{ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com/my-neuron:latest")),
        ("dependencies", variant(entry_point="pytorch-train.py", source_dir="tests/fixtures/builders/seed",
                                 dependencies=[f"{SRC}/utils", f"{SRC}/requirements.txt"])),
        # An absolute entry_point without source_dir is refused (programs come from the code dir): run
        # from the script's directory and name it relatively, as the SDK allows too.
        ("entry-point-only", variant(entry_point="train.py", source_dir=None, cwd=SRC)),
        ("framework-2.1-alias", variant(framework_version="2.1", py_version="py310")),
        *distribution_configurations(variant),
    ]


TORCHRUN = {"torch_distributed": {"enabled": True}}
NEURONX = ("763104351884.dkr.ecr.us-west-2.amazonaws.com/"
           "pytorch-training-neuronx:2.1.2-neuronx-py310-sdk2.20.2-ubuntu20.04")


def distribution_configurations(variant: Any) -> list[tuple[str, dict[str, Any]]]:
    """``distribution=`` (contracts/sdk-requests.md §2.2): every strategy the PyTorch estimator builds."""
    p4d = dict(instance_type="ml.p4d.24xlarge", instance_count=2)
    on_2_2 = dict(p4d, framework_version="2.2.0", py_version="py310")
    p5 = dict(instance_type="ml.p5.48xlarge", instance_count=2)
    smp = {"torch_distributed": {"enabled": True},
           "smdistributed": {"modelparallel": {"enabled": True, "parameters": {"tensor_parallel_degree": 8}}}}
    trn1 = dict(instance_type="ml.trn1.32xlarge", instance_count=2)
    return [
        ("dist-torchrun-2x-p4d", variant(**p4d, distribution=TORCHRUN)),
        ("dist-mpi-processes-options", variant(**p4d, distribution={"mpi": {
            "enabled": True, "processes_per_host": 8, "custom_mpi_options": "-verbose"}})),
        ("dist-mpi-defaults", variant(**p4d, distribution={"mpi": {"enabled": True}})),
        ("dist-mpi-disabled", variant(**p4d, distribution={"mpi": {"enabled": False}})),
        ("dist-pytorchddp-2.2.0", variant(**on_2_2, distribution={"pytorchddp": {"enabled": True}})),
        ("dist-pytorchddp-2.3.0-image-uri", variant(
            **p4d, framework_version=None, py_version=None,
            image_uri=f"{ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com/ddp:1",
            distribution={"pytorchddp": {"enabled": True}})),
        ("dist-smddp-custom-options", variant(**on_2_2, distribution={"smdistributed": {"dataparallel": {
            "enabled": True, "custom_mpi_options": "-x NCCL_DEBUG=WARN"}}})),
        ("dist-trn1-torchrun-image-uri", variant(**trn1, framework_version=None, py_version=None,
                                                 image_uri=NEURONX, distribution=TORCHRUN)),
        ("dist-trn1-torchrun-default-image", variant(**trn1, framework_version="1.11.0", py_version="py38",
                                                     distribution=TORCHRUN)),
        ("dist-smp-v2-2.2.0", variant(**on_2_2, distribution=smp)),
        ("dist-smp-v2-p5-2.4.1", variant(**p5, framework_version="2.4.1", distribution=smp)),
        ("dist-torchrun-smddp-p5", variant(**p5, framework_version="2.2.0", py_version="py310", distribution={
            **TORCHRUN, "smdistributed": {"dataparallel": {"enabled": True}}})),
        ("dist-smp-v1-mpi", variant(**p4d, framework_version="1.13.1", py_version="py39", distribution={
            "mpi": {"enabled": True, "processes_per_host": 8},
            "smdistributed": {"modelparallel": {"enabled": True, "parameters": {"partitions": 2}}}})),
        ("dist-parameter-server", variant(**p4d, distribution={"parameter_server": {"enabled": True}})),
        ("dist-instance-groups-empty", variant(**p4d, distribution={"instance_groups": []})),
        ("dist-torchrun-disabled", variant(**p4d, distribution={"torch_distributed": {"enabled": False}})),
        ("dist-two-hosts-none", variant(**p4d)),
    ]


TRN1 = {"instance_type": "ml.trn1.32xlarge", "framework_version": "1.11.0", "py_version": "py38"}
#: Bad ``distribution=`` inputs: (name, changes to the torchrun-on-2x-p4d configuration, who refuses).
#: "both": the SDK refuses too (our message may differ); "ours": a deliberate, documented extra refusal
#: where the SDK sends something the container ignores or misreads (builders/distribution.py).
REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("torchrun-on-cpu-c5", {"instance_type": "ml.c5.xlarge"}, "both"),
    ("torchrun-version-2.4.0", {"framework_version": "2.4.0"}, "both"),
    ("torchrun-version-alias-2.3", {"framework_version": "2.3"}, "both"),
    ("torchrun-py2", {"framework_version": "1.13.1", "py_version": "py2"}, "both"),
    ("torchrun-shell-entry-point", {"entry_point": "run.sh"}, "both"),
    ("torchrun-trn1-version-2.1.2", {"instance_type": "ml.trn1.32xlarge", "framework_version": "2.1.2",
                                     "py_version": "py310"}, "both"),
    ("pytorchddp-2.3.0", {"distribution": {"pytorchddp": {"enabled": True}}}, "both"),
    ("pytorchddp-py2", {"distribution": {"pytorchddp": {"enabled": True}}, "framework_version": "1.6.0",
                        "py_version": "py2"}, "both"),
    ("trn1-pytorchddp", {**TRN1, "distribution": {"pytorchddp": {"enabled": True}}}, "both"),
    ("trn1-mpi", {**TRN1, "distribution": {"mpi": {"enabled": True}}}, "both"),
    ("trn1-two-keys", {**TRN1, "distribution": {**TORCHRUN, "mpi": {"enabled": False}}}, "both"),
    ("pytorchddp-and-smdistributed", {"framework_version": "2.2.0", "py_version": "py310", "distribution": {
        "pytorchddp": {"enabled": True}, "smdistributed": {"dataparallel": {"enabled": True}}}}, "both"),
    ("smdistributed-two-strategies", {"framework_version": "2.2.0", "py_version": "py310", "distribution": {
        "smdistributed": {"dataparallel": {"enabled": True}, "modelparallel": {"enabled": True}}}}, "both"),
    ("smdistributed-unknown-strategy", {"distribution": {"smdistributed": {"foo": {"enabled": True}}}},
     "both"),
    ("smdistributed-not-a-mapping", {"distribution": {"smdistributed": "dataparallel"}}, "both"),
    ("smddp-p5-without-torchrun", {"instance_type": "ml.p5.48xlarge", "framework_version": "2.2.0",
                                   "py_version": "py310",
                                   "distribution": {"smdistributed": {"dataparallel": {"enabled": True}}}},
     "both"),
    ("smp-v1-partitions-0", {"framework_version": "1.13.1", "py_version": "py39", "distribution": {
        "smdistributed": {"modelparallel": {"enabled": True, "parameters": {"partitions": 0}}}}}, "both"),
    ("smp-v2-2.3.0-py311", {"distribution": {**TORCHRUN, "smdistributed": {"modelparallel": {
        "enabled": True}}}}, "both"),
    ("pytorchxla", {"distribution": {"pytorchxla": {"enabled": True}}}, "both"),
    ("instance-groups-named", {"distribution": {"instance_groups": ["g1"]}}, "both"),
    ("mpi-processes-per-host-0", {"distribution": {"mpi": {"enabled": True, "processes_per_host": 0}}},
     "ours"),
    ("mpi-processes-per-host-str", {"distribution": {"mpi": {"enabled": True, "processes_per_host": "8"}}},
     "ours"),
    ("two-strategies-mpi-torchrun", {"distribution": {**TORCHRUN, "mpi": {"enabled": True}}}, "ours"),
    ("unknown-strategy-torchrun", {"distribution": {"torchrun": {"enabled": True}}}, "ours"),
    ("unknown-argument-process-per-host", {"distribution": {"mpi": {"enabled": True, "process_per_host": 2}}},
     "ours"),
    ("enabled-as-string", {"distribution": {"torch_distributed": {"enabled": "true"}}}, "ours"),
]


def refusal_configurations() -> list[tuple[str, dict[str, Any]]]:
    base = dict(configurations())["dist-torchrun-2x-p4d"]
    return [(f"refuse-{name}", {k: v for k, v in {**base, **changes}.items() if v is not None})
            for name, changes, _ in REFUSALS]


def ours(cfg: dict[str, Any]) -> dict[str, Any]:
    from airflow_sm_pytorch.builders.training import Session, build_training_plan
    from airflow_sm_pytorch.planning import build_deploy
    from airflow_sm_pytorch.specs import TrainingSpec

    data = dict(cfg)
    kind, cwd = data.pop("kind", "train"), data.pop("cwd", None)
    os.chdir(ROOT / cwd if cwd else ROOT)
    try:
        if kind == "deploy":
            with warnings.catch_warnings():  # the Elastic Inference warning: expected here
                warnings.simplefilter("ignore")
                plan: Any = build_deploy(data)
            out = plan.to_json()
            request = {op: out[op] for op in ("CreateModel", "CreateEndpointConfig", "CreateEndpoint")}
        else:
            session = Session(*(data.pop(k, None) for k in SESSION_KEYS))
            plan = build_training_plan(TrainingSpec.from_dict(data), session, job_name=data["job_name"])
            out = plan.to_json()
            request = out["CreateTrainingJob"]
    finally:
        os.chdir(ROOT)
    return {"request": request,
            "uploads": [{**u, "extra_args": p.extra_args} for u, p in zip(out["uploads"], plan.uploads)]}


def normalised(result: dict[str, Any]) -> dict[str, Any]:
    """Timestamps in generated names (``-2024-01-02-03-04-05-678``) read ``-<ts>``: each side makes its own."""
    return dict(json.loads(TIMESTAMP.sub("-<ts>", json.dumps(result))))


def deploy_configurations() -> list[tuple[str, dict[str, Any]]]:
    """``estimator.deploy`` after ``fit`` and ``PyTorchModel(...).deploy``; names left to each side."""
    session = {"kind": "deploy", "region": "us-west-2", "default_bucket": f"sagemaker-us-west-2-{ACCOUNT}"}
    role = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
    estimator = {"entry_point": "train.py", "source_dir": SRC, "role": role, "instance_type": "ml.p3.2xlarge",
                 "instance_count": 1, "framework_version": "2.3.0", "py_version": "py311",
                 "inputs": {"train": "s3://my-bucket/train"}}
    model = {"model_data": "s3://my-bucket/models/model.tar.gz", "entry_point": "inference.py",
             "source_dir": "tests/fixtures/deploy/byom", "framework_version": "2.3.0", "py_version": "py311",
             "role": role}
    on_g4 = {"initial_instance_count": 1, "instance_type": "ml.g4dn.xlarge"}
    key = f"arn:aws:kms:us-west-2:{ACCOUNT}:key/output-key"
    return [
        ("deploy-trained-job-4.1", {**session, "estimator": estimator, "training_job_name": JOB, "deploy": on_g4}),
        ("deploy-trained-tags-kms-vpc", {**session, "training_job_name": JOB, "estimator": {
            **estimator, "output_kms_key": key, "tags": [{"Key": "team", "Value": "ml"}],
            "subnets": ["subnet-0123456789abcdef0"], "security_group_ids": ["sg-0123456789abcdef0"],
            "dependencies": ["tests/fixtures/deploy/byom/inference.py"]}, "deploy": on_g4}),
        ("deploy-trained-1.1", {**session, "estimator": {**estimator, "framework_version": "1.1.0",
                                                         "py_version": "py3"},
                                "training_job_name": JOB, "deploy": on_g4}),
        ("deploy-pytorch-model", {**session, "model": model, "deploy": on_g4}),
        ("deploy-pytorch-model-named", {**session, "model": {**model, "env": {"FOO": "bar"},
                                                             "model_server_workers": 2,
                                                             "dependencies": [f"{SRC}/utils"]},
                                        "name": "my-model", "deploy": {**on_g4, "endpoint_name": "my-endpoint",
                                                                       "tags": {"team": "ml"}}}),
        ("deploy-serverless", {**session, "model": model, "deploy": {"serverless_inference_config": {}}}),
        ("deploy-pytorch-model-1.1", {**session, "model": {**model, "framework_version": "1.1.0", "py_version": "py3"},
                                      "deploy": {"initial_instance_count": 1, "instance_type": "ml.m5.xlarge"}}),
        ("deploy-eia-data-capture", {**session, "model": {**model, "framework_version": "1.5.1", "py_version": "py3"},
                                     "default_bucket_prefix": "team", "deploy": {
                                         "initial_instance_count": 2, "instance_type": "ml.m5.xlarge",
                                         "accelerator_type": "ml.eia2.medium", "kms_key": key, "volume_size": 40,
                                         "data_capture_config": {"enable_capture": True}}}),
        ("deploy-entry-point-only", {**session, "cwd": "tests/fixtures/deploy/byom", "model": {
            **model, "source_dir": None, "code_location": "s3://code-bkt/prefix"}, "deploy": on_g4}),
    ]


def diff(sdk: Any, us: Any, path: str = "$") -> list[tuple[str, Any, Any]]:
    """[(JSON path, SDK value, our value)] where the two differ; ``<absent>`` for a missing key."""
    if isinstance(sdk, dict) and isinstance(us, dict):
        keys = list(sdk) + [k for k in us if k not in sdk]
        return [d for k in keys for d in diff(sdk.get(k, MISSING), us.get(k, MISSING), f"{path}.{k}")]
    if isinstance(sdk, list) and isinstance(us, list) and len(sdk) == len(us):
        return [d for i, (a, b) in enumerate(zip(sdk, us)) for d in diff(a, b, f"{path}[{i}]")]
    return [] if sdk == us else [(path, sdk, us)]


def compare(sdk: dict[str, Any], us: dict[str, Any]) -> tuple[bool, bool, list[str], list[tuple]]:
    """(request equal, uploads equal, notes, differences)."""
    diffs = diff(sdk["request"], us["request"], "$.request")
    same_order = diffs or json.dumps(sdk["request"]) == json.dumps(us["request"])
    notes = [] if same_order else ["equal, but the key order differs"]
    uploads_ok = len(sdk["uploads"]) == len(us["uploads"])
    if not uploads_ok:
        diffs.append(("$.uploads", [u["uri"] for u in sdk["uploads"]], [u["uri"] for u in us["uploads"]]))
    for i, (a, b) in enumerate(zip(sdk["uploads"], us["uploads"])):
        if "repack_of" in b:  # the SDK's repacked archive also holds "" (its root) and the model's files
            a = {**a, "members": [m for m in a["members"] if m == "code" or m.startswith("code/")]}
        extra = dict(a["extra_args"] or {})
        owner = extra.pop("ExpectedBucketOwner", None)
        if owner is not None:
            notes.append(f"SDK ExpectedBucketOwner={owner} (omitted by us)")
        for field, x, y in (("uri", a["uri"], b["uri"]), ("extra_args", extra, b["extra_args"]),
                            ("members", sorted(a["members"]), sorted(b["members"]))):
            if x != y:
                uploads_ok = False
                diffs.append((f"$.uploads[{i}].{field}", x, y))
    return not diff(sdk["request"], us["request"]), uploads_ok, notes, diffs


def report(meta: dict[str, str], rows: list[tuple[str, str, str, str]], details: list[str]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    line = lambda r: ("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3]).rstrip()  # noqa: E731
    lines = [f"command: .venv/bin/python scripts/sdk_parity.py {' '.join(sys.argv[1:])}",
             f"SDK: sagemaker {meta['version']} (wheel {meta['wheel']}, python {meta['python']}), "
             f"job name {JOB}, STS account {ACCOUNT}", "",
             line(rows[0]), line((*("-" * w for w in widths), "-----"))]
    lines += [line(r) for r in rows[1:]]
    if any("ExpectedBucketOwner" in r[3] for r in rows):
        lines += ["", "ExpectedBucketOwner: the SDK adds it to the sourcedir.tar.gz and repacked model.tar.gz",
                  "uploads only when the bucket is the SDK-generated default bucket (sagemaker/fw_utils.py L482-484, estimator.py",
                  "L1121, Session._get_account_id_if_default_bucket); we leave it out on purpose."]
    return "\n".join(lines + [""] + (details or ["No differences."])) + "\n"


def _first_line(text: str, width: int = 160) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 3] + "..."


def compare_refusals(
    sdk_results: dict[str, Any], refusals: list[tuple[str, dict[str, Any]]]
) -> tuple[list[tuple[str, str, str, str]], list[str], bool]:
    """Each bad input: refused by both (``both``), or deliberately by us only (``ours``: the SDK sends it)."""
    rows = [("bad input", "SDK refuses?", "we refuse?", "expected")]
    details: list[str] = []
    ok = True
    for (name, cfg), (_, _, expect) in zip(refusals, REFUSALS):
        sdk = sdk_results[name]
        try:
            ours(cfg)
            mine = None
        except Exception as exc:  # noqa: BLE001 - reported in the table
            mine = f"{type(exc).__name__}: {exc}"
        sdk_refused = "error" in sdk
        good = mine is not None and sdk_refused == (expect == "both")
        ok &= good
        rows.append((name.removeprefix("refuse-"), "yes" if sdk_refused else "no", "yes" if mine else "NO",
                     expect + ("" if good else "  <-- MISMATCH")))
        said = _first_line(sdk["error"]) if sdk_refused else "accepted"
        details.append(f"{name.removeprefix('refuse-')}:\n  SDK:  {said}\n  ours: "
                       f"{_first_line(mine) if mine else 'accepted'}")
    return rows, details, ok


def refusal_report(rows: list[tuple[str, str, str, str]], details: list[str]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    line = lambda r: ("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3]).rstrip()  # noqa: E731
    head = ["Refusals (distribution): 'both' = the SDK refuses too (messages differ on purpose); 'ours' = a",
            "deliberate extra refusal where the SDK would send a value the container ignores or misreads.", "",
            line(rows[0]), line((*("-" * w for w in widths), "--------"))]
    return "\n".join(head + [line(r) for r in rows[1:]] + [""] + details) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sdk-python", required=True, help="python of a venv with sagemaker==2.257.6")
    parser.add_argument("--out", help="also write the report to this file")
    args = parser.parse_args()
    os.chdir(ROOT)  # configuration paths are relative to the repository root, for both sides
    sys.path.insert(0, str(ROOT))
    configs = configurations() + deploy_configurations()
    refusals = refusal_configurations()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "sdk.json")
        env = {**os.environ, "SAGEMAKER_SUPPRESS_V2_WARNING": "1", "AWS_EC2_METADATA_DISABLED": "true"}
        proc = subprocess.run([args.sdk_python, "-c", SDK_RUNNER, str(out)],
                              input=json.dumps(configs + refusals), text=True, capture_output=True, env=env,
                              cwd=ROOT)
        if proc.returncode != 0 or not out.exists():
            sys.stderr.write(proc.stderr)
            return 2
        sdk_out = json.loads(out.read_text())
    rows = [("configuration", "request equal?", "uploads equal?", "notes")]
    details: list[str] = []
    failed = False
    for name, cfg in configs:
        sdk = sdk_out["results"][name]
        sdk = sdk if "error" in sdk else normalised(sdk)
        try:
            us = normalised(ours(cfg))
        except Exception as exc:  # noqa: BLE001 - reported in the table
            us = {"error": f"{type(exc).__name__}: {exc}"}
        if "error" in sdk or "error" in us:
            failed = True
            errors = f"sdk: {sdk.get('error', 'ok')} | ours: {us.get('error', 'ok')}"
            rows.append((name, "ERROR", "ERROR", errors))
            continue
        req_ok, up_ok, notes, diffs = compare(sdk, us)
        failed |= not (req_ok and up_ok)
        rows.append((name, "yes" if req_ok else "NO", "yes" if up_ok else "NO", "; ".join(notes)))
        if diffs:
            details.append(f"{name}:")
            details += [f"  {p}\n    SDK:  {json.dumps(a)}\n    ours: {json.dumps(b)}" for p, a, b in diffs]
    refused_rows, refused_details, refusals_ok = compare_refusals(sdk_out["results"], refusals)
    failed |= not refusals_ok
    text = report(sdk_out["meta"], rows, details) + "\n" + refusal_report(refused_rows, refused_details)
    sys.stdout.write(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
