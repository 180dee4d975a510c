"""``local serve`` on a root it cannot write says so in one line (and how to fix it), never a sqlite traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from airflow_sm_pytorch.local.config import ROOT_ENV, RootNotWritable, ensure_writable_root

KEYS = {"SM_PYTORCH_LOCAL_ACCESS_KEY_ID": "k", "SM_PYTORCH_LOCAL_SECRET_ACCESS_KEY": "s"}


def serve(root, env=None) -> subprocess.CompletedProcess:
    # with keys from the environment nothing is written before the store is opened: the check must come first
    return subprocess.run([sys.executable, "-m", "airflow_sm_pytorch.cli", "local", "serve", "--port", "0",
                           "--root", str(root)], check=False, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **KEYS, **(env or {})})


def assert_one_line(proc: subprocess.CompletedProcess, root) -> None:
    assert proc.returncode != 0 and proc.stdout == "", (proc.returncode, proc.stdout)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr and "sqlite" not in proc.stderr, proc.stderr
    assert f"root {root} is not writable" in lines[0]
    assert "--root DIR" in lines[0] and f"${ROOT_ENV}" in lines[0]  # the fix


@pytest.mark.fast
def test_a_writable_root_is_created_and_left_clean(tmp_path):
    root = tmp_path / "a" / "b"
    assert ensure_writable_root(root) == root and root.is_dir()
    assert list(root.iterdir()) == []  # the probe file is gone


@pytest.mark.fast
def test_a_root_that_is_a_file_or_lies_under_one_is_refused(tmp_path):
    """Works as root too (permission bits do not stop root; a file in the way does)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(RootNotWritable, match="is not writable \\(it is a file, not a directory\\)"):
        ensure_writable_root(afile)
    with pytest.raises(RootNotWritable, match=f"root {afile / 'sub'} is not writable"):
        ensure_writable_root(afile / "sub")


def test_local_serve_on_a_file_root_prints_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_one_line(serve(afile), afile)
    assert_one_line(serve(afile / "sub"), afile / "sub")
    assert afile.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory anyway; the file-root "
                    "test above covers the same path as root (the suite's interpreter under /root is not "
                    "runnable by another user, so the server cannot be dropped to one)")
def test_local_serve_on_a_read_only_directory_prints_one_line(tmp_path):
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o555)
    try:
        assert_one_line(serve(root), root)
        assert_one_line(serve(root / "sub"), root / "sub")
    finally:
        root.chmod(0o755)
