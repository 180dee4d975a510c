"""A two-host local torchrun job versus a plain ``torchrun --nnodes 1 --nproc_per_node 2``, same script.

The script is the distributed example's (``dags/code/train_ddp.py``: DDP over gloo, 2 ranks). Measured:

* wall time of the whole local job (``run_training_job``: staging, two hosts' torchrun launchers, upload)
  against the plain torchrun of the same script (target: ratio <= 1.3);
* time from the start of the job to each rank's first line (``rank k/2 on algo-*``).

Usage: ``.venv/bin/python bench/distributed.py [--epochs N] [--repeats N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ROOT / "dags" / "code"
SCRIPT = CODE / "train_ddp.py"


def _plain(work: Path, epochs: int) -> float:
    env = {**os.environ, "SM_HP_EPOCHS": str(epochs), "SM_MODEL_DIR": str(work / "plain-model")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                    str(SCRIPT)], check=True, env=env, cwd=CODE, capture_output=True)
    return time.perf_counter() - start


def _local_job(work: Path, name: str, epochs: int) -> tuple[float, list[float]]:
    sys.path.insert(0, str(ROOT))
    from airflow_sm_pytorch.local.training.runner import JobEvents, run_training_job
    from airflow_sm_pytorch.storage import Storage

    code = CODE  # train_ddp.py imports the example's Net and dataset from beside it
    request = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": "local", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::000000000000:role/x",
        "HyperParameters": {"sagemaker_program": json.dumps("train_ddp.py"),
                            "sagemaker_submit_directory": json.dumps(code.as_uri()),
                            "sagemaker_torch_distributed_enabled": "true", "epochs": str(epochs)},
        "OutputDataConfig": {"S3OutputPath": (work / "out").as_uri()},
        "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    firsts: list[float] = []
    start = time.perf_counter()

    def log(host: str, line: str, ts: int) -> None:
        if line.startswith("rank ") and "/2 on " in line:
            firsts.append(time.perf_counter() - start)

    events = JobEvents(log=log, status=lambda s, m: None, stop_requested=lambda: False)
    result = run_training_job(request, work / name, events, storage=Storage(), cache_dir=work / "venvs")
    wall = time.perf_counter() - start
    if result.status != "Completed":
        raise RuntimeError(result.failure_reason)
    return wall, firsts


def run(epochs: int = 3, repeats: int = 3) -> dict:
    plain, local, firsts = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _plain(work, 1)  # warm the file cache
        for i in range(repeats):
            plain.append(_plain(work, epochs))
            wall, first = _local_job(work, f"bench-ddp-{i}", epochs)
            local.append(wall)
            firsts.append(max(first) if first else float("nan"))
    result = {"epochs": epochs, "repeats": repeats, "plain_torchrun_s": round(statistics.median(plain), 3),
              "two_host_job_s": round(statistics.median(local), 3),
              "ratio": round(statistics.median(local) / statistics.median(plain), 3),
              "start_to_every_rank_first_line_s": round(statistics.median(firsts), 3)}
    print(f"distributed: two-host local torchrun job {result['two_host_job_s']} s vs plain torchrun "
          f"--nnodes 1 --nproc_per_node 2 {result['plain_torchrun_s']} s = {result['ratio']}x "
          "(target <= 1.3); "
          f"job start to every rank's first line {result['start_to_every_rank_first_line_s']} s "
          f"(median of {repeats})")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = run(args.epochs, args.repeats)
    if args.json:
        print(json.dumps(out))
