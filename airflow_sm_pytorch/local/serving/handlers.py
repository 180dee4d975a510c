"""The handler pipeline of ``sagemaker_inference.transformer`` and the PyTorch default handler.

:class:`HandlerService` is what one TorchServe worker of the SageMaker PyTorch container runs:

* **Loading** (:meth:`HandlerService.load`, once per worker): the user module ``SAGEMAKER_PROGRAM``
  (default ``inference.py`` → module ``inference``) is imported only if ``importlib.util.find_spec`` finds
  it (``<model dir>/code`` is first on ``sys.path``); a missing module means the defaults, silently on
  SageMaker (here with a warning line when ``SAGEMAKER_PROGRAM`` was set explicitly). Each of
  ``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn``, ``transform_fn``, ``pre_model_fn``,
  ``model_warmup_fn`` comes from the module when it defines it, else from the default handler.
  ``transform_fn`` together with any of the other three raises the toolkit's ``ValueError``. Then
  ``pre_model_fn(model_dir)``, ``model_fn(model_dir)``, ``model_warmup_fn(model_dir, model)``.
* **Context detection** as ``_run_handler_function``: a function whose signature has as many parameters as
  the toolkit passes gets exactly those; one more, and the :class:`Context` is appended; any other count
  raises ``TypeError("<name> takes <n> arguments but <m> were given.")`` when called. Parameters with
  defaults and ``*args`` count, as on SageMaker. The decision is taken once, at load.
* **Per request** (:meth:`HandlerService.invoke`): the body is ``str`` for exactly ``application/json`` and
  ``text/csv``, else a ``bytearray`` (``None`` for multipart/form bodies, which TorchServe splits into
  fields); Accept missing or ``*/*`` becomes ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` (default
  ``application/json``); ``transform_fn(model, body, content_type, accept)``, by default
  ``input_fn(body, content_type)`` → ``predict_fn(data, model)`` → ``output_fn(prediction, accept)``.
  The response Content-Type is the raw Accept string (``text/csv, application/json`` and all) unless the
  handler returns a ``(body, content_type)`` tuple; this overwrites what the handler set with
  ``context.set_response_content_type``, as the toolkit does. The body is sent as TorchServe sends it:
  bytes as they are, ``str`` as UTF-8, a ``torch.Tensor`` through ``torch.save``, anything else as
  ``json.dumps(value, indent=2)``.
* **Defaults** (``default_pytorch_inference_handler``): ``model_fn`` loads ``model.pt`` (else the only
  ``.pt``/``.pth`` file; none or several → ``ValueError("Exactly one .pth or .pt file is required ...")``)
  with ``torch.jit.load``; JSON and CSV become float32 tensors, NPY keeps its dtype; ``predict_fn`` runs
  ``model.eval()`` and the forward pass under ``torch.no_grad()``; ``output_fn`` turns a tensor into a list
  and writes JSON, CSV or NPY (float64, from the list) by the first supported type in Accept.
* **Errors**: see :mod:`.codecs` (415 and 400 from the defaults). Any other exception from user or default
  code is a 500 whose message is one line naming the function, the exception type and its message; the
  traceback goes to the log, never to the client.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import io
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from airflow_sm_pytorch.local.serving import codecs
from airflow_sm_pytorch.local.serving.codecs import BadRequest, HttpError

log = logging.getLogger("airflow_sm_pytorch.serving")

DEFAULT_PROGRAM = "inference.py"
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
#: Response headers a handler may not set through the context (the server owns framing).
_RESERVED_HEADERS = {"content-length", "transfer-encoding", "connection", "content-type", "date", "server"}


class ModelLoadError(Exception):
    """The model could not be loaded; ``str()`` is the one-line reason for the status file."""


class InvocationError(HttpError):
    """A handler function raised: HTTP 500 with ``<function> raised <Type>: <message>``."""

    status = 500
    kind = "ModelError"
    logged = False


def one_line(exc: BaseException, limit: int = 900) -> str:
    """``Type: message`` on one line. A TorchScript error's message embeds the scripted code's traceback:
    only its last line (the original error) is kept."""
    text = str(exc)
    if "Traceback of TorchScript" in text:
        text = next((line for line in reversed(text.splitlines()) if line.strip()), text)
        if ": " in text and text.split(": ", 1)[0].isidentifier():
            text = text.split(": ", 1)[1]
    text = " ".join(text.split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the context ------------------------------------------------------------------------------------
class RequestProcessor:
    """``ts.protocol.otf_message_handler.RequestProcessor`` for one HTTP request."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._request_property = dict(headers)
        self._status_code = 200
        self._reason_phrase: str | None = None
        self._response_header: dict[str, str] = {}

    def get_request_property(self, key: str) -> str | None:
        value = self._request_property.get(key)
        return value if value is not None else self._request_property.get(key.lower())

    def get_request_properties(self) -> dict[str, str]:
        return self._request_property

    def report_status(self, code: int, reason_phrase: str | None = None) -> None:
        self._status_code, self._reason_phrase = int(code), reason_phrase

    def get_response_status_code(self) -> int:
        return self._status_code

    def get_response_status_phrase(self) -> str | None:
        return self._reason_phrase

    def add_response_property(self, key: str, value: str) -> None:
        self._response_header[key] = value

    def get_response_headers(self) -> dict[str, str]:
        return self._response_header

    def get_response_header(self, key: str) -> str | None:
        return self._response_header.get(key)


