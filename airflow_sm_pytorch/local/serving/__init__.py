"""Local model server: the user's inference code run as the SageMaker PyTorch inference container runs it.

``python -m airflow_sm_pytorch.local.serving --model-dir DIR [--host 127.0.0.1] [--port 8080]
[--workers N] [--status-file F] [--max-body-bytes B]`` serves one model, already extracted into ``DIR``
(model files at its root, the inference script in ``DIR/code``), the way TorchServe 0.12 with the
sagemaker-pytorch-inference 2.0.25 toolkit does (contract: ``containers.md`` §5). The environment is
the CreateModel request's: ``SAGEMAKER_PROGRAM`` (default ``inference.py``),
``SAGEMAKER_MODEL_SERVER_WORKERS``, ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` (default
``application/json``), ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` (default 60 s), ``SAGEMAKER_BIND_TO_PORT`` (when
no ``--port``), ``SAGEMAKER_CONTAINER_LOG_LEVEL``.

Processes: the main process binds the socket, starts N worker processes (:mod:`.worker`) that all accept
on it, and supervises them; it never imports torch or user code. Each worker calls ``model_fn`` once at
start-up with the model dir as its cwd. See :mod:`.server` for the status file and exit codes,
:mod:`.handlers` for the handler pipeline, :mod:`.codecs` for decoding and encoding.

HTTP: ``GET /ping`` → 200 ``{"status": "Healthy"}`` once every worker has loaded, 500
``{"status": "Unhealthy"}`` before; ``POST /invocations`` (and ``/models/model/invoke``, ``?model_name=model``)
runs the handlers. Nothing else: there is no management API (no model registration, scaling or
deletion), and nothing is ever fetched from a URL.

Where SageMaker is unsafe, this server is safe instead (each a deliberate difference):

* **Binds 127.0.0.1** by default (TorchServe in the container: ``0.0.0.0``, with the management API on the
  same port and token authorisation turned off). Another ``--host`` is allowed, with a warning.
* **415, not 500**, for a Content-Type the default ``input_fn`` cannot decode or an Accept the default
  ``output_fn`` cannot write (``UnsupportedFormatError`` is a 500 in the toolkit). The strings must still be
  exactly ``application/json``, ``text/csv`` or ``application/x-npy`` (no ``; charset=...``), as there.
* **400 for a malformed body** (JSON that does not parse or is not a rectangular array of numbers, a CSV
  with ragged rows, an NPY whose header or size is wrong, a JSON/CSV body that is not UTF-8), not 500.
* **No traceback in any response.** Errors are JSON ``{"code", "type", "message"}`` with a one-line
  message (``predict_fn raised ValueError: ...``); tracebacks go to the log (stdout). The toolkit sends the
  message and the full traceback in the body.
* **NPY without pickle**: request arrays are parsed with ``allow_pickle=False`` semantics (the toolkit uses
  ``allow_pickle=True``, so a request body could run code); a pickled/object ``.npy`` gets 400 saying why.
  Shape and byte count must agree, so a small body cannot make the server allocate a huge array.
* **Request body limit 6 MB** (6,291,456 bytes, SageMaker's documented real-time limit) → 413; TorchServe's
  own limit is 6,553,500. Responses over the same size → 500 with the reason.
* **A handler that raises** gives 500 with a one-line reason and the worker keeps serving (``SystemExit``
  included). A worker that dies (``os._exit``, a crash) or that overruns the timeout (504) is replaced; its
  replacement runs ``model_fn`` again, and ``/ping`` is 500 until it has.
* **A model_fn that raises at start** stops the whole server: exit code 1 after the status file says
  ``{"status": "Failed", "reason": "ModelError: model_fn raised ..."}``. (SageMaker keeps retrying and
  the endpoint fails its ping check with no reason.)

Other differences: the default number of workers is 1 (TorchServe: one per CPU; locally each worker is a
whole copy of the model in memory); ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` is honoured (in the container a
properties-file bug leaves TorchServe's 120 s); header names reach the handlers lower-cased
(``context.get_request_header`` finds them in any case); batches are always of one request;
``code/requirements.txt`` is not installed here (the runtime's per-endpoint venv does that).

Logs: everything (the server's lines, and the user code's stdout and stderr) goes to stdout, one line per
event: ``<time> <LEVEL> [main|worker-<i>] <message>``; a multi-line message (a traceback) is written as
several lines with the same prefix.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

#: SageMaker's documented payload limit for real-time endpoints (6 MB).
MAX_REQUEST_BYTES = 6 * 1024 * 1024


class _LineFormatter(logging.Formatter):
    """Every line of a record (tracebacks too) carries the time, level and process tag."""

    def __init__(self, tag: str) -> None:
        super().__init__("%(asctime)s %(levelname)s [" + tag + "] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if "\n" not in text:
            return text
        prefix = text.split("] ", 1)[0] + "] "
        first, *rest = text.splitlines()
        return "\n".join([first, *(prefix + line for line in rest if line.strip())])


def configure_logging(tag: str, level: int | str | None = None) -> None:
    """Log lines to stdout (line-buffered), tagged ``tag``; ``SAGEMAKER_CONTAINER_LOG_LEVEL`` sets the level."""
    import os

    if level is None:
        raw = os.environ.get("SAGEMAKER_CONTAINER_LOG_LEVEL", "")
        level = int(raw) if raw.isdigit() else (raw.upper() if raw else logging.INFO)
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        pass
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_LineFormatter(tag))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    try:
        root.setLevel(level)
    except (TypeError, ValueError):
        root.setLevel(logging.INFO)


def json_body(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
