"""``model.tar.gz`` with ``code/``: lint it, then repack it streamed, without recompressing the model.

What goes in ``code/`` follows the SDK's ``utils.repack_model`` / ``_create_or_update_code_dir``
(v2.257): the contents of a local ``source_dir`` (it *replaces* an existing ``code/``), or, with no
``source_dir``, the entry point alone (added to an existing ``code/``; an S3 ``source_dir`` is extracted
over it too); each dependency goes to ``code/lib/<basename>``. Members are listed by
:func:`airflow_sm_pytorch.packaging.sourcedir_files` and written as ``packaging`` writes them: sorted,
mtime 0, uid/gid 0, modes 0o755/0o644. Unlike the SDK we add no ``""`` root member.

The API (everything reads a binary stream once, from where it stands, and never seeks)::

    code = code_files(entry_point=..., source_dir=..., dependencies=[...])   # [(arcname, path)]
    info = scan(source, name=uri)          # ArchiveInfo: members, has_code, gzip layout, findings
    warnings = lint(info, code, entry_point=..., replace_code=True)   # SpecError on a Common Mistake
    result = repack(source2, out, code, info=info, replace_code=True) # a second read of the original
    repack_file(src, dest, code, entry_point=..., replace_code=...)   # all of the above, file to file
    lint_dir(path) / lint_keys(keys, name=uri)   # uncompressed model data (S3Prefix, CompressionType None)

``source`` needs only ``read(n)`` (a file, a botocore ``StreamingBody``); ``out`` only ``write``. Memory
is constant in the archive's size (1 MiB buffers; member *names* are kept, as tarfile does).

**How the model is not recompressed (the splice).** The output is one gzip member: our header, the
``code/`` tar blocks deflated and ended with a sync flush (no final block, byte aligned, no end-of-archive
marker), then the original's deflate data copied byte for byte (it ends with its own final block and the
original tar's end-of-archive marker), then a trailer whose CRC-32 is combined from the two parts
(:func:`crc32_combine`, as zlib's ``crc32_combine``) and whose size is their sum. A back-reference in the
original's data never reaches before its own start, so the concatenated stream decodes to
``code blocks + original tar``: one valid tar. We do not emit two gzip members (``gzip(code) +
original``), although gzip allows it: GNU tar reads those, but Python's ``tarfile`` stream mode
(``"r|gz"``, used by many extractors) silently stops after the first member and would see ``code/``
only. The splice needs the original's uncompressed size and CRC, which :func:`scan` measures.

**When we rewrite instead** (``RepackResult.method == "rewrite"``, with the reason, logged): the original
is not gzip (plain, bz2, xz tar), has several gzip members or trailing bytes, already has ``code/`` and the
new code replaces it (local ``source_dir``), or would overwrite one of its ``code/`` files (merge). Then
the members are re-read in stream mode and re-written with the new ``code/`` (gzip level 6).

**Lint** (:func:`lint`, :func:`lint_dir`, :func:`lint_keys`; errors are :class:`SpecError` on field
``model_data`` naming the fix; warnings are returned): the seed's "Common Mistakes" and §6.2's unsafe
members: an extra top-level directory (``tar czvf model.tar.gz my_model/``), the inference script not
directly under ``code/`` (at the root, ``code/src/``, or an ``entry_point`` nested in ``source_dir``,
whose basename is ``SAGEMAKER_PROGRAM``), no file outside ``code/``, ``code`` not a directory, absolute
or ``..`` names, links leaving the archive, devices/FIFOs (``archives.check_members``), not a tar
or a corrupt gzip. Warned: no inference script and not exactly one root ``.pt``/``.pth`` (the default
``model_fn`` loads ``model.pt`` or the only one), model files under a single directory.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import stat
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from airflow_sm_pytorch.exceptions import SpecError
from airflow_sm_pytorch.archives import UnsafeArchive, check_members
from airflow_sm_pytorch.packaging import DIR_MODE, _order, _tarinfo, sourcedir_files

__all__ = [
    "ArchiveInfo", "Finding", "RepackResult", "code_files", "crc32_combine", "lint", "lint_dir",
    "lint_keys", "repack", "repack_file", "scan",
]

log = logging.getLogger(__name__)

FIELD = "model_data"
CODE = "code"
DEFAULT_PROGRAM = "inference.py"  # the toolkit's SAGEMAKER_PROGRAM default
MODEL_SUFFIXES = (".pt", ".pth")
CHUNK = 1 << 20
RAW_CHUNK = 1 << 18  # compressed bytes fed at a time: bounds zlib's unconsumed_tail copies on 1000:1 data
BLOCK = tarfile.BLOCKSIZE
_GZIP_HEADER = b"\x1f\x8b\x08\x00" + b"\x00" * 4 + b"\x00\xff"  # deflate, no flags, mtime 0, OS unknown
_TAR_ENCODING = ("utf-8", "surrogateescape")  # tarfile's own defaults

Code = Sequence[tuple[str, Path]]


@dataclass(frozen=True)
class Finding:
    """One lint result: ``problem`` says what is wrong (with the member), ``fix`` what to do."""

    severity: Literal["error", "warning"]
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.problem}: {self.fix}"


@dataclass(frozen=True)
class ArchiveInfo:
    """What :func:`scan` learnt from one read of an archive."""

    name: str                                   # display name (URI or path), used in errors
    members: tuple[tarfile.TarInfo, ...]        # headers only, in archive order
    compression: str                            # "gzip", "none", "bz2", "xz"
    findings: tuple[Finding, ...] = ()          # about the archive alone (unsafe members)
    gzip_members: int = 0
    header_size: int = 0                        # gzip: bytes before the first deflate block
    deflate_size: int = 0                       # gzip: the first member's deflate data
    trailing_bytes: int = 0                     # gzip: bytes after the last member
    uncompressed_size: int = 0                  # gzip: of the first member
    crc32: int = 0                              # gzip: of the first member

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    @property
    def has_code(self) -> bool:
        return any(_top(m.name) == CODE for m in self.members)


@dataclass(frozen=True)
class RepackResult:
    method: Literal["splice", "rewrite"]
    reason: str                                 # why we rewrote ("" for a splice)
    members: tuple[str, ...]                    # the new archive's member names, in order
    code_sha256: str                            # of the code/ tar blocks: the same code, the same hash
    bytes_written: int = field(default=0)


# ---------------------------------------------------------------------------------------------- code/

def code_files(*, entry_point: str, source_dir: str | None = None,
               dependencies: Iterable[str] = ()) -> list[tuple[str, Path]]:
    """``code/`` members as ``(arcname, path)`` (directories included), as the SDK's repack lays them out.

    The listing (and its errors: missing files, entry point not in ``source_dir``, symlink loops) is
    ``packaging.sourcedir_files``; dependencies then move from the root to ``code/lib/<basename>``.
    """
    deps = list(dependencies)
    files = sourcedir_files(entry_point=entry_point, source_dir=source_dir, dependencies=deps)
    dep_names = {os.path.basename(os.path.normpath(d)) for d in deps}
    out: list[tuple[str, Path]] = []
    for arcname, path in files:
        top = arcname.split("/", 1)[0]
        out.append((f"{CODE}/lib/{arcname}" if top in dep_names else f"{CODE}/{arcname}", path))
    return sorted(out, key=_order)


def _code_entries(code: Code) -> list[tuple[str, Path | None]]:
    """``code`` sorted, with every missing parent directory (``code``, ``code/lib``) added."""
    names = {arcname: path for arcname, path in code}
    for arcname in list(names):
        parts = arcname.split("/")
        for i in range(1, len(parts)):
            names.setdefault("/".join(parts[:i]), None)
    return sorted(names.items(), key=lambda item: tuple(item[0].split("/")))


def _code_blocks(code: Code) -> Iterator[bytes]:
    """The tar blocks of ``code/`` (headers, data, padding) with no end-of-archive marker."""
    for arcname, path in _code_entries(code):
        if path is None or path.is_dir():
            info = tarfile.TarInfo(arcname)
            info.type, info.mode, info.mtime, info.uid, info.gid = tarfile.DIRTYPE, DIR_MODE, 0, 0, 0
            yield info.tobuf(tarfile.PAX_FORMAT, *_TAR_ENCODING)
            continue
        info = _tarinfo(arcname, path)
        with open(path, "rb") as handle:
            info.size = os.fstat(handle.fileno()).st_size
            yield info.tobuf(tarfile.PAX_FORMAT, *_TAR_ENCODING)
            yield from _copy_exact(handle, info.size, arcname)
        yield b"\0" * (-info.size % BLOCK)


def _copy_exact(handle: BinaryIO, size: int, what: str) -> Iterator[bytes]:
    left = size
    while left:
        chunk = handle.read(min(CHUNK, left))
        if not chunk:
            raise SpecError(FIELD, what, "it changed while being packaged; try again",
                            problem="ended early")
        left -= len(chunk)
        yield chunk


# ---------------------------------------------------------------------------------------------- scan

class _Inflate:
    """A ``read(n)`` view of the decompressed data of a gzip stream of one *or more* members.

    Counts what the splice needs: members, the first member's header and deflate sizes, its CRC and
    uncompressed size (checked against its trailer), and bytes after the last member.
    """

    def __init__(self, raw: BinaryIO, name: str, head: bytes = b"") -> None:
        self.raw, self.name, self.pending = raw, name, head
        self.members = 0
        self.header_size = self.deflate_size = self.trailing = 0
        self.first_size = self.first_crc = 0
        self._d: zlib._Decompress | None = None
        self._crc = self._size = self._consumed = 0
        self._done = False

    def _bad(self, problem: str) -> SpecError:
        return SpecError(FIELD, self.name, "upload it again, or recreate it with tar czvf model.tar.gz *",
                         problem=f"is not a valid gzip file ({problem})")

    def _fill(self, n: int) -> bool:
        while len(self.pending) < n:
            chunk = self.raw.read(max(RAW_CHUNK, n - len(self.pending)))
            if not chunk:
                return False
            self.pending += chunk
        return True

    def _header(self) -> None:
        if not self._fill(10):
            raise self._bad("truncated header")
        if self.pending[:3] != b"\x1f\x8b\x08":
            raise self._bad("bad header")
        flags, pos = self.pending[3], 10
        if flags & 4:  # FEXTRA
            if not self._fill(pos + 2):
                raise self._bad("truncated header")
            pos += 2 + struct.unpack("<H", self.pending[pos:pos + 2])[0]
        for bit in (8, 16):  # FNAME, FCOMMENT: zero-terminated
            if flags & bit:
                while (end := self.pending.find(b"\0", pos)) < 0:
                    if not self._fill(len(self.pending) + 1):
                        raise self._bad("truncated header")
                pos = end + 1
        pos += 2 if flags & 2 else 0  # FHCRC
        if not self._fill(pos):
            raise self._bad("truncated header")
        self.pending = self.pending[pos:]
        self.members += 1
        if self.members == 1:
            self.header_size = pos
        self._d = zlib.decompressobj(-zlib.MAX_WBITS)
        self._crc = self._size = self._consumed = 0

    def _trailer(self) -> None:
        if not self._fill(8):
            raise self._bad("truncated: the trailer is missing")
        crc, isize = struct.unpack("<II", self.pending[:8])
        if crc != self._crc or isize != self._size & 0xFFFFFFFF:
            raise self._bad("CRC or length mismatch: the data is corrupt")
        self.pending = self.pending[8:]
        if self.members == 1:
            self.deflate_size, self.first_crc, self.first_size = self._consumed, self._crc, self._size
        self._d = None
        self._fill(2)
        if self.pending[:2] == b"\x1f\x8b":
            return
        while True:  # bytes after the last member (gzip ignores zero padding; Python's gzip too)
            if self.pending.strip(b"\0"):
                raise self._bad("garbage after the last member")
            self.trailing += len(self.pending)
            self.pending = self.raw.read(CHUNK)
            if not self.pending:
                self._done = True
                return

    def read(self, n: int = -1) -> bytes:
        n = CHUNK if n is None or n < 0 else n
        while not self._done:
            if self._d is None:
                self._header()
                continue
            if not self.pending:
                self._fill(1)  # stays empty at the end of the input: zlib may still hold output
            before = len(self.pending)
            data = self._d.decompress(self.pending, n)
            if self._d.eof:
                self.pending = self._d.unused_data
            else:
                self.pending = self._d.unconsumed_tail
            self._consumed += before - len(self.pending)
            self._crc = zlib.crc32(data, self._crc)
            self._size += len(data)
            if self._d.eof:
                self._trailer()
            if data:
                return data
            if self._d is not None and not before:
                raise self._bad("truncated: the data ends before the last block")
        return b""


class _Prefixed:
    """``read(n)`` of ``head`` then ``raw``: the first bytes were read to sniff the format."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self.head, self.raw = head, raw

    def read(self, n: int = -1) -> bytes:
        head, self.head = self.head, b""  # sniffers read one block and look at all of it: give it whole
        return head + self.raw.read(-1 if n is None or n < 0 else max(n - len(head), 0))


