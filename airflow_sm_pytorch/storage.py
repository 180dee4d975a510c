"""One interface for ``s3://`` and ``file://`` locations: uploads, downloads, checksums.

* ``s3://bucket/key`` goes through a boto3 S3 client made on first use by the factory given to
  :class:`Storage` (default ``boto3.client("s3")``, imported lazily, so the standard environment such as
  ``AWS_ENDPOINT_URL_S3`` and ``AWS_DEFAULT_REGION`` applies). Nothing imports boto3 at module import.
* ``file:///abs/path`` is the local disk. The path is percent-decoded (RFC 8089; ``Path.as_uri()``
  encodes spaces as ``%20``); ``file://localhost/abs`` is accepted; a relative ``file://dir/x`` is
  resolved against the current directory, as the SageMaker SDK's local mode does (netloc + path).

Downloads follow SageMaker's ``S3Prefix`` semantics (:meth:`Storage.download`). Uploads of bytes and
files record the content's sha256 (S3 object metadata ``sha256``) so that callers can skip re-uploading
identical content (:meth:`Storage.sha256`). Local writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

__all__ = ["ParsedUri", "Storage", "file_sha256", "parse_uri"]

_CHUNK = 1024 * 1024
_MISSING_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


@dataclass(frozen=True)
class ParsedUri:
    """``scheme`` is ``"s3"`` or ``"file"``; ``bucket``/``key`` for S3, ``path`` (absolute) for files."""

    scheme: str
    bucket: str = ""
    key: str = ""
    path: str = ""


def parse_uri(uri: str) -> ParsedUri:
    """Split an ``s3://`` or ``file://`` URI; anything else is a :class:`ValueError` saying what to use.

    >>> parse_uri("s3://b/some/key")
    ParsedUri(scheme='s3', bucket='b', key='some/key', path='')
    >>> parse_uri("file:///tmp/a%20b").path
    '/tmp/a b'
    """
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"{uri!r} is not a URI: use s3://<bucket>/<key> or file:///<absolute path>")
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"{uri!r} names no bucket: use s3://<bucket>/<key>")
        return ParsedUri("s3", bucket=bucket, key=key)
    if uri.startswith("file://"):
        rest = uri[len("file://"):]
        if rest.startswith("localhost/"):
            rest = rest[len("localhost"):]
        path = unquote(rest)
        if not path:
            raise ValueError(f"{uri!r} names no path: use file:///<absolute path>")
        return ParsedUri("file", path=os.path.abspath(path))
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    what = f"the scheme {scheme!r} is not supported" if scheme else "it has no scheme"
    raise ValueError(f"{uri!r}: {what}; use s3://<bucket>/<key> or file:///<absolute path>")


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _default_s3_client() -> Any:
    import boto3  # lazily: only when an s3:// URI is used

    return boto3.client("s3")


def _error_code(err: BaseException) -> str:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _safe_relative(rel: str, what: str) -> str:
    """A relative POSIX path that stays inside its base (S3 keys may hold ``..`` or a leading ``/``)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"refusing to write {what!r}: its relative path {rel!r} leaves the destination")
    return "/".join(parts)


