"""Off-CI check of the local runtime's GPU paths, for a machine with a CUDA GPU (the device tool).

Runs, without Airflow or AWS, what only a GPU can show:

1. ``contract.num_gpus()`` counts the GPUs (``SM_NUM_GPUS``);
2. a ``local_gpu`` training job through ``run_training_job``: the script sees CUDA and ``SM_NUM_GPUS``,
   trains on the GPU and saves a TorchScript model;
3. a ``torch_distributed`` job: torchrun starts one process per GPU, and NCCL all-reduces on the GPU;
4. the model server with the default handlers: ``model_fn`` loads the model onto CUDA and a JSON
   invocation answers what the CPU computes.

Usage: ``python scripts/device_check.py OUT_DIR`` (needs torch with CUDA, psutil, numpy, starlette,
uvicorn). Writes ``OUT_DIR/device.json`` and exits non-zero when a check fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path

TRAIN = """\
import os, torch
assert torch.cuda.is_available(), "no CUDA"
print("SM_NUM_GPUS", os.environ["SM_NUM_GPUS"], "device", torch.cuda.get_device_name(0), flush=True)
torch.manual_seed(0)
x = torch.randn(256, 4, device="cuda"); y = x @ torch.tensor([[1.0], [2.0], [-1.0], [0.5]], device="cuda")
model = torch.nn.Linear(4, 1).cuda(); opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(200):
    opt.zero_grad(); loss = ((model(x) - y) ** 2).mean(); loss.backward(); opt.step()
print(f"loss={loss.item():.6f}", flush=True)
torch.jit.script(model.cpu()).save(os.path.join(os.environ["SM_MODEL_DIR"], "model.pt"))
"""
DIST = """\
import os, torch, torch.distributed as dist
dist.init_process_group("nccl")
rank, world = dist.get_rank(), dist.get_world_size()
torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
t = torch.ones(1, device="cuda") * (rank + 1)
dist.all_reduce(t)
print(f"rank={rank} world={world} allreduce={t.item()} backend={dist.get_backend()}", flush=True)
dist.destroy_process_group()
"""


def _job(work: Path, name: str, script: str, extra: dict[str, str]):
    from airflow_sm_pytorch.local.training.runner import JobEvents, run_training_job
    from airflow_sm_pytorch.storage import Storage

    code = work / f"{name}-src"
    code.mkdir()
    (code / "train.py").write_text(script)
    lines: list[str] = []
    request = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": "local", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::000000000000:role/x",
        "HyperParameters": {"sagemaker_program": json.dumps("train.py"),
                            "sagemaker_submit_directory": json.dumps(code.as_uri()), **extra},
        "OutputDataConfig": {"S3OutputPath": (work / "out").as_uri()},
        "ResourceConfig": {"InstanceType": "local_gpu", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    events = JobEvents(log=lambda host, line, ts: lines.append(line), status=lambda s, m: None,
                       stop_requested=lambda: False)
    result = run_training_job(request, work / name, events, storage=Storage(), cache_dir=work / "venvs")
    return result, lines


def _serve(work: Path, model_tar: Path) -> dict:
    model_dir = work / "serve" / "model"
    model_dir.mkdir(parents=True)
    with tarfile.open(model_tar) as tar:
        tar.extractall(model_dir, filter="data")
    status = work / "serve" / "status.json"
    proc = subprocess.Popen([sys.executable, "-m", "airflow_sm_pytorch.local.serving", "--model-dir", str(model_dir),
                             "--port", "0", "--status-file", str(status)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        state: dict = {}
        while time.monotonic() < deadline:
            try:
                state = json.loads(status.read_text())
            except (OSError, ValueError):
                state = {}
            if state.get("status") in ("InService", "Failed"):
                break
            time.sleep(0.2)
        if state.get("status") != "InService":
            raise RuntimeError(f"model server: {state}")
        body = json.dumps([[1.0, 1.0, 1.0, 1.0]]).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{state['port']}/invocations", data=body,
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            answer = json.loads(resp.read())
        import torch

        cpu = torch.jit.load(str(model_dir / "model.pt"))(torch.ones(1, 4)).tolist()
        return {"answer": answer, "cpu": cpu, "match": abs(answer[0][0] - cpu[0][0]) < 1e-4}
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        (work / "serve" / "server.log").write_text(out)


def main(out_dir: str) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checks = [
            ("num_gpus", lambda: __import__("airflow_sm_pytorch.local.training.contract",
                                            fromlist=["num_gpus"]).num_gpus()),
            ("train_local_gpu", lambda: _job(work, "gpu-train", TRAIN, {})),
            ("torch_distributed", lambda: _job(work, "gpu-dist", DIST,
                                               {"sagemaker_torch_distributed_enabled": "true"})),
        ]
        for name, check in checks:
            started = time.monotonic()
            try:
                value = check()
                if isinstance(value, tuple):
                    result, lines = value
                    value = {"status": result.status, "reason": result.failure_reason, "tail": lines[-8:]}
                    ok &= result.status == "Completed"
                report[name] = {"value": value, "seconds": round(time.monotonic() - started, 2)}
            except Exception:  # noqa: BLE001 - report every check
                ok = False
                report[name] = {"error": traceback.format_exc()}
        model = work / "out" / "gpu-train" / "output" / "model.tar.gz"
        try:
            report["serve_default_handler_on_cuda"] = _serve(work, model)
            ok &= report["serve_default_handler_on_cuda"]["match"]
            log = (work / "serve" / "server.log").read_text()
            report["server_log_tail"] = log.splitlines()[-15:]
        except Exception:  # noqa: BLE001
            ok = False
            report["serve_default_handler_on_cuda"] = {"error": traceback.format_exc()}
    report["ok"] = ok
    (out / "device.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT", "device-out")))