def _open_stream(source: BinaryIO, name: str) -> tuple[tarfile.TarFile, _Inflate | None]:
    head = source.read(2)
    reader: _Inflate | _Prefixed
    if head == b"\x1f\x8b":
        reader = _Inflate(source, name, head)
    else:
        reader = _Prefixed(head, source)
    try:
        tar = tarfile.open(fileobj=reader, mode="r|" if isinstance(reader, _Inflate) else "r|*",
                           bufsize=CHUNK)  # type: ignore[call-overload]
    except tarfile.ReadError as exc:
        raise _not_a_tar(name, exc) from None
    return tar, reader if isinstance(reader, _Inflate) else None


def _not_a_tar(name: str, exc: Exception) -> SpecError:
    return SpecError(FIELD, name, "model data must be a tar archive (gzip-compressed): put the model "
                     "files in a directory, cd into it and run tar czvf ../model.tar.gz *",
                     problem=f"is not a readable tar archive ({exc})")


def scan(source: BinaryIO, *, name: str) -> ArchiveInfo:
    """Read ``source`` once to its end: member headers, compression and gzip layout, unsafe members.

    Raises :class:`SpecError` when it is not a tar, or its gzip data is corrupt or truncated.
    """
    tar, inflate = _open_stream(source, name)
    try:
        with tar:
            members = tuple(tar)
        if inflate is not None:
            while inflate.read(CHUNK):  # to the trailer(s): CRC check, member count, trailing bytes
                pass
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise _not_a_tar(name, exc) from None
    comptype = getattr(tar.fileobj, "comptype", "tar")
    findings = tuple(_unsafe(members))
    if inflate is None:
        return ArchiveInfo(name, members, "none" if comptype == "tar" else comptype, findings)
    return ArchiveInfo(name, members, "gzip", findings, gzip_members=inflate.members,
                       header_size=inflate.header_size, deflate_size=inflate.deflate_size,
                       trailing_bytes=inflate.trailing, uncompressed_size=inflate.first_size,
                       crc32=inflate.first_crc)