class Context:
    """The parts of ``ts.context.Context`` (TorchServe 0.12) that mean something here.

    One per worker, reused for every request, with ``request_processor``/``request_ids`` replaced per
    request, as TorchServe does. Batches are always of one request. Header names are those of the HTTP
    request lower-cased (HTTP/1.1 names are case-insensitive; TorchServe keeps the client's spelling), and
    ``get_request_header`` looks a name up in any case.
    """

    def __init__(self, model_dir: str, server_version: str) -> None:
        self.model_name = "model"
        self.manifest: dict[str, Any] | None = None
        self.model_yaml_config: dict[str, Any] = {}
        self.metrics = None
        self.stopping_criteria = None
        self.cl_socket = None
        self._system_properties = {"model_dir": model_dir, "gpu_id": None, "batch_size": 1,
                                   "server_name": "MMS", "server_version": server_version,
                                   "limit_max_image_pixels": True}
        self._request_ids: dict[int, str] | None = {}
        self.request_processor: list[RequestProcessor] = []

    @property
    def request_ids(self) -> dict[int, str]:
        if self._request_ids is None:  # made on demand: a uuid4 costs more than a tiny model's forward pass
            self._request_ids = {0: str(uuid.uuid4())}
        return self._request_ids

    @request_ids.setter
    def request_ids(self, value: dict[int, str]) -> None:
        self._request_ids = value

    @property
    def system_properties(self) -> dict[str, Any]:
        return self._system_properties

    def start_request(self, headers: Mapping[str, str]) -> RequestProcessor:
        processor = RequestProcessor(headers)
        self.request_processor = [processor]
        self._request_ids = None
        return processor

    def get_request_id(self, idx: int = 0) -> str | None:
        return self.request_ids.get(idx)

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self.request_processor[idx].get_request_property(key)

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return self.request_processor[idx].get_request_properties()

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "content-type", value)

    def get_response_content_type(self, idx: int) -> str | None:
        return self.get_response_headers(idx).get("content-type")

    def get_response_status(self, idx: int) -> tuple[int, str | None]:
        processor = self.request_processor[idx]
        return processor.get_response_status_code(), processor.get_response_status_phrase()

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        if self.request_processor:
            self.request_processor[idx].report_status(code, phrase)

    def set_all_response_status(self, code: int = 200, phrase: str = "") -> None:
        for idx in range(len(self.request_processor)):
            self.set_response_status(code, phrase, idx)

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.request_processor[idx].add_response_property(key, value)

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self.request_processor[idx].get_response_headers()

    def get_sequence_id(self, idx: int) -> str | None:
        return None


