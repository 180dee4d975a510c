"""The training-container contract (containers.md §1-§3), checked against the toolkit's exact formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_sm_pytorch.local.training import contract

pytestmark = pytest.mark.fast  # the quick lane: scripts/test.sh -m fast

# containers.md §2.1: the 37 keys of SM_TRAINING_ENV [SIM]
TRAINING_ENV_KEYS = sorted(
    [
        "additional_framework_parameters",
        "channel_input_dirs",
        "current_host",
        "current_instance_group",
        "current_instance_group_hosts",
        "current_instance_type",
        "distribution_hosts",
        "distribution_instance_groups",
        "framework_module",
        "hosts",
        "hyperparameters",
        "input_config_dir",
        "input_data_config",
        "input_dir",
        "instance_groups",
        "instance_groups_dict",
        "is_hetero",
        "is_master",
        "is_modelparallel_enabled",
        "is_smddpmprun_installed",
        "is_smddprun_installed",
        "job_name",
        "log_level",
        "master_hostname",
        "model_dir",
        "module_dir",
        "module_name",
        "network_interface_name",
        "num_cpus",
        "num_gpus",
        "num_neurons",
        "output_data_dir",
        "output_dir",
        "output_intermediate_dir",
        "resource_config",
        "topology",
        "user_entry_point",
    ]
)

SDK_HPS = {  # §1.3, as the SDK sends them
    "batch-size": "256",
    "lr": "0.001",
    "use_amp": "true",
    "name": '"resnet"',
    "layers": "[1, 2, 3]",
    "opt": '{"name": "adam", "beta": 0.9}',
    "nullval": "null",
    "raw": "hello world",
    "x": "5",
    "flag": "false",
    "mp_parameters": '{"partitions": 2}',
    "sagemaker_program": '"train.py"',
    "sagemaker_submit_directory": '"s3://bucket/job/source/sourcedir.tar.gz"',
    "sagemaker_container_log_level": "20",
    "sagemaker_job_name": '"job-name"',
    "sagemaker_region": '"us-west-2"',
    "sagemaker_instance_type": '"ml.p4d.24xlarge"',
    "sagemaker_torch_distributed_enabled": "true",
    "_tuning_objective_metric": '"loss"',
}


def test_decode_falls_back_to_the_raw_string():
    hps = contract.decode_hyperparameters(
        {"a": "1", "b": '"s"', "c": "hello world", "d": "[1, 2]", "e": "null"}
    )
    assert hps == {"a": 1, "b": "s", "c": "hello world", "d": [1, 2], "e": None}


def test_split_reserved_prefixed_and_user_keys():
    user, framework, sm = contract.split_hyperparameters(contract.decode_hyperparameters(SDK_HPS))
    assert "mp_parameters" in user and "_tuning_objective_metric" not in user
    assert framework == {
        "sagemaker_instance_type": "ml.p4d.24xlarge",
        "sagemaker_torch_distributed_enabled": True,
    }
    assert sm["sagemaker_program"] == "train.py" and "_tuning_objective_metric" in sm
    assert not any(k.startswith("sagemaker_") for k in user)


def test_to_cmd_args_matches_the_toolkit_sim_output():
    user, _, _ = contract.split_hyperparameters(contract.decode_hyperparameters(SDK_HPS))
    user.pop("mp_parameters")
    assert contract.to_cmd_args(user) == [
        "--batch-size",
        "256",
        "--flag",
        "False",
        "--layers",
        "[1, 2, 3]",
        "--lr",
        "0.001",
        "--name",
        "resnet",
        "--nullval",
        "",
        "--opt",
        "beta=0.9,name=adam",
        "--raw",
        "hello world",
        "--use_amp",
        "True",
        "-x",
        "5",
    ]


def test_to_cmd_args_brief_example():
    hps = contract.decode_hyperparameters({"epochs": "2", "lr": "0.01", "name": '"a b"', "flag": "true"})
    assert contract.to_cmd_args(hps) == ["--epochs", "2", "--flag", "True", "--lr", "0.01", "--name", "a b"]


def test_to_cmd_args_lists_and_nested_values_use_python_str():
    assert contract.to_cmd_args({"l": [1, "x"], "d": {"k": [1, 2], "n": None}}) == [
        "-d",
        "k=[1, 2],n=None",
        "-l",
        "[1, 'x']",
    ]


def test_format_env_value():
    f = contract.format_env_value
    assert (f("s"), f(None), f(True), f(20), f([1, 2, 3]), f({"b": 0.9, "a": "x"}), f(b"\xe9")) == (
        "s",
        "",
        "true",
        "20",
        "[1,2,3]",
        '{"a":"x","b":0.9}',
        "\xe9",
    )


def test_resource_and_input_data_config_shapes():
    assert contract.resource_config("ml.m5.xlarge") == {
        "current_host": "algo-1",
        "current_instance_type": "ml.m5.xlarge",
        "current_group_name": "homogeneousCluster",
        "hosts": ["algo-1"],
        "instance_groups": [
            {
                "instance_group_name": "homogeneousCluster",
                "instance_type": "ml.m5.xlarge",
                "hosts": ["algo-1"],
            }
        ],
        "network_interface_name": "lo",
    }
    channels = [
        {
            "ChannelName": "training",
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": "s3://b/t",
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
        },
        {
            "ChannelName": "testing",
            "ContentType": "text/csv",
            "InputMode": "FastFile",
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": "s3://b/x",
                    "S3DataDistributionType": "ShardedByS3Key",
                }
            },
        },
        {
            "ChannelName": "local",
            "DataSource": {
                "FileDataSource": {"FileDataDistributionType": "FullyReplicated", "FileUri": "file:///tmp"}
            },
        },
    ]
    assert contract.input_data_config(channels) == {
        "training": {
            "RecordWrapperType": "None",
            "S3DistributionType": "FullyReplicated",
            "TrainingInputMode": "File",
        },
        "testing": {
            "ContentType": "text/csv",
            "RecordWrapperType": "None",
            "S3DistributionType": "ShardedByS3Key",
            "TrainingInputMode": "File",
        },
        "local": {
            "RecordWrapperType": "None",
            "S3DistributionType": "FullyReplicated",
            "TrainingInputMode": "File",
        },
    }


def _env(tmp_path: Path, hps=SDK_HPS, environment=None, channels=("training", "my-data")) -> dict[str, str]:
    paths = contract.JobPaths.for_job(tmp_path / "job")
    idc = {
        ch: {
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        }
        for ch in channels
    }
    return contract.training_env(
        paths=paths,
        hyperparameters=contract.decode_hyperparameters(hps),
        resource_config=contract.resource_config("ml.p4d.24xlarge"),
        input_data_config=idc,
        job_name="job-name",
        environment=environment,
        region=None,
        cpus=8,
        gpus=2,
        neurons=0,
        torch="2.13.0+cpu",
        base_pythonpath="/extra",
    )


def test_training_env_every_variable_and_format(tmp_path):
    env = _env(tmp_path)
    base = str((tmp_path / "job" / "opt" / "ml").resolve())
    expected = {
        "SM_HOSTS": '["algo-1"]',
        "SM_NETWORK_INTERFACE_NAME": "lo",
        "SM_HPS": '{"batch-size":256,"flag":false,"layers":[1,2,3],"lr":0.001,'
        '"mp_parameters":{"partitions":2},'
        '"name":"resnet","nullval":null,"opt":{"beta":0.9,"name":"adam"},"raw":"hello world",'
        '"use_amp":true,"x":5}',
        "SM_USER_ENTRY_POINT": "train.py",
        "SM_FRAMEWORK_PARAMS": '{"sagemaker_instance_type":"ml.p4d.24xlarge",'
        '"sagemaker_torch_distributed_enabled":true}',
        "SM_OUTPUT_DATA_DIR": f"{base}/output/data",
        "SM_CHANNELS": '["my-data","training"]',
        "SM_CURRENT_HOST": "algo-1",
        "SM_CURRENT_INSTANCE_TYPE": "ml.p4d.24xlarge",
        "SM_CURRENT_INSTANCE_GROUP": "homogeneousCluster",
        "SM_CURRENT_INSTANCE_GROUP_HOSTS": '["algo-1"]',
        "SM_INSTANCE_GROUPS": '["homogeneousCluster"]',
        "SM_INSTANCE_GROUPS_DICT": '{"homogeneousCluster":{"hosts":["algo-1"],"instance_group_name":'
        '"homogeneousCluster","instance_type":"ml.p4d.24xlarge"}}',
        "SM_DISTRIBUTION_INSTANCE_GROUPS": '["homogeneousCluster"]',
        "SM_IS_HETERO": "false",
        "SM_MODULE_NAME": "train",
        "SM_LOG_LEVEL": "20",
        "SM_FRAMEWORK_MODULE": "sagemaker_pytorch_container.training:main",
        "SM_INPUT_DIR": f"{base}/input",
        "SM_INPUT_CONFIG_DIR": f"{base}/input/config",
        "SM_OUTPUT_DIR": f"{base}/output",
        "SM_NUM_CPUS": "8",
        "SM_NUM_GPUS": "2",
        "SM_NUM_NEURONS": "0",
        "SM_MODEL_DIR": f"{base}/model",
        "SM_MODULE_DIR": "s3://bucket/job/source/sourcedir.tar.gz",
        "SM_USER_ARGS": '["--batch-size","256","--flag","False","--layers","[1, 2, 3]","--lr","0.001",'
        '"--mp_parameters","partitions=2","--name","resnet","--nullval","","--opt",'
        '"beta=0.9,name=adam","--raw","hello world","--use_amp","True","-x","5"]',
        "SM_OUTPUT_INTERMEDIATE_DIR": f"{base}/output/intermediate",
        "SM_CHANNEL_TRAINING": f"{base}/input/data/training",
        "SM_CHANNEL_MY-DATA": f"{base}/input/data/my-data",
        "SM_HP_BATCH-SIZE": "256",
        "SM_HP_LR": "0.001",
        "SM_HP_USE_AMP": "true",
        "SM_HP_NAME": "resnet",
        "SM_HP_LAYERS": "[1,2,3]",
        "SM_HP_OPT": '{"beta":0.9,"name":"adam"}',
        "SM_HP_NULLVAL": "",
        "SM_HP_RAW": "hello world",
        "SM_HP_X": "5",
        "SM_HP_FLAG": "false",
        "SM_HP_MP_PARAMETERS": '{"partitions":2}',
        # §2.2
        "SAGEMAKER_JOB_NAME": "job-name",
        "CURRENT_HOST": "algo-1",
        "SAGEMAKER_REGION": "us-west-2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "7777",
        "NCCL_SOCKET_IFNAME": "lo",
        "NCCL_IB_DISABLE": "1",
        "NCCL_DEBUG": "WARN",
        "SM_DLC_TORCH_VERSION": "2.13.0+cpu",
        "TRAINING_JOB_NAME": "job-name",
        "AWS_REGION": "us-west-2",
        "SAGEMAKER_BASE_DIR": base,
        "PYTHONPATH": f"{base}/code:/extra",
    }
    for key, value in expected.items():
        assert env[key] == value, key
    assert set(env) - set(expected) == {"SM_RESOURCE_CONFIG", "SM_INPUT_DATA_CONFIG", "SM_TRAINING_ENV"}
    assert json.loads(env["SM_RESOURCE_CONFIG"]) == contract.resource_config("ml.p4d.24xlarge")
    assert env["SM_RESOURCE_CONFIG"] == json.dumps(
        json.loads(env["SM_RESOURCE_CONFIG"]), sort_keys=True, separators=(",", ":")
    )
    assert sorted(json.loads(env["SM_INPUT_DATA_CONFIG"])) == ["my-data", "training"]


def test_training_env_json_has_the_37_keys(tmp_path):
    te = json.loads(_env(tmp_path)["SM_TRAINING_ENV"])
    assert sorted(te) == TRAINING_ENV_KEYS and len(te) == 37
    assert te["master_hostname"] == "algo-1" and te["is_master"] is True
    assert te["distribution_hosts"] == ["algo-1"] and te["job_name"] == "job-name"
    assert te["is_modelparallel_enabled"] is None and te["topology"] is None
    assert te["hyperparameters"]["name"] == "resnet" and "sagemaker_program" not in te["hyperparameters"]
    assert te["channel_input_dirs"]["training"].endswith("/opt/ml/input/data/training")


def test_no_distribution_flag_means_no_distribution_groups(tmp_path):
    env = _env(tmp_path, hps={"sagemaker_program": '"train.py"'}, channels=())
    assert env["SM_DISTRIBUTION_INSTANCE_GROUPS"] == "[]" and env["SM_CHANNELS"] == "[]"
    te = json.loads(env["SM_TRAINING_ENV"])
    assert te["distribution_hosts"] == [] and te["master_hostname"] == "algo-1"
    assert (
        env["SM_MODULE_DIR"].endswith("/opt/ml/code")
        and env["SM_HPS"] == "{}"
        and env["SM_USER_ARGS"] == "[]"
    )
    assert env["SAGEMAKER_JOB_NAME"] == "" and env["SAGEMAKER_REGION"] == "" and "AWS_REGION" not in env


def test_environment_overrides_program_and_module(tmp_path):
    env = _env(
        tmp_path,
        environment={
            "SAGEMAKER_PROGRAM": "other.py",
            "SAGEMAKER_TRAINING_MODULE": "m:main",
            "SM_HP_MP_PARAMETERS": '{"a":1}',
        },
    )
    assert env["SM_USER_ENTRY_POINT"] == "other.py" and env["SM_MODULE_NAME"] == "other"
    assert env["SM_FRAMEWORK_MODULE"] == "m:main"
    assert json.loads(env["SM_TRAINING_ENV"])["is_modelparallel_enabled"] is True


def test_missing_program_gives_the_toolkits_none_module_name(tmp_path):
    env = _env(tmp_path, hps={})
    assert env["SM_USER_ENTRY_POINT"] == "" and env["SM_MODULE_NAME"] == "None"


def test_entry_point_type(tmp_path):
    assert contract.entry_point_type(tmp_path, "run.sh") == "COMMAND"
    assert contract.entry_point_type(tmp_path, "train.py") == "PYTHON_PROGRAM"
    assert contract.entry_point_type(tmp_path, "train") == "COMMAND"
    (tmp_path / "setup.py").write_text("")
    assert contract.entry_point_type(tmp_path, "train.py") == "PYTHON_PACKAGE"
    assert contract.entry_point_type(tmp_path, "run.sh") == "COMMAND"


def test_job_paths_and_local_path_mapping(tmp_path):
    paths = contract.JobPaths.for_job(tmp_path)
    paths.create()
    for sub in ("code", "model", "input/config", "input/data", "output/data", "output/intermediate"):
        assert (tmp_path / "opt/ml" / sub).is_dir()
    assert paths.local_path("/opt/ml/checkpoints") == tmp_path.resolve() / "opt/ml/checkpoints"
    assert paths.local_path("/tmp/ckpt") == tmp_path.resolve() / "tmp/ckpt"
    with pytest.raises(ValueError):
        paths.local_path("/opt/../../etc")


def test_hardware_probes_are_true_and_torch_version_needs_no_import():
    import os
    import shutil
    import subprocess
    import sys

    assert contract.num_cpus() == os.cpu_count()
    if shutil.which("nvidia-smi") is None:
        assert contract.num_gpus() == 0
    code = (
        "import sys; from airflow_sm_pytorch.local.training import contract; v = contract.torch_version(); "
        "print(v, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[1] == "False" and out[0].startswith("2.")


def _fake_tool(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)


def test_gpu_and_neuron_counts_come_from_the_tools(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert contract.num_gpus() == 0 and contract.num_neurons() == 0  # tools absent
    gpus = 'echo "GPU 0: NVIDIA H200 (UUID: GPU-a)"\necho "GPU 1: NVIDIA H200 (UUID: GPU-b)"\necho "junk"\n'
    _fake_tool(tmp_path / "bin", "nvidia-smi", gpus)
    _fake_tool(tmp_path / "bin", "neuron-ls", "echo '[{\"nc_count\": 2}, {\"nc_count\": 2}]'\n")
    assert contract.num_gpus() == 2 and contract.num_neurons() == 4
    _fake_tool(tmp_path / "bin", "nvidia-smi", "echo 'NVIDIA-SMI has failed'; exit 9\n")
    _fake_tool(tmp_path / "bin", "neuron-ls", "echo not-json\n")
    assert contract.num_gpus() == 0 and contract.num_neurons() == 0