# ---------------------------------------------------------------------------------------------- lint

_UNSAFE_FIX = {
    "absolute": "create the archive with relative names: cd into the model directory and run "
                "tar czvf ../model.tar.gz *",
    "'..'": "create the archive with relative names inside one directory (no '..'): cd into the model "
            "directory and run tar czvf ../model.tar.gz *",
    "device": "remove device files and FIFOs; only files, directories and links inside the archive may "
              "go in",
    "FIFO": "remove device files and FIFOs; only files, directories and links inside the archive may go in",
}
_LINK_FIX = ("replace the link with the file it points to (tar --dereference, or copy the file in); "
             "links may only point inside the archive, by relative paths")


def _unsafe(members: Sequence[tarfile.TarInfo]) -> Iterator[Finding]:
    try:
        check_members(list(members))
    except UnsafeArchive as exc:
        fix = next((f for key, f in _UNSAFE_FIX.items() if key in exc.problem), _LINK_FIX)
        yield Finding("error", f"has an unsafe member {exc.member!r} ({exc.problem})", fix)


def _parts(name: str) -> list[str]:
    return [p for p in name.split("/") if p not in ("", ".")]


def _top(name: str) -> str:
    parts = _parts(name)
    return parts[0] if parts else ""


def _kind(member: tarfile.TarInfo) -> str:
    return "dir" if member.isdir() else "file" if member.isfile() else "link" if member.issym() or \
        member.islnk() else "other"


