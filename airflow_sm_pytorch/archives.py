"""Safe tar extraction (``sourcedir.tar.gz``, ``model.tar.gz``) and the artefact tarballs.

SageMaker's training toolkit extracts ``sourcedir.tar.gz`` with an unfiltered ``extractall`` (path
traversal possible, CVE-2007-4559); the SDK later added a filter. Here every member is checked *before*
anything is written, and extraction then also runs under :func:`tarfile.data_filter` where Python has it
(3.11.4+). Refused, with :class:`UnsafeArchive` naming the member:

* absolute names (``/etc/x``) and names with ``..`` components;
* members inside a directory that is itself a symlink in the archive (the classic two-step escape);
* symlinks whose target is absolute, or leaves the destination once every symlink of the archive on the
  way is followed (chains and loops included); hard links whose target leaves the destination;
* character/block devices, FIFOs and other special members.
"""

from __future__ import annotations

import os
import re
import tarfile
import tempfile
from pathlib import Path
from typing import IO, Union

__all__ = ["UnsafeArchive", "check_members", "make_tar_gz", "safe_extract"]

TarSource = Union[str, "os.PathLike[str]", IO[bytes]]
_MAX_LINK_HOPS = 40
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


class UnsafeArchive(ValueError):
    """A tar member that would be written outside the destination, or is not a plain file/dir/link."""

    def __init__(self, member: str, problem: str) -> None:
        self.member = member
        self.problem = problem
        super().__init__(f"unsafe archive member {member!r}: {problem}")


def _components(name: str, member: str, what: str) -> list[str]:
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise UnsafeArchive(member, f"{what} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(member, f"{what} contains '..' (path traversal)")
    return parts


def _resolve(parts: list[str], links: dict[str, str], member: str) -> list[str]:
    """Follow ``parts`` from the destination root through the archive's symlinks; refuse any escape."""
    stack: list[str] = []
    pending = list(parts)
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                raise UnsafeArchive(member, "link target leaves the destination directory")
            stack.pop()
            continue
        stack.append(part)
        target = links.get("/".join(stack))
        if target is None:
            continue
        hops += 1
        if hops > _MAX_LINK_HOPS:
            raise UnsafeArchive(member, "symlink loop")
        if target.startswith("/") or _DRIVE.match(target):
            raise UnsafeArchive(member, f"symlink chain reaches an absolute target {target!r}")
        stack.pop()
        pending = target.split("/") + pending
    return stack


def check_members(members: list[tarfile.TarInfo]) -> None:
    """Raise :class:`UnsafeArchive` for the first member that is not safe to extract."""
    names: dict[int, list[str]] = {}
    links: dict[str, str] = {}
    for m in members:
        if m.ischr() or m.isblk():
            raise UnsafeArchive(m.name, "is a device file")
        if m.isfifo():
            raise UnsafeArchive(m.name, "is a FIFO")
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise UnsafeArchive(m.name, f"has an unsupported member type {m.type!r}")
        names[id(m)] = _components(m.name, m.name, "name")
        if m.issym():
            if not m.linkname:
                raise UnsafeArchive(m.name, "symlink has an empty target")
            if m.linkname.startswith(("/", "\\")) or _DRIVE.match(m.linkname):
                raise UnsafeArchive(m.name, f"symlink points to the absolute path {m.linkname!r}")
            links["/".join(names[id(m)])] = m.linkname
    for m in members:
        parts = names[id(m)]
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in links:
                raise UnsafeArchive(m.name, f"lies inside {prefix!r}, which the archive makes a symlink")
        if m.issym():
            _resolve(parts[:-1] + m.linkname.split("/"), links, m.name)
        elif m.islnk():
            _resolve(_components(m.linkname, m.name, "hard link target"), links, m.name)


def _open(source: TarSource) -> tarfile.TarFile:
    if hasattr(source, "read"):
        return tarfile.open(fileobj=source, mode="r:*")  # type: ignore[arg-type]
    return tarfile.open(os.fspath(source), mode="r:*")  # type: ignore[arg-type]


def safe_extract(source: TarSource, dest: str | os.PathLike[str]) -> list[str]:
    """Extract a (possibly compressed) tar into ``dest`` after checking every member; returns the names.

    ``source`` is a path or a seekable binary file object. Nothing is written when a member is refused.
    """
    dest_path = Path(dest)
    with _open(source) as archive:
        members = archive.getmembers()
        check_members(members)
        dest_path.mkdir(parents=True, exist_ok=True)
        try:  # the "data" filter exists in every maintained Python (3.10.12+, 3.11.4+)
            archive.extractall(dest_path, members=members, filter="data")
        except tarfile.FilterError as err:  # belt and braces: the pre-check should have caught it
            raise UnsafeArchive(getattr(err.tarinfo, "name", "?"), str(err)) from err
        return [m.name for m in members]


def make_tar_gz(src_dir: str | os.PathLike[str], dest_file: str | os.PathLike[str]) -> Path:
    """Tar+gzip the contents of ``src_dir`` (member names relative to it, sorted) into ``dest_file``.

    Written to a temporary file and renamed into place. Symlinks are stored as links, as ``tar`` does.
    """
    src = Path(src_dir)
    dest = Path(dest_file)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, mode="w:gz", compresslevel=6) as archive:
            if src.is_dir():
                for child in sorted(src.iterdir(), key=lambda p: p.name):
                    archive.add(child, arcname=child.name, recursive=True)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest
