"""Where the local runtime keeps its data, and how to reach it. Stdlib only: the hook imports it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

#: The runtime's documented default port (``airflow-sm-pytorch local serve``).
DEFAULT_PORT = 8787
DEFAULT_HOST = "127.0.0.1"
ROOT_ENV = "SM_PYTORCH_LOCAL_ROOT"
#: ``AFTER[xTIMES]``: spot interruptions every managed spot job of the runtime rehearses, unless its tag
#: says otherwise (``local serve --spot-interruptions`` wins over it; see ``local/training/spot.py``).
SPOT_INTERRUPTIONS_ENV = "SM_PYTORCH_LOCAL_SPOT_INTERRUPTIONS"


def default_root() -> Path:
    """``$SM_PYTORCH_LOCAL_ROOT``, else ``$XDG_DATA_HOME/airflow-sm-pytorch``, else ``~/.local/share/...``."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "airflow-sm-pytorch"


def default_bucket_uri(root: Path, region: str) -> str:
    """The ``file://`` store that stands in for ``s3://sagemaker-<region>-<account>`` locally."""
    return (Path(root).expanduser().resolve() / "store" / f"sagemaker-{region}").as_uri()


def allowed_paths(values: Iterable[str | os.PathLike[str]]) -> tuple[Path, ...]:
    """``--allow-path`` values as absolute, symlink-free directories (they need not exist yet)."""
    out = []
    for value in values:
        if not str(value).strip():
            raise ValueError("--allow-path needs a directory, not an empty string")
        out.append(Path(os.path.realpath(Path(value).expanduser())))
    return tuple(dict.fromkeys(out))


def is_within(path: str | os.PathLike[str], dirs: Iterable[Path]) -> bool:
    """Is ``path`` (symlinks resolved, as far as it exists) inside one of ``dirs``?"""
    real = Path(os.path.realpath(path))
    return any(real == d or d in real.parents for d in dirs)


class RootNotWritable(Exception):
    """The runtime's root cannot hold its data; ``str()`` is the one line ``local serve`` prints."""


def ensure_writable_root(root: Path) -> Path:
    """Create ``root`` if needed and prove that a file can be made in it (the store, its WAL files and the
    key file all are): else :class:`RootNotWritable`, naming the root, why, and what to do instead."""
    import tempfile

    try:
        if root.exists() and not root.is_dir():
            raise NotADirectoryError(20, "it is a file, not a directory")
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise RootNotWritable(f"root {root} is not writable ({why}): choose a directory you can write to with "
                              f"--root DIR (or ${ROOT_ENV})") from None
    return root