def _layout(members: Iterable[tarfile.TarInfo], code: Code, replace_code: bool) -> dict[str, str]:
    """The model directory after the repack: normalised name -> "file" | "dir" | "link" | "other"."""
    out: dict[str, str] = {}
    for m in members:
        name = "/".join(_parts(m.name))
        if name and not (code and replace_code and _top(name) == CODE):
            out[name] = _kind(m)
    for arcname, path in _code_entries(code):
        out[arcname] = "dir" if path is None or path.is_dir() else "file"
    return out


def _findings(layout: dict[str, str], program: str) -> Iterator[Finding]:
    files = [n for n, k in layout.items() if k in ("file", "link")]
    script = f"{CODE}/{program}"
    if layout.get(CODE, "dir") != "dir":
        yield Finding("error", f"has a {CODE!r} member that is not a directory",
                      "remove it: code/ must be a directory holding the inference script")
    tops = {_top(n) for n in layout}
    top_files = [n for n in files if "/" not in n]
    if len(tops - {CODE}) == 1 and not top_files:
        (outer,) = tops - {CODE}
        inner = [n[len(outer) + 1:] for n in files if n.startswith(outer + "/")]
        fix = (f"create the archive from inside that directory: cd {outer} && tar czvf ../model.tar.gz * "
               "(model files at the root, code/ beside them)")
        model_inside = [n for n in inner if "/" not in n and n.endswith(MODEL_SUFFIXES + (".py",))]
        if any(n.startswith(CODE + "/") for n in inner) or (model_inside and script not in layout):
            yield Finding("error", f"has everything under {outer + '/'!r} (an extra top-level directory)",
                          fix)
        elif model_inside:
            yield Finding("warning", f"has its model files under {outer + '/'!r}, not at the root", fix +
                          f"; ignore this if your model_fn loads them from {outer}/")
    if script not in layout:
        misplaced = [n for n in files if n.rsplit("/", 1)[-1] == program]
        if misplaced:
            yield Finding("error", f"has {misplaced[0]!r} but no {script!r}: the model server imports "
                          f"{program} from code/ only", f"move it to {script} (directly under code/; "
                          "with source_dir, the entry_point must be at its top level)")
    if not [n for n in files if _top(n) != CODE]:
        yield Finding("error", "has no model file outside code/",
                      "put the model files (e.g. model.pth) at the root of the archive, beside code/")
    elif script not in layout:
        weights = [n for n in top_files if n.endswith(MODEL_SUFFIXES)]
        if "model.pt" not in weights and len(weights) != 1:
            yield Finding("warning", f"has no {script} and {len(weights)} .pt/.pth files at its root "
                          f"{weights[:5]}: the default model_fn loads model.pt or the only .pt/.pth file",
                          "add code/inference.py with a model_fn (entry_point=...), or save one TorchScript "
                          "model.pt at the root")


