"""Safe extraction refuses every escape before writing anything; make_tar_gz round-trips."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from airflow_sm_pytorch.archives import UnsafeArchive, make_tar_gz, safe_extract

pytestmark = pytest.mark.fast  # the quick lane: scripts/test.sh -m fast


def _tar(members: list[tuple[str, str, str]]) -> io.BytesIO:
    """members: (kind, name, data-or-linkname) with kind in file|dir|sym|hard|fifo|chr."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for kind, name, extra in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = extra.encode()
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
                "chr": tarfile.CHRTYPE,
            }[kind]
            info.linkname = extra
            tf.addfile(info)
    buf.seek(0)
    return buf


def test_plain_archive_extracts(tmp_path):
    src = _tar(
        [
            ("dir", "pkg", ""),
            ("file", "pkg/a.py", "A"),
            ("file", "./train.py", "T"),
            ("sym", "pkg/link", "a.py"),
            ("sym", "up", "pkg/../train.py"),
            ("hard", "copy.py", "train.py"),
        ]
    )
    names = safe_extract(src, tmp_path / "out")
    assert "pkg/a.py" in names
    assert (tmp_path / "out/pkg/link").read_text() == "A"
    assert (tmp_path / "out/up").read_text() == "T"
    assert (tmp_path / "out/copy.py").read_text() == "T"


@pytest.mark.parametrize(
    "members, member, problem",
    [
        ([("file", "../evil.py", "x")], "../evil.py", "path traversal"),
        ([("file", "ok/../../evil.py", "x")], "ok/../../evil.py", "path traversal"),
        ([("file", "/etc/evil", "x")], "/etc/evil", "absolute"),
        ([("sym", "link", "/etc/passwd")], "link", "absolute"),
        ([("sym", "link", "../../outside")], "link", "leaves the destination"),
        ([("dir", "d", ""), ("sym", "d/link", "../..")], "d/link", "leaves the destination"),
        ([("sym", "dot", "."), ("sym", "esc", "dot/../x")], "esc", "leaves the destination"),
        ([("sym", "a", "b"), ("sym", "b", "a")], "a", "loop"),
        ([("sym", "d", "."), ("file", "d/x.py", "x")], "d/x.py", "symlink"),
        ([("hard", "h", "../../etc/passwd")], "h", "path traversal"),
        ([("hard", "h", "/etc/passwd")], "h", "absolute"),
        ([("fifo", "f", "")], "f", "FIFO"),
        ([("chr", "dev", "")], "dev", "device"),
    ],
)
def test_unsafe_members_are_refused_before_anything_is_written(tmp_path, members, member, problem):
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchive) as err:
        safe_extract(_tar([("file", "first.py", "written first?")] + members), out)
    assert err.value.member == member and problem in str(err.value)
    assert isinstance(err.value, ValueError)
    assert not out.exists()
    assert not (tmp_path / "evil.py").exists()


def test_extract_from_a_path(tmp_path):
    archive = tmp_path / "s.tar.gz"
    archive.write_bytes(_tar([("file", "train.py", "print(1)")]).getvalue())
    safe_extract(archive, tmp_path / "code")
    assert (tmp_path / "code/train.py").read_text() == "print(1)"


def test_make_tar_gz_members_are_relative_and_sorted(tmp_path):
    src = tmp_path / "model"
    (src / "code").mkdir(parents=True)
    (src / "model.pth").write_bytes(b"w")
    (src / "code/inference.py").write_text("i")
    (src / "alias.pth").symlink_to("model.pth")
    dest = make_tar_gz(src, tmp_path / "out/model.tar.gz")
    with tarfile.open(dest) as tf:
        assert tf.getnames() == ["alias.pth", "code", "code/inference.py", "model.pth"]
        assert tf.getmember("alias.pth").issym()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["model.tar.gz"]
    safe_extract(dest, tmp_path / "back")
    assert (tmp_path / "back/alias.pth").read_bytes() == b"w"


def test_make_tar_gz_of_an_empty_or_missing_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    for src in (tmp_path / "empty", tmp_path / "missing"):
        dest = make_tar_gz(src, tmp_path / f"{src.name}.tar.gz")
        with tarfile.open(dest) as tf:
            assert tf.getnames() == []


def test_fileobj_source_with_plain_tar(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("x.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    buf.seek(0)
    safe_extract(buf, Path(tmp_path / "o"))
    assert (tmp_path / "o/x.txt").read_text() == "x"
