"""``sourcedir.tar.gz``: the SDK's archive membership, written deterministically.

Membership follows ``sagemaker.fw_utils.tar_and_upload_dir`` + ``utils.create_tar_file`` (SDK v2.257.6):
the *contents* of ``source_dir`` sit at the archive root, each dependency is added at the root under
its basename, and with no ``source_dir`` only the entry-point file (plus dependencies) is added.
Nothing is filtered (hidden files and ``__pycache__`` go in) and symlinks are followed
(``dereference=True``).

Where we differ on purpose: the SDK writes members in ``os.listdir`` order with real mtimes, owners and
modes, so two uploads of the same code differ. We sort members (a directory, then its children, as
tarfile's recursion does) and zero every varying header field, so the same files give the same bytes
and the same sha256, whatever their timestamps.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from airflow_sm_pytorch.exceptions import SpecError

DIR_MODE = 0o755
FILE_MODE = 0o644
EXEC_MODE = 0o755
SOURCEDIR_FILENAME = "sourcedir.tar.gz"

Files = Sequence[tuple[str, Path]]


def _stat(path: str, field: str) -> os.stat_result:
    """``os.stat`` (follows symlinks); a missing path, dangling link or link loop is a SpecError."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise SpecError(field, path, f"the symlink points to {os.readlink(path)!r}, which does not "
                            "exist; fix or remove the link (symlinks are followed when packaging)",
                            problem="is a broken symlink") from None
        raise SpecError(field, path, "check the path (relative paths are resolved against the current "
                        f"directory, {os.getcwd()})", problem="does not exist") from None
    except OSError as exc:  # ELOOP: a link that points at itself, directly or not
        raise SpecError(field, path, f"it cannot be followed ({exc.strerror}); remove the symlink loop",
                        problem="cannot be read") from None


def _walk(path: str, arcname: str, field: str, ancestors: tuple[str, ...]) -> list[tuple[str, Path]]:
    st = _stat(path, field)
    if stat.S_ISREG(st.st_mode):
        return [(arcname, Path(path))]
    if not stat.S_ISDIR(st.st_mode):
        raise SpecError(field, path, "remove it or move it out of the packaged directories: only regular "
                        "files and directories can go into sourcedir.tar.gz",
                        problem="is not a regular file or directory")
    real = os.path.realpath(path)
    if real in ancestors:
        raise SpecError(field, path, f"it leads back to {real!r}, one of its own parent directories; "
                        "remove the symlink loop (symlinks are followed when packaging)",
                        problem="is a symlink loop")
    out = [(arcname, Path(path))]
    for name in sorted(os.listdir(path)):
        out += _walk(os.path.join(path, name), f"{arcname}/{name}", field, (*ancestors, real))
    return out


def _order(item: tuple[str, Path]) -> tuple[str, ...]:
    # Compare by path components: "utils" < "utils/a.py" < "utils-x" (a directory, then its children).
    return tuple(item[0].split("/"))


def sourcedir_files(
    *, entry_point: str, source_dir: str | None, dependencies: Iterable[str] = ()
) -> list[tuple[str, Path]]:
    """Every archive member as ``(arcname, absolute path)``, directories included, in archive order.

    Raises :class:`SpecError` when ``source_dir`` is missing, the entry point is not in it (the SDK's
    ``validate_source_dir`` message), a dependency is missing, a symlink is broken or loops, or two
    members would land at the same archive path.
    """
    roots: list[tuple[str, str, str]] = []  # (path, arcname, field)
    if source_dir is not None:
        if not os.path.isdir(source_dir):
            _stat(source_dir, "source_dir")
            raise SpecError("source_dir", source_dir, "pass the directory that holds the entry point",
                            problem="is not a directory")
        if not os.path.isfile(os.path.join(source_dir, entry_point)):
            raise SpecError("entry_point", entry_point,
                            f'No file named "{entry_point}" was found in directory "{source_dir}".',
                            problem="is not in source_dir")
        roots += [(os.path.join(source_dir, n), n, "source_dir") for n in os.listdir(source_dir)]
    else:
        if not os.path.isfile(entry_point):
            _stat(entry_point, "entry_point")
            raise SpecError("entry_point", entry_point, "pass the path of a Python script or shell file",
                            problem="is not a file")
        roots.append((entry_point, os.path.basename(entry_point), "entry_point"))
    for i, dep in enumerate(dependencies):
        name = os.path.basename(os.path.normpath(dep))
        roots.append((dep, name, f"dependencies[{i}]"))

    files: list[tuple[str, Path]] = []
    seen: dict[str, str] = {}
    for path, arcname, field in roots:
        absolute = os.path.abspath(path)
        for member in _walk(absolute, arcname, field, ()):
            if member[0] in seen:
                raise SpecError(field, path, f"it would be packaged as {member[0]!r}, which "
                                f"{seen[member[0]]} already provides; rename one of them",
                                problem="clashes with another archive member")
            seen[member[0]] = field
            files.append(member)
    return sorted(files, key=_order)


def archive_members(files: Files) -> list[str]:
    """Member names in archive order, as ``tarfile.getnames()`` lists them."""
    return [arcname for arcname, _ in sorted(files, key=_order)]


def _tarinfo(arcname: str, path: Path) -> tarfile.TarInfo:
    st = _stat(str(path), arcname)
    info = tarfile.TarInfo(arcname)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISDIR(st.st_mode):
        info.type, info.mode, info.size = tarfile.DIRTYPE, DIR_MODE, 0
    else:
        info.type, info.size = tarfile.REGTYPE, st.st_size
        info.mode = EXEC_MODE if st.st_mode & 0o111 else FILE_MODE
    return info


def write_sourcedir(files: Files, fileobj: BinaryIO) -> None:
    """Write a gzip tar of ``files`` to ``fileobj``: sorted, mtime 0, uid/gid 0, no owner names,
    modes 0o755 (directories, executables) / 0o644, and a gzip header with mtime 0 and no filename."""
    with gzip.GzipFile(filename="", mode="wb", fileobj=fileobj, mtime=0, compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for arcname, path in sorted(files, key=_order):
                info = _tarinfo(arcname, path)
                if info.isdir():
                    tar.addfile(info)
                    continue
                with open(path, "rb") as handle:
                    info.size = os.fstat(handle.fileno()).st_size
                    tar.addfile(info, handle)


def sourcedir_bytes(files: Files) -> tuple[bytes, str]:
    """The archive's bytes and their sha256 (hex)."""
    buffer = io.BytesIO()
    write_sourcedir(files, buffer)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()
