"""One triggerer watching N concurrent deferred training jobs on the local runtime, against a naive baseline.

Both variants run in the same run, at the same time, over the same real local training jobs (scripts that
sleep), each in a process of its own that stands for one triggerer:

* **ours** -- ``SageMakerPyTorchTrigger.run()`` for every job: one aiobotocore client shared by every
  trigger of the connection and region, one DescribeTrainingJob per job per poll interval;
* **naive** -- the Amazon provider's ``SageMakerTrigger`` for every job: a hook, a session and a client of
  its own per trigger, its waiter polling DescribeTrainingJob once per interval.

"One triggerer" is one process with one asyncio loop running one task per trigger the way Airflow's
``TriggerRunner.run_trigger`` does (``greenback.ensure_portal()``, then ``async for event in
trigger.run()``), built from the trigger's kwargs as the triggerer builds it. Airflow's ``TriggerRunner``
itself is not used: it needs its supervisor, the metadata database and the API server.

Measured, per variant: the triggerer's RSS before any trigger exists and after every trigger has polled
(kilobytes per job), its CPU (user + sys) while waiting (ms per job per minute) and to start every trigger,
and, server side, every DescribeTrainingJob it sent (a counting reverse proxy on loopback sits between
each triggerer and the runtime): calls per job per minute in the measurement window, calls per job per
interval (the interval over the mean gap between one job's consecutive calls) and the shortest such gap.
Failures: a trigger that fired before the jobs were stopped, one that did not fire for its job's Stopped
state after the jobs were stopped, an HTTP error answer, a retried call. Targets: 0 failures, <= 1 call
per job per interval, memory per job in kilobytes.

Scale: every local job is a supervisor process plus the script's process (about 20 MB of PSS each on
this machine). The jobs are started in batches; after each batch the runtime's process tree is measured
and no more are started once the next batch would take the tree past ``BENCH_DEFERRED_MEM_GB`` (default
6) or half the memory then available, so N is the largest count that fits, and the output says so.
Every job is stopped (StopTrainingJob) and the runtime shut down at the end, on an error and on Ctrl-C.

Knobs: ``BENCH_DEFERRED_JOBS`` (default 500), ``BENCH_DEFERRED_MEM_GB`` (6), ``BENCH_DEFERRED_INTERVAL``
(poll interval, 10 s), ``BENCH_DEFERRED_SECONDS`` (measurement window, 40 s).
Usage: ``.venv/bin/python bench/deferred.py [--jobs N] [--interval S] [--seconds S] [--mem-gb G] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench"  # the runtime's access key id and secret (through its environment, as the hook's autostart)
SCRIPT = b"import time\nprint('sleeping', flush=True)\ntime.sleep(1800)\n"
DESCRIBE = "SageMaker.DescribeTrainingJob"
VARIANTS = {"ours": "SageMakerPyTorchTrigger (one shared client)",
            "naive": "Amazon provider SageMakerTrigger (own hook/session/client per job)"}


# ---------------------------------------------------------------- the triggerer (a child process)
def _trigger(variant: str, name: str, conn: str, interval: float) -> Any:
    if variant == "ours":
        from airflow_sm_pytorch.triggers.sagemaker_pytorch import SageMakerPyTorchTrigger

        # as PyTorchTrainOperator(deferrable=True) defers (the carry the task gets back on resume)
        return SageMakerPyTorchTrigger(kind="TrainingJob", name=name, aws_conn_id=conn, poll_interval=interval,
                                       stop_on_kill=True,
                                       carry={"job_name": name, "created": True, "log_tokens": None})
    from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger

    return SageMakerTrigger(job_name=name, job_type="training", waiter_delay=int(interval),
                            waiter_max_attempts=10**6, aws_conn_id=conn)


async def _triggerer(variant: str, conn: str, names: list[str], interval: float) -> None:
    """Wait for "go" on stdin, run one task per trigger, print every trigger's event once all fired or on
    "finish"."""
    # what either variant imports before its first trigger: the baseline RSS includes none of its triggers
    import importlib

    import greenback

    for module in ("airflow.providers.amazon.aws.triggers.sagemaker", "airflow.providers.amazon.aws.hooks.sagemaker",
                   "airflow_sm_pytorch.triggers.sagemaker_pytorch", "airflow_sm_pytorch.hooks.sagemaker_pytorch",
                   "airflow_sm_pytorch.hooks.waiting"):
        importlib.import_module(module)

    # the protocol keeps the real stdout; whatever else writes there (Airflow's log lines) goes to the log
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    loop = asyncio.get_running_loop()
    finish = asyncio.Event()
    events: dict[str, list[Any]] = {}
    tasks: list[asyncio.Task[None]] = []
    started = asyncio.Event()  # set once every name has its trigger

    async def run_trigger(name: str) -> None:  # as TriggerRunner.run_trigger, less its bookkeeping
        await greenback.ensure_portal()
        trigger = _trigger(variant, name, conn, interval)
        try:
            async for event in trigger.run():
                payload = event.payload if isinstance(event.payload, dict) else {"status": str(event.payload)}
                events[name] = [time.time(), str(payload.get("status")), str(payload.get("message", ""))[:300]]
                break  # a deferred task's trigger ends with its first event
        except Exception as err:  # noqa: BLE001 - counted as a failure by the parent
            events[name] = [time.time(), "exception", f"{type(err).__name__}: {err}"[:300]]

    def command(line: str) -> None:
        """``go K``: triggers for the first K names (as tasks arrive at a triggerer); ``finish``: stop."""
        if line.startswith("go "):
            upto = min(int(line.split()[1]), len(names))
            tasks.extend(asyncio.create_task(run_trigger(name)) for name in names[len(tasks):upto])
            if len(tasks) == len(names):
                started.set()
        else:
            finish.set()

    def commands() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(command, line.strip())
        loop.call_soon_threadsafe(finish.set)

    threading.Thread(target=commands, daemon=True).start()
    print(json.dumps({"ready": True}), file=protocol, flush=True)
    told = asyncio.ensure_future(finish.wait())
    await asyncio.wait([asyncio.ensure_future(started.wait()), told], return_when=asyncio.FIRST_COMPLETED)
    everything = asyncio.ensure_future(asyncio.gather(*tasks))
    await asyncio.wait([everything, told], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    told.cancel()
    print(json.dumps({"events": events}), file=protocol, flush=True)


# ---------------------------------------------------------------- counting reverse proxy (loopback)
class CountingProxy:
    """HTTP/1.1 reverse proxy to ``upstream`` that records every request's target (and job name) and every
    error answer; one per variant, all served by one event loop in a thread of the benchmark's process."""

    def __init__(self, loop: asyncio.AbstractEventLoop, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").rstrip("/").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.describes: dict[str, list[float]] = {}
        self.other: dict[str, int] = {}
        self.errors: list[tuple[float, int, str]] = []
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=4096), loop).result()
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        targets: list[str] = []

        def request(head: bytes, body: bytes) -> None:
            target = _header(head, b"x-amz-target") or head.split(b" ", 2)[1].decode("latin-1")
            targets.append(target)
            if target == DESCRIBE:
                name = json.loads(body or b"{}").get("TrainingJobName", "?")
                self.describes.setdefault(name, []).append(time.time())
            else:
                self.other[target] = self.other.get(target, 0) + 1

        def answer(head: bytes, body: bytes) -> None:
            target = targets.pop(0) if targets else "?"
            status = int(head.split(b" ", 2)[1])
            if status >= 400:
                self.errors.append((time.time(), status, target))

        answers = asyncio.ensure_future(_relay(up_reader, writer, answer, response=True))
        await _relay(reader, up_writer, request)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(answers, 5)
        writer.close()

    def close(self) -> None:
        self.server.close()


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 seen: Callable[[bytes, bytes], None], response: bool = False) -> None:
    """Copy HTTP messages from ``reader`` to ``writer`` until either side ends, showing each to ``seen``."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError):
        while True:
            head, body = await _message(reader, response)
            if head is None:
                break
            seen(head, body)
            writer.write(head + body)
            await writer.drain()
    writer.close()


async def _message(reader: asyncio.StreamReader, response: bool = False) -> tuple[bytes | None, bytes]:
    """One HTTP/1.1 message: (head, body); (None, b"") at the end of the stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as err:
        if err.partial:
            raise
        return None, b""
    length = _header(head, b"content-length")
    if length is not None:
        return head, await reader.readexactly(int(length))
    if (_header(head, b"transfer-encoding") or "").lower() == "chunked":
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            body += size_line + await reader.readexactly(size + 2)
            if size == 0:
                return head, body
    if response and int(head.split(b" ", 2)[1]) not in (204, 304):
        return head, await reader.read()  # delimited by the end of the connection
    return head, b""