def _check(findings: Iterable[Finding], name: str) -> list[Finding]:
    findings = list(findings)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        fix = errors[0].fix + "".join(f"; also, it {e}" for e in errors[1:])
        raise SpecError(FIELD, name, fix, problem=errors[0].problem)
    for warning in findings:
        log.warning("%s %s", name, warning)
    return findings


def _program(entry_point: str | None) -> str:
    return os.path.basename(entry_point) if entry_point else DEFAULT_PROGRAM


def lint(info: ArchiveInfo, code: Code = (), *, entry_point: str | None = None,
         replace_code: bool = True) -> list[Finding]:
    """Check the model directory the repack will produce; raise :class:`SpecError` on the first error
    (naming the fix; further errors are appended), return (and log) the warnings."""
    layout = _layout(info.members, code, replace_code)
    return _check([*info.findings, *_findings(layout, _program(entry_point))], info.name)


def lint_dir(path: str | os.PathLike[str], *, name: str | None = None,
             entry_point: str | None = None) -> list[Finding]:
    """The same rules for uncompressed model data kept as a directory tree (symlinks not followed)."""
    root = Path(path)
    name = name or str(path)
    if not root.is_dir():
        raise SpecError(FIELD, name, "pass the directory that holds the model files",
                        problem="is not a directory")
    members = []
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in sorted(dirnames + filenames):
            full = Path(dirpath, entry)
            info = tarfile.TarInfo(full.relative_to(root).as_posix())
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(full)
            elif stat.S_ISDIR(mode):
                info.type = tarfile.DIRTYPE
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                info.type = tarfile.CHRTYPE
            elif stat.S_ISFIFO(mode):
                info.type = tarfile.FIFOTYPE
            members.append(info)
    return _check([*_unsafe(members), *_findings(_layout(members, (), False), _program(entry_point))],
                  name)


