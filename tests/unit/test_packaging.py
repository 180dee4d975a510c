"""sourcedir.tar.gz: the SDK's membership, written byte-for-byte deterministically."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from airflow_sm_pytorch.exceptions import SpecError
from airflow_sm_pytorch.packaging import (
    archive_members,
    sourcedir_bytes,
    sourcedir_files,
    write_sourcedir,
)

pytestmark = pytest.mark.fast  # the quick lane: scripts/test.sh -m fast

FIXTURE_SRC = Path(__file__).resolve().parents[1] / "fixtures" / "builders" / "src"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    target = tmp_path / "src"
    shutil.copytree(FIXTURE_SRC, target)
    return target


def _tar(data: bytes) -> tarfile.TarFile:
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")


def test_members_match_the_sdk_archive(src: Path) -> None:
    files = sourcedir_files(entry_point="train.py", source_dir=str(src), dependencies=())
    # SDK verified archive: requirements.txt, utils, utils/helpers.py, train.py (os.listdir order);
    # we sort, keeping tarfile's "directory, then its children".
    assert archive_members(files) == ["requirements.txt", "train.py", "utils", "utils/helpers.py"]
    assert all(path.is_absolute() for _, path in files)
    data, digest = sourcedir_bytes(files)
    with _tar(data) as tar:
        assert tar.getnames() == archive_members(files)
        assert tar.extractfile("utils/helpers.py").read() == (src / "utils" / "helpers.py").read_bytes()
    assert len(digest) == 64


def test_nothing_is_filtered_and_dependencies_go_to_the_root(src: Path, tmp_path: Path) -> None:
    (src / ".hidden").write_text("h")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    lib = tmp_path / "libs" / "common"
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text("")
    extra = tmp_path / "extra.cfg"
    extra.write_text("x")
    files = sourcedir_files(entry_point="train.py", source_dir=str(src), dependencies=[str(lib), str(extra)])
    assert archive_members(files) == [
        ".hidden", "__pycache__", "__pycache__/train.cpython-311.pyc", "common", "common/__init__.py",
        "extra.cfg", "requirements.txt", "train.py", "utils", "utils/helpers.py"]


def test_no_source_dir_is_the_entry_point_alone(src: Path) -> None:
    files = sourcedir_files(entry_point=str(src / "utils" / "helpers.py"), source_dir=None)
    assert archive_members(files) == ["helpers.py"]


def test_bytes_are_deterministic(src: Path, tmp_path: Path) -> None:
    files = sourcedir_files(entry_point="train.py", source_dir=str(src))
    first, digest = sourcedir_bytes(files)
    assert sourcedir_bytes(files) == (first, digest)
    for path in src.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    (src / "train.py").chmod(0o600)
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    again = sourcedir_bytes(sourcedir_files(entry_point="train.py", source_dir=str(copy)))
    assert again == (first, digest)
    (copy / "train.py").write_text("changed")
    assert sourcedir_bytes(sourcedir_files(entry_point="train.py", source_dir=str(copy)))[1] != digest


def test_headers_are_normalised(src: Path) -> None:
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o700)
    buffer = io.BytesIO()
    write_sourcedir(sourcedir_files(entry_point="train.py", source_dir=str(src)), buffer)
    data = buffer.getvalue()
    assert data[4:8] == b"\0\0\0\0"  # gzip header mtime
    assert data[3] & 0x08 == 0  # no FNAME in the gzip header
    with gzip.open(io.BytesIO(data)) as gz, tarfile.open(fileobj=gz) as tar:
        for info in tar.getmembers():
            assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")
            expected = 0o755 if info.isdir() or info.name == "run.sh" else 0o644
            assert info.mode == expected, info.name


def test_symlinks_are_followed(src: Path, tmp_path: Path) -> None:
    outside = tmp_path / "shared"
    outside.mkdir()
    (outside / "conf.yaml").write_text("a: 1")
    (src / "shared").symlink_to(outside)
    (src / "link.py").symlink_to(src / "train.py")
    files = sourcedir_files(entry_point="train.py", source_dir=str(src))
    assert {"shared", "shared/conf.yaml", "link.py"} <= set(archive_members(files))
    with _tar(sourcedir_bytes(files)[0]) as tar:
        assert tar.getmember("link.py").isfile() and tar.getmember("shared").isdir()
        assert tar.extractfile("shared/conf.yaml").read() == b"a: 1"


def test_symlink_loop_is_refused(src: Path) -> None:
    (src / "utils" / "back").symlink_to(src)
    with pytest.raises(SpecError, match="symlink loop"):
        sourcedir_files(entry_point="train.py", source_dir=str(src))


def test_self_referencing_link_is_refused(src: Path) -> None:
    (src / "me").symlink_to(src / "me")
    with pytest.raises(SpecError, match="cannot be read|loop"):
        sourcedir_files(entry_point="train.py", source_dir=str(src))


def test_missing_symlink_target_is_refused(src: Path) -> None:
    (src / "gone.txt").symlink_to(src / "nowhere.txt")
    with pytest.raises(SpecError, match="broken symlink") as err:
        sourcedir_files(entry_point="train.py", source_dir=str(src))
    assert err.value.field == "source_dir"


def test_missing_paths(src: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match='No file named "nope.py" was found in directory'):
        sourcedir_files(entry_point="nope.py", source_dir=str(src))
    with pytest.raises(SpecError, match="does not exist") as err:
        sourcedir_files(entry_point="train.py", source_dir=str(tmp_path / "missing"))
    assert err.value.field == "source_dir"
    with pytest.raises(SpecError, match="does not exist") as err:
        sourcedir_files(entry_point="train.py", source_dir=str(src), dependencies=[str(tmp_path / "lib")])
    assert err.value.field == "dependencies[0]"
    with pytest.raises(SpecError) as err:
        sourcedir_files(entry_point=str(tmp_path / "missing.py"), source_dir=None)
    assert err.value.field == "entry_point"


def test_clashing_dependency_is_refused(src: Path, tmp_path: Path) -> None:
    dep = tmp_path / "train.py"
    dep.write_text("other")
    with pytest.raises(SpecError, match="clashes") as err:
        sourcedir_files(entry_point="train.py", source_dir=str(src), dependencies=[str(dep)])
    assert err.value.field == "dependencies[0]"
