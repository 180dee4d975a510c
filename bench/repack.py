"""Repack of a model archive: ours (scan + lint + gzip splice) against the SDK's extract + re-tar, same run.

``.venv/bin/python bench/repack.py [--size-mb 1024]``. The archive holds one ``model.pth`` of fp32-like
bytes (random mantissas, a few exponent values: deflate saves ~10 %, like real weights). Generating it
must not dominate, so one 64 MiB segment is deflated once, after a full flush, and written as many times
as needed (each copy decodes on its own; the CRC is computed over the real data).

Each side runs in its own child process that times itself and reports its peak RSS (``VmHWM``):
* ours: ``repack_file`` (scan the original, lint, splice ``code/`` in front of its deflate data);
* SDK style (``utils.repack_model``): ``extractall`` into ``tmp/model``, ``copytree(source_dir,
  model/code)``, ``tarfile.open(mode="w:gz")`` (level 9) with ``add(model_dir, arcname=os.path.sep)``.
Targets: ours >= 10x faster, peak RSS < 200 MB whatever the size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

SEGMENT = 64 << 20
_EXPONENTS = bytes((0x3C, 0x3D, 0x3E, 0xBC, 0xBD, 0xBE)[i % 6] for i in range(256))


def _weights(size: int, data_kind: str = "weights") -> bytes:
    if data_kind == "random":
        return os.urandom(size)
    data = bytearray(os.urandom(size))
    data[3::4] = os.urandom(size // 4).translate(_EXPONENTS)  # fp32 sign+exponent bytes: low entropy
    return bytes(data)


def make_archive(path: Path, size_mb: int, data_kind: str = "weights") -> int:
    """Write a gzip tar with one ``model.pth`` of ``size_mb`` MiB; returns its byte size.
    ``data_kind``: "weights" (fp32-like) or "random" (incompressible: deflate stores it)."""
    segment = min(SEGMENT, size_mb << 20)
    copies = max(1, (size_mb << 20) // segment)
    chunk = _weights(segment, data_kind)
    header = tarfile.TarInfo("model.pth")
    header.size = segment * copies
    head = header.tobuf(tarfile.PAX_FORMAT)
    end = b"\0" * (tarfile.RECORDSIZE - (len(head) + header.size) % tarfile.RECORDSIZE)
    deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    crc = zlib.crc32(head)
    with open(path, "wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
        out.write(deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH))
        body = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)  # independent of what precedes
        for _ in range(copies):
            out.write(body)
            crc = zlib.crc32(chunk, crc)
        out.write(deflate.compress(end) + deflate.flush(zlib.Z_FINISH))
        crc = zlib.crc32(end, crc)
        total = len(head) + header.size + len(end)
        out.write(crc.to_bytes(4, "little") + (total & 0xFFFFFFFF).to_bytes(4, "little"))
    return path.stat().st_size


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ours(archive: str, src: str, out: str) -> dict:
    from airflow_sm_pytorch.repack import code_files, lint, repack, scan

    start = time.perf_counter()
    code = code_files(entry_point="inference.py", source_dir=src)
    with open(archive, "rb") as handle:
        info = scan(handle, name=archive)  # inflates everything once: the lint needs every header
    lint(info, code, entry_point="inference.py")
    scanned = time.perf_counter()
    with open(archive, "rb") as handle, open(out, "wb") as dest:
        result = repack(handle, dest, code, info=info)
    end = time.perf_counter()
    return {"seconds": end - start, "scan_s": scanned - start, "splice_s": end - scanned,
            "method": result.method}


def _sdk(archive: str, src: str, out: str) -> dict:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=os.path.dirname(out)) as tmp:
        model_dir = os.path.join(tmp, "model")
        os.mkdir(model_dir)
        with tarfile.open(archive, mode="r:gz") as t:
            t.extractall(path=model_dir, filter="data")
        code_dir = os.path.join(model_dir, "code")
        if os.path.exists(code_dir):
            shutil.rmtree(code_dir)
        shutil.copytree(src, code_dir)
        tmp_model = os.path.join(tmp, "temp-model.tar.gz")
        with tarfile.open(tmp_model, mode="w:gz") as t:
            t.add(model_dir, arcname=os.path.sep)
        shutil.move(tmp_model, out)
    return {"seconds": time.perf_counter() - start, "method": "extract + re-tar"}


def _child(kind: str, archive: Path, src: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(archive), str(src), str(out)],
                          check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _members(path: Path) -> list[str]:
    with open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|gz") as tar:
        return sorted(m.name.strip("/") for m in tar if m.name.strip("/"))


def run(size_mb: int = 1024, workdir: str | None = None, data_kind: str = "weights") -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp_path = Path(tmp)
        src = tmp_path / "src"
        src.mkdir()
        (src / "inference.py").write_text("def model_fn(model_dir):\n    return None\n")
        (src / "requirements.txt").write_text("numpy\n")
        archive = tmp_path / "model.tar.gz"
        start = time.perf_counter()
        archive_bytes = make_archive(archive, size_mb, data_kind)
        generate_s = time.perf_counter() - start
        ours = _child("ours", archive, src, tmp_path / "ours.tar.gz")
        sdk = _child("sdk", archive, src, tmp_path / "sdk.tar.gz")
        same = _members(tmp_path / "ours.tar.gz") == _members(tmp_path / "sdk.tar.gz")
        result = {
            "size_mb": size_mb, "data": data_kind, "archive_mb": round(archive_bytes / 2**20, 1),
            "generate_s": round(generate_s, 2), "ours_s": round(ours["seconds"], 3),
            "ours_method": ours["method"], "ours_scan_s": round(ours["scan_s"], 3),
            "ours_splice_s": round(ours["splice_s"], 3), "sdk_s": round(sdk["seconds"], 3),
            "ratio": round(sdk["seconds"] / ours["seconds"], 1),
            "ours_peak_rss_mb": round(ours["peak_rss_mb"], 1), "sdk_peak_rss_mb": round(sdk["peak_rss_mb"], 1),
            "same_members": same,
            "ours_out_mb": round((tmp_path / "ours.tar.gz").stat().st_size / 2**20, 1),
            "sdk_out_mb": round((tmp_path / "sdk.tar.gz").stat().st_size / 2**20, 1),
        }
    print(f"repack {size_mb} MiB of {data_kind}: ours {result['ours_s']} s (scan + lint "
          f"{result['ours_scan_s']} s, {result['ours_method']} {result['ours_splice_s']} s; peak RSS "
          f"{result['ours_peak_rss_mb']} MB), SDK-style {result['sdk_s']} s (peak RSS "
          f"{result['sdk_peak_rss_mb']} MB): {result['ratio']}x faster; same members: {same}")
    print(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--data", choices=("weights", "random"), default="weights",
                        help="fp32-like weights (deflate saves ~10%%) or incompressible bytes")
    parser.add_argument("--workdir", default=None, help="where the archives go (default: $TMPDIR)")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "ARCHIVE", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, archive, src, out = args.child
        report = (_ours if kind == "ours" else _sdk)(archive, src, out)
        print(json.dumps({**report, "peak_rss_mb": _peak_rss_mb()}))
        return 0
    result = run(args.size_mb, args.workdir, args.data)
    ok = result["ratio"] >= 10 and result["ours_peak_rss_mb"] < 200 and result["same_members"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
