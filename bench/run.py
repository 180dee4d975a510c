"""Every benchmark, one command: ``.venv/bin/python bench/run.py``. Ratios are measured in the same run.

``BENCH_REPACK_MB`` sizes the repack archives (default 1024), ``BENCH_REQUESTS`` the endpoint runs
(default 4000), ``BENCH_DEFERRED_JOBS`` the deferred jobs one triggerer watches (default 500, as many as
fit in ``BENCH_DEFERRED_MEM_GB``, default 6; see bench/deferred.py). The exit code gates what does not
depend on the machine's other load: parse cost, local job overhead, the repack's peak memory and output,
and the deferred trigger's failures and calls per interval; speed ratios are printed with their targets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import deferred  # noqa: E402
import distributed  # noqa: E402
import local_overhead  # noqa: E402
import parse_cost  # noqa: E402
import repack  # noqa: E402


def endpoint_latency() -> dict:
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("endpoint_latency.py")), "--json"],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"endpoint: p50 overhead {result['p50_overhead_ms']:.3f} ms over an in-process call (target <= 1), "
          f"{result['c16_rps']:.0f} req/s at concurrency 16 (target >= 1000)")
    return result


if __name__ == "__main__":
    size = int(os.environ.get("BENCH_REPACK_MB", "1024"))
    results = {
        "parse_cost": parse_cost.run(),
        "local_overhead": local_overhead.run(),
        "repack_weights": repack.run(size_mb=size, data_kind="weights"),
        "repack_random": repack.run(size_mb=size, data_kind="random"),
        "endpoint": endpoint_latency(),
        "distributed": distributed.run(),
        "deferred": deferred.run(),
    }
    for kind in ("repack_weights", "repack_random"):
        r = results[kind]
        print(f"{kind}: {r['ratio']}x faster than an SDK-style extract + re-tar (target >= 10), "
              f"peak RSS {r['ours_peak_rss_mb']} MB (target < 200)")
    ok = (results["parse_cost"]["ours_vs_baseline"] <= 1.05 and results["local_overhead"]["overhead_s"] <= 0.5
          and all(results[k]["ours_peak_rss_mb"] < 200 and results[k]["same_members"]
                  for k in ("repack_weights", "repack_random"))
          and deferred.passed(results["deferred"]))
    sys.exit(0 if ok else 1)
