"""Virtual environments for a job's ``requirements.txt`` (and ``setup.py`` packages).

The toolkit ``pip install``\\ s into the container's own Python. Here that would be the runtime's own
environment, so instead:

* ``requirements.txt`` goes into ``<cache_dir>/<sha256 of the file>``, a venv shared by every job with the
  same file. It is created ``--without-pip`` and given a ``.pth`` that runs ``site.addsitedir`` on the
  runtime interpreter's site-packages, so the job still sees the base packages (torch is never
  reinstalled; ``python -m venv --system-site-packages`` run from inside a venv would only expose the
  *base interpreter's* packages). Packages are installed with the runtime's pip:
  ``python -m pip --python <venv python> install -r requirements.txt``; pip declines to uninstall a base
  package that a requirement upgrades ("outside environment") and the venv's copy shadows it.
* It is built *in place* under an exclusive ``flock`` and published by a ``.complete`` marker written last,
  rather than built elsewhere and renamed: pip writes the venv's absolute path into console-script
  shebangs, which a rename would break. Concurrent jobs wait on the lock, then reuse the result; a
  half-built venv (crash, failed install) has no marker and is rebuilt.
* A ``setup.py`` package (``PYTHON_PACKAGE``) is installed (``pip install .``) into a per-job venv layered
  over the requirements venv (if any) and the base environment, with ``--no-build-isolation`` when the
  runtime has setuptools (the toolkit's isolated build downloads setuptools: slow, and impossible offline).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

#: Runs an argv (streaming its output to the job log); returns a result with a ``returncode``.
PipRunner = Callable[[Sequence[str]], object]

MARKER = ".complete"


class VenvBuildError(RuntimeError):
    """``python -m venv`` itself failed (not the user's requirements)."""


def base_site_dirs() -> list[str]:
    """The runtime interpreter's site-packages, the dirs a job venv must also see."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        dirs.append(site.getusersitepackages())
    return [d for d in dirs if os.path.isdir(d)]


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def venv_site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _identity() -> dict[str, object]:
    return {"parent": sys.executable, "version": sys.version, "site": base_site_dirs()}


def _create(venv: Path, layers: Sequence[str]) -> None:
    if venv.exists():
        shutil.rmtree(venv)
    proc = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise VenvBuildError(f"python -m venv failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in layers)
    (venv_site_packages(venv) / "_sm_pytorch_layers.pth").write_text(lines, encoding="utf-8")


def pip_install_argv(python: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--python", str(python), "install",
            "--disable-pip-version-check", "--no-input", *args]


class _Lock:
    """An exclusive ``flock`` on ``path``, waited for in 0.2 s steps so that a stop can interrupt it."""

    def __init__(self, path: Path, should_abort: Callable[[], bool]) -> None:
        self.path = path
        self.should_abort = should_abort
        self.fd = -1

    def __enter__(self) -> _Lock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if self.should_abort():
                    os.close(self.fd)
                    raise InterruptedError("stopped while waiting for another job's pip install") from None
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _ready(venv: Path) -> bool:
    marker = venv / MARKER
    try:
        return json.loads(marker.read_text(encoding="utf-8")) == json.loads(json.dumps(_identity()))
    except (OSError, ValueError):
        return False


def requirements_venv(
    requirements: Path,
    cache_dir: Path,
    run_pip: PipRunner,
    *,
    should_abort: Callable[[], bool] = lambda: False,
    on_cached: Callable[[Path], None] | None = None,
) -> tuple[Path, object | None]:
    """The cached venv for ``requirements``: ``(venv dir, pip result or None when it was cached)``.

    A pip result with a non-zero ``returncode`` means the install failed; the venv is then removed.
    """
    sha = hashlib.sha256(requirements.read_bytes()).hexdigest()
    venv = cache_dir / sha
    if _ready(venv):
        if on_cached:
            on_cached(venv)
        return venv, None
    with _Lock(cache_dir / f"{sha}.lock", should_abort):
        if _ready(venv):
            if on_cached:
                on_cached(venv)
            return venv, None
        _create(venv, base_site_dirs())
        result = run_pip(pip_install_argv(venv_python(venv), "-r", str(requirements)))
        if getattr(result, "returncode", 1) != 0:
            shutil.rmtree(venv, ignore_errors=True)
            return venv, result
        (venv / MARKER).write_text(json.dumps(_identity()), encoding="utf-8")
        return venv, result


def package_venv(job_venv: Path, code_dir: Path, run_pip: PipRunner, *, below: Path | None = None) -> object:
    """``pip install .`` of ``code_dir`` into a per-job venv layered over ``below`` and the base env."""
    layers = ([str(venv_site_packages(below))] if below is not None else []) + base_site_dirs()
    _create(job_venv, layers)
    extra = ["--no-build-isolation"] if _has_setuptools() else []
    return run_pip(pip_install_argv(venv_python(job_venv), *extra, str(code_dir)))


def _has_setuptools() -> bool:
    from importlib.util import find_spec

    return find_spec("setuptools") is not None
