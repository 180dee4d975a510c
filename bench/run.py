"""Every benchmark, one command: ``.venv/bin/python bench/run.py``. Ratios are measured in the same run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import local_overhead  # noqa: E402
import parse_cost  # noqa: E402

if __name__ == "__main__":
    results = {"parse_cost": parse_cost.run(), "local_overhead": local_overhead.run()}
    ok = results["parse_cost"]["ours_vs_baseline"] <= 1.05 and results["local_overhead"]["overhead_s"] <= 0.5
    sys.exit(0 if ok else 1)