def _atomic_write(dest: Path, write: Callable[[Any], None]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Storage:
    """Read and write ``s3://`` and ``file://`` URIs alike."""

    def __init__(self, s3_client: Callable[[], Any] | None = None) -> None:
        self._factory = s3_client or _default_s3_client
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def s3(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            return self._client

    # ------------------------------------------------------------------ uploads
    def upload_file(self, path: str | os.PathLike[str], uri: str, *, extra_args: dict[str, Any] | None = None,
                    checksum: bool = True) -> None:
        """Upload one file. On S3 its sha256 goes into the object metadata (unless ``checksum=False``)."""
        loc = parse_uri(uri)
        if loc.scheme == "file":
            _atomic_write(Path(loc.path), lambda fh: _copy_into(path, fh))
            return
        args = self._with_sha(extra_args, file_sha256(path) if checksum else None)
        self.s3.upload_file(os.fspath(path), loc.bucket, self._key(loc, uri), ExtraArgs=args or None)

    def upload_bytes(self, data: bytes, uri: str, *, extra_args: dict[str, Any] | None = None) -> None:
        """Store ``data`` at ``uri``; on S3 with metadata ``sha256`` = the hex digest of ``data``."""
        loc = parse_uri(uri)
        if loc.scheme == "file":
            _atomic_write(Path(loc.path), lambda fh: fh.write(data))
            return
        args = self._with_sha(extra_args, hashlib.sha256(data).hexdigest())
        self.s3.upload_fileobj(io.BytesIO(data), loc.bucket, self._key(loc, uri), ExtraArgs=args)

    def upload_tree(self, src_dir: str | os.PathLike[str], uri: str) -> list[str]:
        """Upload every file under ``src_dir`` to ``<uri>/<relative path>``; returns the URIs written."""
        src = Path(src_dir)
        base = uri.rstrip("/")
        written = []
        for root, dirs, files in os.walk(src):
            dirs.sort()
            for name in sorted(files):
                full = Path(root) / name
                if not full.is_file():  # dangling links, sockets, FIFOs
                    continue
                target = f"{base}/{full.relative_to(src).as_posix()}"
                self.upload_file(full, target, checksum=False)
                written.append(target)
        return written

    # ------------------------------------------------------------------ queries
    def sha256(self, uri: str) -> str | None:
        """The content's sha256: computed for files, ``sha256`` metadata on S3; None if unknown/missing."""
        loc = parse_uri(uri)
        if loc.scheme == "file":
            return file_sha256(loc.path) if os.path.isfile(loc.path) else None
        head = self._head(loc, uri)
        return None if head is None else (head.get("Metadata") or {}).get("sha256")

    def exists(self, uri: str) -> bool:
        """True for an existing object/file, or a prefix/directory with something under it."""
        loc = parse_uri(uri)
        if loc.scheme == "file":
            return os.path.exists(loc.path)
        if loc.key and self._head(loc, uri) is not None:
            return True
        prefix = loc.key.rstrip("/") + "/" if loc.key else ""
        page = self.s3.list_objects_v2(Bucket=loc.bucket, Prefix=prefix, MaxKeys=1)
        return bool(page.get("KeyCount") or page.get("Contents"))

    # ------------------------------------------------------------------ downloads
    def download(self, uri: str, dest_dir: str | os.PathLike[str]) -> list[Path]:
        """Fetch ``uri`` into ``dest_dir`` with SageMaker ``S3Prefix`` semantics; returns the files written.

        S3: every object whose key starts with the key of ``uri`` lands at ``dest_dir/<key minus that
        prefix>`` (a leading ``/`` dropped); the object whose key *is* the prefix lands under its base name;
        "folder" marker keys ending in ``/`` are skipped. ``file://``: a directory's contents, or the one
        file under its base name. Nothing found is a :class:`FileNotFoundError`.
        """
        loc = parse_uri(uri)
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        if loc.scheme == "file":
            return _copy_local(Path(loc.path), dest, uri)
        written = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=loc.bucket, Prefix=loc.key):
            for obj in page.get("Contents", []) or []:
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                rel = key[len(loc.key):].lstrip("/") or posixpath.basename(key)
                target = dest / _safe_relative(rel, f"s3://{loc.bucket}/{key}")
                target.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(loc.bucket, key, os.fspath(target))
                written.append(target)
        if not written:
            raise FileNotFoundError(f'No S3 objects found under S3 URL "{uri}"')
        return written

    def download_file(self, uri: str, dest_path: str | os.PathLike[str]) -> Path:
        """Fetch exactly one object/file to ``dest_path``."""
        loc = parse_uri(uri)
        dest = Path(dest_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if loc.scheme == "file":
            if not os.path.isfile(loc.path):
                raise FileNotFoundError(f"{uri} is not a file")
            _atomic_write(dest, lambda fh: _copy_into(loc.path, fh))
            return dest
        try:
            self.s3.download_file(loc.bucket, self._key(loc, uri), os.fspath(dest))
        except Exception as err:
            if _error_code(err) in _MISSING_CODES:
                raise FileNotFoundError(f"{uri} does not exist") from err
            raise
        return dest

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _key(loc: ParsedUri, uri: str) -> str:
        if not loc.key or loc.key.endswith("/"):
            raise ValueError(f"{uri!r} names no object: give s3://<bucket>/<key>")
        return loc.key

    @staticmethod
    def _with_sha(extra_args: dict[str, Any] | None, digest: str | None) -> dict[str, Any]:
        args = dict(extra_args or {})
        if digest is not None:
            metadata = dict(args.get("Metadata") or {})
            metadata["sha256"] = digest
            args["Metadata"] = metadata
        return args

    def _head(self, loc: ParsedUri, uri: str) -> dict[str, Any] | None:
        try:
            return self.s3.head_object(Bucket=loc.bucket, Key=self._key(loc, uri))
        except ValueError:
            return None
        except Exception as err:
            if _error_code(err) in _MISSING_CODES:
                return None
            raise


def _copy_into(src: str | os.PathLike[str], fh: Any) -> None:
    with open(src, "rb") as source:
        shutil.copyfileobj(source, fh, _CHUNK)


def _copy_local(src: Path, dest: Path, uri: str) -> list[Path]:
    if src.is_file():
        target = dest / src.name
        shutil.copy2(src, target)
        return [target]
    if not src.is_dir():
        raise FileNotFoundError(f"{uri}: no such file or directory")
    written = []
    seen = {os.path.realpath(src)}
    for root, dirs, files in os.walk(src, followlinks=True):  # symlinked data dirs are data too
        fresh = []
        for name in sorted(dirs):
            real = os.path.realpath(os.path.join(root, name))
            if real not in seen:  # no loops, no second copy
                seen.add(real)
                fresh.append(name)
        dirs[:] = fresh
        rel_root = Path(root).relative_to(src)
        (dest / rel_root).mkdir(parents=True, exist_ok=True)
        for name in sorted(files):
            full = Path(root) / name
            if not full.is_file():
                continue
            target = dest / rel_root / name
            shutil.copy2(full, target)
            written.append(target)
    return written
