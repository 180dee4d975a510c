"""Local endpoint latency: JSON requests over HTTP to the local model server vs an in-process forward call.

One tiny TorchScript model (``Linear(4, 2)``) served by ``python -m airflow_sm_pytorch.local.serving`` with
the default handlers (JSON in, JSON out), measured in the same run against ``model(x)`` on the same model
loaded in this process. Clients are keep-alive ``http.client`` connections, one per thread, spread over
client processes so that the GIL of one client process is not what is measured.

Targets (issue 9, item 7): p50 overhead over the in-process call <= 1 ms; >= 1,000 JSON requests/s at
concurrency 16 on 2 cores (server workers and clients share those cores).

    python bench/endpoint_latency.py [--requests 4000] [--workers 2] [--client-processes 2]
    BENCH_REQUESTS=400 python bench/endpoint_latency.py      # CI-sized
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BODY = json.dumps([[0.5, -1.0, 2.0, 0.25]]).encode()
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def _make_model(path: Path) -> None:
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x)

    torch.manual_seed(0)
    torch.jit.script(Tiny()).save(str(path))


def _start_server(model_dir: Path, status: Path, workers: int, log: Path) -> tuple[subprocess.Popen, int]:
    out = open(log, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "airflow_sm_pytorch.local.serving", "--model-dir",
                             str(model_dir), "--port", "0", "--workers", str(workers), "--status-file",
                             str(status)], stdout=out, stderr=subprocess.STDOUT)
    out.close()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if status.exists():
            state = json.loads(status.read_text())
            if state["status"] == "InService":
                return proc, state["port"]
            if state["status"] == "Failed":
                raise RuntimeError(state["reason"])
        if proc.poll() is not None:
            raise RuntimeError(f"the model server exited with {proc.returncode}; see {log}")
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError("the model server did not become InService within 180 s")


def _client_thread(port: int, count: int, latencies: list[float], errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    clock = time.perf_counter
    for _ in range(count):
        start = clock()
        conn.request("POST", "/invocations", BODY, HEADERS)
        resp = conn.getresponse()
        data = resp.read()
        latencies.append(clock() - start)
        if resp.status != 200:
            errors.append(f"{resp.status} {data[:200]!r}")
    conn.close()


def _client_process(port: int, threads: int, per_thread: int, queue: Any, go: Any) -> None:
    latencies: list[float] = []
    errors: list[str] = []
    pool = [threading.Thread(target=_client_thread, args=(port, per_thread, latencies, errors))
            for _ in range(threads)]
    go.wait()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    queue.put((latencies, errors))


def _http_run(port: int, concurrency: int, requests: int, processes: int) -> dict[str, Any]:
    processes = max(1, min(processes, concurrency))
    per_thread = max(1, requests // concurrency)
    ctx = multiprocessing.get_context("fork")
    queue, go = ctx.Queue(), ctx.Event()
    split = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    procs = [ctx.Process(target=_client_process, args=(port, n, per_thread, queue, go)) for n in split]
    for p in procs:
        p.start()
    time.sleep(0.2)
    start = time.perf_counter()
    go.set()
    latencies: list[float] = []
    errors: list[str] = []
    for _ in procs:
        lat, err = queue.get(timeout=600)
        latencies += lat
        errors += err
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed, first: {errors[0]}")
    return _summary(latencies, wall)


def _in_process(model_path: Path, requests: int) -> dict[str, Any]:
    import torch

    model = torch.jit.load(str(model_path), map_location="cpu").eval()
    x = torch.tensor([[0.5, -1.0, 2.0, 0.25]])
    latencies = []
    clock = time.perf_counter
    with torch.no_grad():
        for _ in range(200):
            model(x)
        start = clock()
        for _ in range(requests):
            t0 = clock()
            model(x)
            latencies.append(clock() - t0)
        wall = clock() - start
    return _summary(latencies, wall)


def _summary(latencies: list[float], wall: float) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {"n": len(ordered), "p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            "rps": len(ordered) / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=int(os.environ.get("BENCH_REQUESTS", "4000")),
                        help="requests per measurement (env BENCH_REQUESTS; default 4000)")
    parser.add_argument("--workers", type=int, default=2, help="model server workers (default 2)")
    parser.add_argument("--client-processes", type=int, default=2,
                        help="client processes sharing the concurrency-16 threads (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model_dir.mkdir()
        _make_model(model_dir / "model.pt")
        server, port = _start_server(model_dir, Path(tmp) / "status.json", args.workers, Path(tmp) / "server.log")
        try:
            _http_run(port, 16, min(args.requests, 800), args.client_processes)  # warm-up
            local = _in_process(model_dir / "model.pt", args.requests)
            c1 = _http_run(port, 1, args.requests, 1)
            c16 = _http_run(port, 16, args.requests, args.client_processes)
        finally:
            server.terminate()
            server.wait(30)
    result = {"cpus": os.cpu_count(), "workers": args.workers, "requests": args.requests,
              "in_process": local, "http_c1": c1, "http_c16": c16,
              "p50_overhead_ms": c1["p50_ms"] - local["p50_ms"],
              "c16_rps": c16["rps"]}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"local endpoint latency ({args.requests} requests each, {args.workers} server workers, "
          f"{os.cpu_count()} CPUs, JSON [[4 floats]] -> Linear(4, 2))")
    print(f"{'':<22}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>12}")
    for name, row in (("in-process forward", local), ("HTTP concurrency 1", c1), ("HTTP concurrency 16", c16)):
        print(f"{name:<22}{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}{row['rps']:>12.0f}")
    overhead = result["p50_overhead_ms"]
    print(f"p50 overhead over the in-process call: {overhead:.3f} ms (target <= 1 ms: "
          f"{'met' if overhead <= 1 else 'MISSED'}); HTTP/in-process p50 ratio {c1['p50_ms'] / local['p50_ms']:.1f}x")
    print(f"throughput at concurrency 16: {c16['rps']:.0f} req/s (target >= 1000: "
          f"{'met' if c16['rps'] >= 1000 else 'MISSED'}); in-process/HTTP ratio {local['rps'] / c16['rps']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