def lint_keys(keys: Iterable[str], *, name: str, entry_point: str | None = None) -> list[Finding]:
    """The same rules for an S3 prefix (``CompressionType: None``): ``keys`` relative to the prefix."""
    members = [tarfile.TarInfo(k) for k in keys]
    return _check([*_unsafe(members), *_findings(_layout(members, (), False), _program(entry_point))],
                  name)


# -------------------------------------------------------------------------------------------- repack

def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)`` (zlib's ``crc32_combine``)."""
    def times(matrix: list[int], vector: int) -> int:
        total, i = 0, 0
        while vector:
            if vector & 1:
                total ^= matrix[i]
            vector >>= 1
            i += 1
        return total

    def square(matrix: list[int]) -> list[int]:
        return [times(matrix, matrix[n]) for n in range(32)]

    if len2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # the operator for one zero bit
    even = square(odd)   # two zero bits
    odd = square(even)   # four zero bits
    while len2:          # apply len2 zero bytes to crc1, one bit of len2 at a time
        even = square(odd)
        if len2 & 1:
            crc1 = times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = square(even)
        if len2 & 1:
            crc1 = times(odd, crc1)
        len2 >>= 1
    return crc1 ^ crc2


def _method(info: ArchiveInfo, code: Code, replace_code: bool) -> str:
    """"" when the original can be spliced, else why it must be rewritten."""
    if info.compression != "gzip":
        return f"the original is not gzip-compressed ({info.compression})"
    if info.gzip_members != 1 or info.trailing_bytes:
        return f"the original has {info.gzip_members} gzip members and {info.trailing_bytes} trailing bytes"
    if info.has_code and replace_code:
        return "the original already has code/, which source_dir replaces"
    overlap = {a for a, p in code if not p.is_dir()} & {"/".join(_parts(m.name)) for m in info.members}
    if overlap:
        return f"the new code/ overwrites {sorted(overlap)[:3]} from the original"
    return ""


def repack(source: BinaryIO, out: BinaryIO, code: Code, *, info: ArchiveInfo,
           replace_code: bool = True) -> RepackResult:
    """Write ``source`` (the archive :func:`scan` described as ``info``, read again once) with ``code``
    under ``code/`` to ``out``. ``replace_code``: drop the original's ``code/`` (a local ``source_dir``,
    as the SDK does) rather than add to it (entry point only, or an S3 ``source_dir``)."""
    digest = hashlib.sha256()
    reason = _method(info, code, replace_code)
    writer = _Counter(out)
    if reason:
        log.warning("%s: rewriting the archive (recompressing it) because %s", info.name, reason)
        kept = _rewrite(source, writer, code, info, replace_code, digest)
    else:
        log.info("%s: adding code/ without recompressing the model (gzip splice)", info.name)
        _splice(source, writer, code, info, digest)
        kept = info.names
    names = [a for a, _ in _code_entries(code)] + kept
    return RepackResult("rewrite" if reason else "splice", reason, tuple(names), digest.hexdigest(),
                        writer.count)


class _Counter:
    def __init__(self, out: BinaryIO) -> None:
        self.out, self.count = out, 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        if hasattr(self.out, "flush"):
            self.out.flush()


def _splice(source: BinaryIO, out: _Counter, code: Code, info: ArchiveInfo, digest: hashlib._Hash) -> None:
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    crc = size = 0
    out.write(_GZIP_HEADER)
    for block in _code_blocks(code):
        digest.update(block)
        crc, size = zlib.crc32(block, crc), size + len(block)
        out.write(deflate.compress(block))
    out.write(deflate.flush(zlib.Z_SYNC_FLUSH))  # byte-aligned, and no final block: the original's ends it
    for _ in _copy_exact(source, info.header_size, info.name):
        pass
    for chunk in _copy_exact(source, info.deflate_size, info.name):
        out.write(chunk)
    trailer = b"".join(_copy_exact(source, 8, info.name))
    if trailer != struct.pack("<II", info.crc32, info.uncompressed_size & 0xFFFFFFFF):
        raise SpecError(FIELD, info.name, "it changed between the scan and the repack; try again",
                        problem="is not the archive that was scanned")
    total = size + info.uncompressed_size
    out.write(struct.pack("<II", crc32_combine(crc, info.crc32, info.uncompressed_size), total & 0xFFFFFFFF))


def _rewrite(source: BinaryIO, out: _Counter, code: Code, info: ArchiveInfo, replace_code: bool,
             digest: hashlib._Hash) -> list[str]:
    new = {a for a, _ in _code_entries(code)}
    kept: list[str] = []
    with gzip.GzipFile(filename="", mode="wb", fileobj=out,  # type: ignore[arg-type]
                       mtime=0, compresslevel=6) as gz:
        for block in _code_blocks(code):
            digest.update(block)
            gz.write(block)
        tar, _ = _open_stream(source, info.name)
        with tar:
            for member in tar:
                name = "/".join(_parts(member.name))
                if (replace_code and _top(name) == CODE) or name in new:
                    continue
                kept.append(member.name)
                if member.isfile():
                    member.type = tarfile.REGTYPE
                gz.write(member.tobuf(tarfile.PAX_FORMAT, *_TAR_ENCODING))
                if member.isfile():
                    data = tar.extractfile(member)
                    for chunk in _copy_exact(data, member.size, member.name):  # type: ignore[arg-type]
                        gz.write(chunk)
                    gz.write(b"\0" * (-member.size % BLOCK))
        gz.write(b"\0" * (2 * BLOCK))
        gz.write(b"\0" * (-(gz.tell()) % tarfile.RECORDSIZE))
    return kept


def repack_file(src: str | os.PathLike[str], dest: str | os.PathLike[str], code: Code, *,
                name: str | None = None, entry_point: str | None = None,
                replace_code: bool = True) -> tuple[RepackResult, list[Finding]]:
    """Scan, lint and repack a local archive into ``dest`` (written to a temporary file, then renamed).
    Returns the result and the lint warnings; a lint error leaves ``dest`` untouched."""
    name = name or os.fspath(src)
    with open(src, "rb") as handle:
        info = scan(handle, name=name)
    warnings = lint(info, code, entry_point=entry_point, replace_code=replace_code)
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with open(src, "rb") as handle, os.fdopen(fd, "wb") as out:
            result = repack(handle, out, code, info=info, replace_code=replace_code)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return result, warnings