def _header(head: bytes, name: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return None


# ---------------------------------------------------------------- the local runtime and its jobs
def _tree(pid: int) -> tuple[int, float, float]:
    """(processes, PSS bytes, CPU seconds) of ``pid`` and all its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0.0, 0.0
    pss = cpu = 0.0
    for proc in procs:
        try:
            with proc.oneshot():
                info = proc.memory_full_info()
                times = proc.cpu_times()
        except psutil.Error:
            continue
        pss += getattr(info, "pss", info.rss)
        cpu += times.user + times.system + times.children_user + times.children_system
    return len(procs), pss, cpu


class Bench:
    """Everything the benchmark starts, so that :meth:`cleanup` can end it whatever happened."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.server: subprocess.Popen[str] | None = None
        self.url = ""
        self.sm: Any = None
        self.names: list[str] = []
        self.supervisors: dict[int, float] = {}  # pid -> create_time, to end leftovers after the server
        self.children: dict[str, subprocess.Popen[str]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def start_runtime(self) -> None:
        import boto3
        from botocore.config import Config

        env = {k: v for k, v in os.environ.items() if not k.startswith("SM_PYTORCH_LOCAL_")}
        env.update(SM_PYTORCH_LOCAL_ACCESS_KEY_ID=KEY, SM_PYTORCH_LOCAL_SECRET_ACCESS_KEY=KEY)
        with open(self.work / "server.log", "wb") as log:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "airflow_sm_pytorch.cli", "local", "serve", "--host", "127.0.0.1",
                 "--port", "0", "--root", str(self.work / "root"), "--allow-path", str(self.work)],
                stdout=subprocess.PIPE, stderr=log, text=True, env=env, start_new_session=True, cwd=ROOT)
        line = self.server.stdout.readline() if self.server.stdout else ""
        if " listening on " not in line:
            raise RuntimeError(f"the local runtime did not start: {line!r}; see {self.work / 'server.log'}")
        self.url = line.split(" listening on ", 1)[1].split(" ", 1)[0]
        self.sm = boto3.client("sagemaker", endpoint_url=self.url, region_name="us-east-1",
                               aws_access_key_id=KEY, aws_secret_access_key=KEY,
                               config=Config(retries={"mode": "standard", "max_attempts": 10}))
        with tarfile.open(self.work / "sourcedir.tar.gz", "w:gz") as tar:
            info = tarfile.TarInfo("train.py")
            info.size = len(SCRIPT)
            tar.addfile(info, io.BytesIO(SCRIPT))

    def create_jobs(self, count: int, timeout: float = 300.0) -> None:
        """Start ``count`` more sleeping jobs and wait until every one of them is Training."""
        import psutil

        start = len(self.names)
        batch = [f"bench-deferred-{i:04d}" for i in range(start, start + count)]
        for name in batch:
            self.sm.create_training_job(
                TrainingJobName=name,
                AlgorithmSpecification={"TrainingImage": "local", "TrainingInputMode": "File"},
                RoleArn="arn:aws:iam::000000000000:role/bench",
                OutputDataConfig={"S3OutputPath": (self.work / "out").as_uri()},
                ResourceConfig={"InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 1},
                StoppingCondition={"MaxRuntimeInSeconds": 1800},  # a leftover ends by itself
                HyperParameters={"sagemaker_program": json.dumps("train.py"),
                                 "sagemaker_submit_directory": json.dumps((self.work / "sourcedir.tar.gz")
                                                                          .as_uri())})
            self.names.append(name)
        deadline = time.monotonic() + timeout
        waiting = list(batch)
        while waiting:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(waiting)} local jobs did not reach Training in {timeout:.0f} s")
            time.sleep(0.5)
            described = {name: self._describe(name) for name in waiting}
            ended = [d for d in described.values() if d.get("TrainingJobStatus") != "InProgress"]
            if ended:
                raise RuntimeError(f"local job {ended[0]['TrainingJobName']} ended early: "
                                   f"{ended[0].get('FailureReason') or ended[0].get('TrainingJobStatus')}")
            waiting = [name for name, d in described.items() if d.get("SecondaryStatus") != "Training"]
        with contextlib.suppress(psutil.Error):
            for proc in psutil.Process(self.server.pid).children():
                if "airflow_sm_pytorch.local.supervisor" in " ".join(proc.cmdline()):
                    self.supervisors[proc.pid] = proc.create_time()

    def _describe(self, name: str) -> dict[str, Any]:
        return self.sm.describe_training_job(TrainingJobName=name)

    def stop_jobs(self, timeout: float = 180.0) -> float:
        """StopTrainingJob for every job still InProgress, then wait for them to end; the seconds it took."""
        start = time.monotonic()
        for name in self.names:
            with contextlib.suppress(Exception):
                self.sm.stop_training_job(TrainingJobName=name)
        left = list(self.names)
        while left and time.monotonic() - start < timeout:
            time.sleep(0.5)
            left = [n for n in left if _status(self, n) == "InProgress"]
        if left:
            raise RuntimeError(f"{len(left)} local jobs still InProgress {timeout:.0f} s after StopTrainingJob")
        return time.monotonic() - start

    def start_triggerer(self, variant: str, proxy_url: str, interval: float) -> subprocess.Popen[str]:
        conn = f"bench_deferred_{variant}"
        extra: dict[str, Any] = {"endpoint_url": proxy_url, "region_name": "us-east-1"}
        if variant == "ours":
            extra["sm_pytorch"] = {"local_runtime": {"root": str(self.work / "root"), "autostart": False}}
        names = self.work / f"names-{variant}.json"
        names.write_text(json.dumps(self.names))
        env = {**os.environ, f"AIRFLOW_CONN_{conn.upper()}": json.dumps(
            {"conn_type": "aws", "login": KEY, "password": KEY, "extra": extra})}
        with open(self.work / f"triggerer-{variant}.log", "wb") as log:
            child = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--triggerer", variant, "--conn", conn,
                 "--names", str(names), "--interval", str(interval)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=ROOT,
                start_new_session=True)
        self.children[variant] = child
        return child

    def wait_ready(self, variant: str) -> None:
        if json.loads(self.children[variant].stdout.readline() or "{}").get("ready") is not True:
            raise RuntimeError(f"the {variant} triggerer did not start; see {self.work}/triggerer-{variant}.log")

    def cleanup(self) -> None:
        """End the triggerers, stop every job still running, shut the runtime down, end leftover supervisors."""
        import psutil

        for child in self.children.values():
            if child.poll() is None:
                child.kill()
                child.wait(10)
        if self.sm is not None and self.server is not None and self.server.poll() is None:
            with contextlib.suppress(Exception):
                self.stop_jobs(timeout=90)
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(10)
        for pid, created in self.supervisors.items():  # a supervisor leads its own process group
            with contextlib.suppress(psutil.Error, OSError):
                if psutil.Process(pid).create_time() == created:
                    os.killpg(pid, signal.SIGKILL)
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)