# -- the PyTorch default handler -------------------------------------------------------------------
class DefaultPytorchHandler:
    """``DefaultPytorchInferenceHandler`` of sagemaker-pytorch-inference 2.0.25 (no Elastic Inference)."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._prepared: Any = None

    def default_model_fn(self, model_dir: str) -> Any:
        model_path = os.path.join(model_dir, "model.pt")
        if not os.path.exists(model_path):
            model_files = [name for name in sorted(os.listdir(model_dir))
                           if os.path.isfile(os.path.join(model_dir, name))
                           and os.path.splitext(name)[1] in (".pt", ".pth")]
            if len(model_files) != 1:
                raise ValueError(f"Exactly one .pth or .pt file is required for PyTorch models: {model_files}")
            model_path = os.path.join(model_dir, model_files[0])
        try:
            model = self.torch.jit.load(model_path, map_location=self.device)
        except RuntimeError:
            raise ModelLoadError(f"Failed to load {model_path}. Please ensure model is saved using "
                                 f"torchscript.") from None
        return model.to(self.device)

    def default_input_fn(self, input_data: Any, content_type: str | None) -> Any:
        array = codecs.decode(input_data, content_type)
        try:
            if content_type in codecs.UTF8_TYPES:
                if array.ndim and array.dtype.kind in "biuf":  # what FloatTensor(array) gives, 3x faster
                    tensor = self.torch.from_numpy(array.astype(np.float32))
                else:
                    tensor = self.torch.FloatTensor(array)
            else:
                tensor = self.torch.from_numpy(array)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise BadRequest(f"The {content_type} body cannot become a tensor ({array.dtype} array): "
                             f"{codecs._one_line(exc)}") from None
        return tensor.to(self.device)

    def default_predict_fn(self, data: Any, model: Any) -> Any:
        with self.torch.no_grad():
            if model is not self._prepared:
                # The toolkit calls model.to(device) and model.eval() before every forward pass. Nothing but
                # the forward pass touches the model between two default predict_fn calls, so doing it
                # once per model object is the same, and saves ~0.2 ms a request on a tiny model.
                model.to(self.device)
                model.eval()
                self._prepared = model
            return model(data.to(self.device))

    def default_output_fn(self, prediction: Any, accept: str) -> bytes:
        if type(prediction) is self.torch.Tensor:
            prediction = prediction.detach().cpu().numpy().tolist()
        return codecs.encode(prediction, accept)


# -- the service -------------------------------------------------------------------------------------
def _with_context(func: Callable[..., Any], nargs: int, context: Context) -> Callable[..., Any]:
    """``_run_handler_function``'s decision, taken once: call with ``nargs`` arguments, or append the context."""
    name = getattr(func, "__name__", repr(func))
    try:
        count = len(inspect.signature(func).parameters)
    except (TypeError, ValueError) as exc:
        error: Exception = TypeError(f"{name} has no inspectable signature: {exc}")
    else:
        if count == nargs:
            return func
        if count == nargs + 1:
            return lambda *args: func(*args, context)
        error = TypeError(f"{name} takes {count} arguments but {nargs} were given.")

    def refuse(*_args: Any) -> Any:
        raise error

    return refuse


def _stage(name: str, func: Callable[..., Any], *args: Any) -> Any:
    try:
        return func(*args)
    except HttpError:
        raise
    except BaseException as exc:  # noqa: BLE001 - SystemExit from user code must not stop the worker
        log.error("%s raised %s", name, one_line(exc), exc_info=exc)
        error = InvocationError(f"{name} raised {one_line(exc)}")
        error.logged = True
        raise error from None


class Response:
    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.status, self.body, self.content_type, self.headers = status, body, content_type, headers


