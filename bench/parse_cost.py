"""DAG-parse cost: importing our operator in a process that imports Airflow anyway.

Each variant runs in fresh interpreters, interleaved, and the medians are compared in the same run:
  baseline  import airflow (what every DAG file pays)
  ours      + from airflow_sm_pytorch import PyTorchTrainOperator
  amazon    + from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator
Target: ours / baseline <= 1.05.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

VARIANTS = {
    "baseline": "import airflow",
    "ours": "import airflow\nfrom airflow_sm_pytorch.operators.train import PyTorchTrainOperator",
    "amazon": "import airflow\nfrom airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator",
}


def _once(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def run(repeats: int = 7) -> dict[str, float]:
    for code in VARIANTS.values():  # warm the file cache once
        _once(code)
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name, code in VARIANTS.items():
            samples[name].append(_once(code))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["baseline"]
    print(f"parse cost, median of {repeats} fresh interpreters:")
    for name, value in medians.items():
        print(f"  {name:9s} {value:6.3f} s   {value / base:5.3f}x baseline")
    ratio = medians["ours"] / base
    print(f"  ours/baseline = {ratio:.3f} (target <= 1.05): {'PASS' if ratio <= 1.05 else 'FAIL'}")
    print(f"  ours/amazon   = {medians['ours'] / medians['amazon']:.3f}")
    return {"ours_vs_baseline": ratio, "ours_vs_amazon": medians["ours"] / medians["amazon"]}


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