def _status(bench: Bench, name: str) -> str:
    try:
        return bench._describe(name).get("TrainingJobStatus", "?")
    except Exception:  # noqa: BLE001 - the runtime answers again in a moment
        return "InProgress"


def _snapshot(pid: int) -> tuple[float, float, float]:
    """(time, RSS bytes, CPU seconds) of one process."""
    import psutil

    proc = psutil.Process(pid)
    with proc.oneshot():
        times = proc.cpu_times()
        return time.time(), float(proc.memory_info().rss), times.user + times.system


# ---------------------------------------------------------------- the benchmark
def run(jobs: int | None = None, interval: float | None = None, seconds: float | None = None,
        mem_gb: float | None = None) -> dict[str, Any]:
    import psutil

    jobs = jobs or int(os.environ.get("BENCH_DEFERRED_JOBS", "500"))
    interval = interval or float(os.environ.get("BENCH_DEFERRED_INTERVAL", "10"))
    seconds = seconds or float(os.environ.get("BENCH_DEFERRED_SECONDS", "40"))
    mem_gb = mem_gb or float(os.environ.get("BENCH_DEFERRED_MEM_GB", "6"))
    work = Path(tempfile.mkdtemp(prefix="bench-deferred-"))
    bench = Bench(work)
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    phases: dict[str, float] = {}
    clock = time.monotonic()
    try:
        bench.loop = asyncio.new_event_loop()
        threading.Thread(target=bench.loop.run_forever, name="proxy", daemon=True).start()
        bench.start_runtime()
        _, server_pss, _ = _tree(bench.server.pid)

        # --- as many real jobs as fit: measure the runtime per job after each batch
        budget = mem_gb * 2**30
        per_job = 0.0
        limit = jobs
        while len(bench.names) < limit:
            bench.create_jobs(min(20 if not bench.names else 100, limit - len(bench.names)))
            _, pss, _ = _tree(bench.server.pid)
            per_job = (pss - server_pss) / len(bench.names)
            room = min(budget - pss, 0.5 * psutil.virtual_memory().available)
            limit = min(jobs, len(bench.names) + max(0, int(room // (1.05 * per_job))))  # 5% margin
        count = len(bench.names)
        phases["jobs started"], clock = time.monotonic() - clock, time.monotonic()
        _, _, runtime_cpu0 = _tree(bench.server.pid)
        runtime_t0 = time.time()

        # --- two triggerers, each behind its own counting proxy, started together over the same jobs
        proxies = {v: CountingProxy(bench.loop, bench.url) for v in VARIANTS}
        children = {v: bench.start_triggerer(v, proxies[v].url, interval) for v in VARIANTS}  # in parallel
        for v in VARIANTS:
            bench.wait_ready(v)
        base = {v: _snapshot(c.pid) for v, c in children.items()}
        # a tenth of the triggers first, then the rest: the second step's RSS is the marginal cost of a trigger
        first = max(1, count // 10)
        snapshots = _start_triggers(children, proxies, [first, count], work)
        step, ready = ({v: snapshots[v][i] for v in VARIANTS} for i in (0, 1))
        phases["triggers started"], clock = time.monotonic() - clock, time.monotonic()
        opened = time.time()
        time.sleep(seconds)
        end = {v: _snapshot(c.pid) for v, c in children.items()}
        closed = time.time()
        _, runtime_pss, runtime_cpu1 = _tree(bench.server.pid)
        runtime_cpu = (runtime_cpu1 - runtime_cpu0) / (time.time() - runtime_t0)

        # --- stop every job: each trigger must now fire once, for its job's Stopped state
        stopping = time.time()
        stop_s = bench.stop_jobs()
        phases["window"], clock = stopping - opened, time.monotonic()
        phases["jobs stopped"] = stop_s
        events = {}
        for v, child in children.items():
            waited = time.monotonic() + 2 * interval + 60
            while child.poll() is None and time.monotonic() < waited and not _has_line(child):
                time.sleep(0.2)
            if child.poll() is None and not _has_line(child):
                child.stdin.write("finish\n")
                child.stdin.flush()
            events[v] = json.loads(child.stdout.readline() or '{"events": {}}')["events"]
            child.wait(30)
        phases["triggers fired"] = time.monotonic() - clock
        figures = {v: _figures(v, count, first, interval, base[v], step[v], ready[v], end[v], opened, closed,
                               stopping,
                               proxies[v], events[v], bench.names, work) for v in VARIANTS}
        for proxy in proxies.values():
            proxy.close()
    except BaseException:
        print(f"deferred: stopped early; the runtime's and triggerers' logs are kept in {work}", file=sys.stderr)
        raise
    finally:
        clock = time.monotonic()
        bench.cleanup()
        signal.signal(signal.SIGTERM, previous)
    phases["clean-up"] = time.monotonic() - clock
    shutil.rmtree(work, ignore_errors=True)
    result = {"requested_jobs": jobs, "jobs": count, "interval_s": interval, "window_s": round(closed - opened, 1),
              "runtime_pss_mb_per_job": round(per_job / 2**20, 1),
              "runtime_pss_gb": round(runtime_pss / 2**30, 2), "runtime_cpu_cores": round(runtime_cpu, 2),
              "stop_all_s": round(stop_s, 1), "mem_budget_gb": mem_gb,
              "phases_s": {k: round(v, 1) for k, v in phases.items()}, **figures}
    _print(result)
    return result


def _start_triggers(children: dict[str, subprocess.Popen[str]], proxies: dict[str, CountingProxy],
                    steps: list[int], work: Path) -> dict[str, list[tuple[float, float, float]]]:
    """Each triggerer runs triggers for the first ``steps[0]`` jobs, then, once each of those has been
    described, for the first ``steps[1]``, ...: a (time, RSS, CPU) snapshot when each step has polled."""
    snapshots: dict[str, list[tuple[float, float, float]]] = {v: [] for v in children}

    def go(variant: str) -> None:
        children[variant].stdin.write(f"go {steps[len(snapshots[variant])]}\n")
        children[variant].stdin.flush()

    for v in children:
        go(v)
    deadline = time.monotonic() + max(300.0, steps[-1] * 1.0)  # the naive one makes a client per job first
    while any(len(s) < len(steps) for s in snapshots.values()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every trigger polled within the start-up limit: "
                               f"{ {v: len(p.describes) for v, p in proxies.items()} } of {steps[-1]}")
        for v, proxy in proxies.items():
            if children[v].poll() is not None:
                raise RuntimeError(f"the {v} triggerer exited; see {work}/triggerer-{v}.log")
            if len(snapshots[v]) < len(steps) and len(proxy.describes) >= steps[len(snapshots[v])]:
                snapshots[v].append(_snapshot(children[v].pid))
                if len(snapshots[v]) < len(steps):
                    go(v)
        time.sleep(0.1)
    return snapshots


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _has_line(child: subprocess.Popen[str]) -> bool:
    import select

    return bool(select.select([child.stdout], [], [], 0)[0])


def _figures(variant: str, count: int, first: int, interval: float, base: tuple[float, float, float],
             step: tuple[float, float, float], ready: tuple[float, float, float], end: tuple[float, float, float], opened: float, closed: float,
             stopping: float, proxy: CountingProxy, events: dict[str, list[Any]], names: list[str],
             work: Path) -> dict[str, Any]:
    in_window = sum(1 for times in proxy.describes.values() for t in times if opened <= t <= closed)
    pairs = [(a, b) for times in proxy.describes.values() for a, b in itertools.pairwise(times) if b <= stopping]
    gaps = [b - a for a, b in pairs if opened <= a and b <= closed]  # steady state: the window
    early = [n for n in names if n in events and events[n][0] < stopping]
    not_stopped = [n for n in names if n not in events or "Stopped" not in events[n][2]]
    errors = [e for e in proxy.errors if e[0] < stopping]
    log = (work / f"triggerer-{variant}.log").read_text(errors="replace")
    retried = log.count("retrying in")  # our trigger's warning for a transient error it retries
    failures = len(set(early) | set(not_stopped)) + len(errors) + retried
    example = next((events.get(n, [0, "none", "no event"]) for n in [*early, *not_stopped]), None)
    minutes = (closed - opened) / 60
    return {
        "what": VARIANTS[variant],
        "rss_before_triggers_mb": round(base[1] / 2**20, 1),
        "rss_kb_per_job": round((end[1] - base[1]) / count / 1024, 1),
        "rss_kb_per_added_job": round((ready[1] - step[1]) / (count - first) / 1024, 1) if count > first else None,
        "rss_mb": round(end[1] / 2**20, 1),
        "cpu_ms_per_job_per_min": round((end[2] - ready[2]) * 1000 / count / ((end[0] - ready[0]) / 60), 2),
        "start_cpu_ms_per_job": round((ready[2] - base[2]) * 1000 / count, 2),
        "start_s": round(ready[0] - base[0], 1),
        "describes_per_job_per_min": round(in_window / count / minutes, 2),
        "calls_per_job_per_interval": round(interval / statistics.fmean(gaps), 3) if gaps else None,
        "min_gap_s": round(min(b - a for a, b in pairs), 2) if pairs else None,
        "other_calls": dict(proxy.other),
        "failures": failures, "early_events": len(early), "missing_or_wrong_events": len(not_stopped),
        "http_errors": len(errors), "retried": retried,
        "failure_example": example and example[1:] if failures else None,
    }


def _print(r: dict[str, Any]) -> None:
    ours, naive = r["ours"], r["naive"]
    scaled = "" if r["jobs"] == r["requested_jobs"] else (
        f" (requested {r['requested_jobs']}; the runtime costs {r['runtime_pss_mb_per_job']} MB PSS per job "
        f"(supervisor + script), {r['requested_jobs']} would take "
        f"{r['requested_jobs'] * r['runtime_pss_mb_per_job'] / 1024:.1f} GiB > the {r['mem_budget_gb']:g} GiB "
        "budget BENCH_DEFERRED_MEM_GB or half the free memory: N is the most that fit)")
    print(f"deferred: one triggerer process per variant (one asyncio loop, one task per trigger running "
          f"trigger.run() as TriggerRunner.run_trigger does; not Airflow's TriggerRunner), "
          f"N={r['jobs']} concurrent sleeping local training jobs{scaled}; poll interval {r['interval_s']:g} s, "
          f"{r['window_s']:g} s window; both variants at once over the same jobs, Describe counted by a proxy")
    rows = [("", "ours", "naive", ""),
            ("", "SageMakerPyTorchTrigger", "Amazon SageMakerTrigger", "")]
    rows += [
        ("triggerer RSS per job", f"{ours['rss_kb_per_job']} KB", f"{naive['rss_kb_per_job']} KB",
         "target: kilobytes"),
        ("  each trigger added (last 90%)", f"{ours['rss_kb_per_added_job']} KB",
         f"{naive['rss_kb_per_added_job']} KB", ""),
        ("triggerer RSS (before triggers)", f"{ours['rss_mb']} MB ({ours['rss_before_triggers_mb']})",
         f"{naive['rss_mb']} MB ({naive['rss_before_triggers_mb']})", ""),
        ("CPU per job per minute, waiting", f"{ours['cpu_ms_per_job_per_min']} ms",
         f"{naive['cpu_ms_per_job_per_min']} ms", ""),
        ("CPU per job to start", f"{ours['start_cpu_ms_per_job']} ms", f"{naive['start_cpu_ms_per_job']} ms", ""),
        ("all triggers polled once after", f"{ours['start_s']} s", f"{naive['start_s']} s", ""),
        ("Describe calls per job per minute", f"{ours['describes_per_job_per_min']}",
         f"{naive['describes_per_job_per_min']}", f"{60 / r['interval_s']:g} = one per interval"),
        ("calls per job per interval", f"{ours['calls_per_job_per_interval']}",
         f"{naive['calls_per_job_per_interval']}", "target <= 1"),
        ("shortest gap between a job's calls", f"{ours['min_gap_s']} s", f"{naive['min_gap_s']} s", ""),
        ("failures", f"{ours['failures']}", f"{naive['failures']}", "target 0"),
    ]
    for label, a, b, note in rows:
        print(f"  {label:36s} {a:>24s} {b:>24s}   {note}")
    for v in ("ours", "naive"):
        if r[v]["failures"]:
            print(f"  {v} failures: {r[v]['early_events']} fired early, {r[v]['missing_or_wrong_events']} "
                  f"missing/not Stopped, {r[v]['http_errors']} HTTP errors, {r[v]['retried']} retried; "
                  f"e.g. {r[v]['failure_example']}")
    print(f"  naive / ours: memory per job {_ratio(naive['rss_kb_per_job'], ours['rss_kb_per_job'])}, "
          f"CPU waiting {_ratio(naive['cpu_ms_per_job_per_min'], ours['cpu_ms_per_job_per_min'])}, "
          f"CPU to start {_ratio(naive['start_cpu_ms_per_job'], ours['start_cpu_ms_per_job'])}; "
          f"the runtime: {r['runtime_pss_gb']} GiB PSS, {r['runtime_cpu_cores']} cores for {r['jobs']} "
          f"sleeping jobs; all stopped in {r['stop_all_s']} s")
    print("  time: " + ", ".join(f"{k} {v:g} s" for k, v in r["phases_s"].items()))
    print(f"  ours: {'PASS' if passed(r) else 'FAIL'} (0 failures, <= 1 call per job per interval)")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else "n/a"


def passed(result: dict[str, Any]) -> bool:
    """The gate ``bench/run.py`` applies: our trigger fails nothing and polls at most once per interval."""
    ours = result["ours"]
    return ours["failures"] == 0 and ours["calls_per_job_per_interval"] is not None \
        and ours["calls_per_job_per_interval"] <= 1.0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--interval", type=float)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--mem-gb", type=float)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--triggerer", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--conn", help=argparse.SUPPRESS)
    parser.add_argument("--names", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.triggerer:
        asyncio.run(_triggerer(args.triggerer, args.conn, json.loads(Path(args.names).read_text()),
                               args.interval))
        sys.exit(0)
    out = run(args.jobs, args.interval, args.seconds, args.mem_gb)
    if args.json:
        print(json.dumps(out))
    sys.exit(0 if passed(out) else 1)