class HandlerService:
    """One worker's model and handler functions; not thread-safe (one inference thread calls it)."""

    def __init__(self, model_dir: str, environ: Mapping[str, str], server_version: str = "") -> None:
        self.model_dir = model_dir
        self.environ = environ
        self.default_accept = environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or codecs.JSON
        self.context = Context(model_dir, server_version)
        self.model: Any = None
        self.loaded = False

    # -- start-up ---------------------------------------------------------------------------------
    def load(self) -> None:
        """Import the user module and run model_fn; raises :class:`ModelLoadError` with a one-line reason."""
        try:
            module = self._user_module()
        except ModelLoadError:
            raise
        except BaseException as exc:  # noqa: BLE001 - a broken inference.py is a model error
            log.error("importing the inference script raised %s", one_line(exc), exc_info=exc)
            raise ModelLoadError(f"importing {self.module_name} raised {one_line(exc)}") from None
        def pick(name: str, fallback: Any) -> Any:
            return getattr(module, name, None) or fallback if module is not None else fallback

        transform_fn, input_fn, predict_fn, output_fn = (
            pick(name, None) for name in ("transform_fn", "input_fn", "predict_fn", "output_fn"))
        if transform_fn and (input_fn or predict_fn or output_fn):
            raise ModelLoadError("ValueError: Cannot use transform_fn implementation in conjunction with "
                                 "input_fn, predict_fn, and/or output_fn implementation")
        default = DefaultPytorchHandler()
        ctx = self.context
        self._input = _with_context(input_fn or default.default_input_fn, 2, ctx)
        self._predict = _with_context(predict_fn or default.default_predict_fn, 2, ctx)
        self._output = _with_context(output_fn or default.default_output_fn, 2, ctx)
        self._transform = _with_context(transform_fn, 4, ctx) if transform_fn else None
        model_fn = pick("model_fn", default.default_model_fn)
        for name, nargs in (("pre_model_fn", 1), ("model_fn", 1), ("model_warmup_fn", 2)):
            func = model_fn if name == "model_fn" else pick(name, None)
            if func is None:
                continue
            args = (self.model_dir,) if nargs == 1 else (self.model_dir, self.model)
            try:
                result = _with_context(func, nargs, ctx)(*args)
            except ModelLoadError:
                raise
            except BaseException as exc:  # noqa: BLE001
                log.error("%s raised %s", name, one_line(exc), exc_info=exc)
                raise ModelLoadError(f"{name} raised {one_line(exc)}") from None
            if name == "model_fn":
                self.model = result
        self.loaded = True

    @property
    def module_name(self) -> str:
        program = self.environ.get("SAGEMAKER_PROGRAM") or DEFAULT_PROGRAM
        return program[:-3] if program.endswith(".py") else program

    def _user_module(self) -> Any:
        name = self.module_name
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            if self.environ.get("SAGEMAKER_PROGRAM"):
                log.warning("SAGEMAKER_PROGRAM=%s: no module %r in %s/code; using the default handlers "
                            "(as SageMaker does, silently)", self.environ["SAGEMAKER_PROGRAM"], name,
                            self.model_dir)
            else:
                log.info("no %s in %s/code: using the default PyTorch handlers", DEFAULT_PROGRAM, self.model_dir)
            return None
        log.info("loading inference script %s", spec.origin)
        return importlib.import_module(name)

    # -- per request ------------------------------------------------------------------------------
    def invoke(self, body: bytes, headers: Mapping[str, str]) -> Response:
        """Run one request through the handlers. Never raises: errors are responses."""
        try:
            return self._invoke(body, headers)
        except HttpError as exc:
            if not getattr(exc, "logged", False):
                log.log(logging.ERROR if exc.status >= 500 else logging.INFO, "invocation answered %d: %s",
                        exc.status, exc.message)
            return error_response(exc.status, exc.kind, exc.message)
        except BaseException as exc:  # noqa: BLE001 - the server's own bug must not stop the worker
            log.error("invocation failed: %s", one_line(exc), exc_info=exc)
            return error_response(500, "InternalServerException", f"The model server failed: {one_line(exc)}")

    def _invoke(self, body: bytes, headers: Mapping[str, str]) -> Response:
        processor = self.context.start_request(headers)
        content_type = headers.get("content-type")
        accept = headers.get("accept")
        if not accept or accept == "*/*":
            accept = self.default_accept
        data: Any
        if content_type in codecs.UTF8_TYPES:
            try:
                data = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadRequest(f"The {content_type} body is not valid UTF-8: {exc.reason} at byte "
                                 f"{exc.start}.") from None
        elif content_type and content_type.split(";")[0].strip().lower() in _FORM_TYPES:
            data = None
        else:
            data = bytearray(body)
        if self._transform is not None:
            result = _stage("transform_fn", self._transform, self.model, data, content_type, accept)
        else:
            features = _stage("input_fn", self._input, data, content_type)
            prediction = _stage("predict_fn", self._predict, features, self.model)
            result = _stage("output_fn", self._output, prediction, accept)
        response_type = accept
        if isinstance(result, tuple):
            if len(result) < 2:
                raise InvocationError("the handler returned a tuple without a content type: return "
                                      "(body, content_type)")
            result, response_type = result[0], result[1]
        self.context.set_response_content_type(0, response_type)
        payload = self._serialise(result)
        status = processor.get_response_status_code()
        if not 100 <= status <= 599:
            status = 500
        extra = {k: v for k, v in processor.get_response_headers().items()
                 if isinstance(k, str) and isinstance(v, str) and k.lower() not in _RESERVED_HEADERS}
        return Response(status, payload, str(response_type), extra)

    def _serialise(self, value: Any) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, str):
            return value.encode("utf-8")
        torch = _torch()
        if torch is not None and isinstance(value, torch.Tensor):
            buffer = io.BytesIO()
            torch.save(value, buffer)
            return buffer.getvalue()
        import json

        try:
            return json.dumps(value, indent=2).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise InvocationError(f"Unsupported model output data type: {type(value).__name__} ({exc}); "
                                  f"return bytes, str or JSON-serialisable data") from None


def _torch() -> Any:
    import sys

    return sys.modules.get("torch")


def error_response(status: int, kind: str, message: str) -> Response:
    """The JSON error body (TorchServe's ``{"code", "type", "message"}``); the message is one line."""
    import json

    message = " ".join(message.split())
    body = json.dumps({"code": status, "type": kind, "message": message}).encode("utf-8")
    return Response(status, body, "application/json", {})
