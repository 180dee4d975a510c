"""Local job overhead: CreateTrainingJob to the script's first line, versus ``python train.py`` directly.

Both are measured in the same run, median of N, against a local runtime started for the benchmark.
The script's first statement records ``time.time()``; the clock starts just before the
CreateTrainingJob call (runtime) or just before ``Popen`` (direct). Target: overhead <= 0.5 s.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

SCRIPT = "import time, os\nopen(os.environ['STAMP'], 'w').write(repr(time.time()))\n"


def _wait_for(path: Path, timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return float(path.read_text())
        time.sleep(0.002)
    raise TimeoutError(path)


def _start_server(root: Path) -> tuple[subprocess.Popen, str]:
    # the runtime's keys through the environment, as the hook's autostart gives them; outputs under root
    env = {**os.environ, "SM_PYTORCH_LOCAL_ACCESS_KEY_ID": "x", "SM_PYTORCH_LOCAL_SECRET_ACCESS_KEY": "x"}
    proc = subprocess.Popen([sys.executable, "-m", "airflow_sm_pytorch.local", "--port", "0", "--root",
                             str(root), "--allow-path", str(root.parent)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    return proc, line.split(" listening on ", 1)[1].split(" ", 1)[0]


def run(repeats: int = 10) -> dict[str, float]:
    import boto3

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        code = tmp_path / "code"
        code.mkdir()
        (code / "train.py").write_text(SCRIPT)
        archive = tmp_path / "sourcedir.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(code / "train.py", arcname="train.py")
        server, url = _start_server(tmp_path / "root")
        sm = boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
        direct, runtime = [], []
        try:
            for i in range(repeats):
                stamp = tmp_path / f"direct-{i}"
                start = time.time()
                subprocess.run([sys.executable, str(code / "train.py")], env={**os.environ, "STAMP": str(stamp)},
                               check=True)
                direct.append(_wait_for(stamp) - start)

                stamp = tmp_path / f"job-{i}"
                request = {
                    "TrainingJobName": f"bench-{i}",
                    "AlgorithmSpecification": {"TrainingImage": "local", "TrainingInputMode": "File"},
                    "RoleArn": "arn:aws:iam::000000000000:role/bench",
                    "OutputDataConfig": {"S3OutputPath": (tmp_path / "out").as_uri()},
                    "ResourceConfig": {"InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 1},
                    "StoppingCondition": {"MaxRuntimeInSeconds": 600},
                    "HyperParameters": {"sagemaker_program": json.dumps("train.py"),
                                        "sagemaker_submit_directory": json.dumps(archive.as_uri())},
                    "Environment": {"STAMP": str(stamp)},
                }
                start = time.time()
                sm.create_training_job(**request)
                runtime.append(_wait_for(stamp) - start)
        finally:
            server.terminate()
            server.wait(timeout=30)
    d, r = statistics.median(direct), statistics.median(runtime)
    print(f"local job overhead, median of {repeats}:")
    print(f"  python train.py directly        {d:6.3f} s to the first line")
    print(f"  CreateTrainingJob on the runtime {r:6.3f} s to the first line   ({r / d:4.1f}x direct)")
    print(f"  overhead {r - d:.3f} s (target <= 0.5 s): {'PASS' if r - d <= 0.5 else 'FAIL'}")
    return {"direct_s": d, "runtime_s": r, "overhead_s": r - d}


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
