"""``uv pip install ARGS`` into this interpreter's environment, resolving exactly where pip would.

uv reads none of pip's configuration, and on this project that matters: ``torch==2.13.0`` must be the
CPU wheel that pip finds through its ``find-links`` (PyPI's ``torch==2.13.0`` is the CUDA build, with
several GB of ``nvidia-*`` wheels). So pip's own view of its settings (``pip config list``: the config
files and the ``PIP_*`` variables, the variables winning) is turned into uv's flags: index-url,
extra-index-url, find-links, constraint, no-index, and cert (as ``SSL_CERT_FILE`` unless that is set).
``--index-strategy unsafe-best-match`` makes uv pick the best version across all indexes, as pip does
(uv's default takes a package from the first index that has it).

uv itself is pip-installed into the same environment first (``.venv/bin/uv``). Exit status: uv's; 3 when
uv could not be installed (the caller falls back to pip).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: pip option -> (uv flag, takes a whitespace-separated list)
_FLAGS = {"index-url": ("--index-url", False), "extra-index-url": ("--extra-index-url", True),
          "find-links": ("--find-links", True), "constraint": ("--constraint", True)}
_LINE = re.compile(r"^(?P<scope>[^.\s]*)\.(?P<key>[a-z0-9-]+)=(?P<value>.*)$")


def pip_settings() -> dict[str, str]:
    """pip's effective install settings: ``:env:`` (PIP_*) over ``install.`` over ``global.``."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                         check=False).stdout
    rank = {"global": 0, "install": 1, ":env:": 2}
    best: dict[str, tuple[int, str]] = {}
    for line in out.splitlines():
        match = _LINE.match(line.strip())
        if match is None or match["scope"] not in rank:
            continue
        value = match["value"].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        level = rank[match["scope"]]
        if match["key"] not in best or level >= best[match["key"]][0]:
            best[match["key"]] = (level, value)
    return {key: value for key, (_, value) in best.items()}


def uv_args(settings: dict[str, str]) -> list[str]:
    args = ["--index-strategy", "unsafe-best-match"]
    for key, (flag, many) in _FLAGS.items():
        value = settings.get(key, "").strip()
        for item in value.split() if many else ([value] if value else []):
            args += [flag, item]
    if settings.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        args.append("--no-index")
    return args


def ensure_uv() -> str | None:
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "uv>=0.5,<1"], check=False,
                              stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            print(proc.stderr, end="", file=sys.stderr)  # (pip warns about extra indexes without uv: noise)
        if proc.returncode != 0 or not uv.exists():
            return shutil.which("uv")
    return str(uv)


def main(argv: list[str]) -> int:
    uv = ensure_uv()
    if uv is None:
        print("uv_install: uv could not be installed", file=sys.stderr)
        return 3
    settings = pip_settings()
    env = dict(os.environ)
    if settings.get("cert") and not env.get("SSL_CERT_FILE"):
        env["SSL_CERT_FILE"] = settings["cert"]
    # --compile-bytecode: as pip does; without .pyc files every Airflow or torch process compiles its
    # imports again where PYTHONDONTWRITEBYTECODE is set (twice the start-up time of `airflow version`)
    cmd = [uv, "pip", "install", "--python", sys.executable, "--compile-bytecode", *uv_args(settings), *argv]
    return subprocess.run(cmd, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
