"""Request decoding and response encoding of the SageMaker inference toolkit, made safe.

``decode`` and ``encode`` follow ``sagemaker_inference.decoder``/``encoder`` (JSON, CSV, NPY), with these
differences, each deliberate:

* a content type or Accept the codecs do not know raises :class:`UnsupportedMediaType` (HTTP 415), not the
  toolkit's ``UnsupportedFormatError`` (HTTP 500);
* a body that does not parse raises :class:`BadRequest` (HTTP 400) naming what is wrong, where the toolkit
  answers 500 with a traceback;
* NPY is parsed here, never with pickle: an object array (what a pickled ``.npy`` holds) is refused, and
  the header's shape must match the bytes that follow it, so a 100-byte body cannot make the server
  allocate terabytes. ``application/x-npz`` is not decoded (the toolkit's sparse-matrix path always failed
  in the PyTorch handler anyway).

Pure functions of numpy only (no torch), so the HTTP side can use them without loading a model.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from typing import Any

import numpy as np

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
#: Content types whose body the toolkit hands to ``input_fn`` as ``str`` (UTF-8), not bytes.
UTF8_TYPES = (JSON, CSV)
#: What ``default_output_fn`` can write, in the toolkit's order of preference.
SUPPORTED_ACCEPT = (JSON, CSV, NPY)
_NPY_MAGIC = b"\x93NUMPY"


class HttpError(Exception):
    """An error with its own HTTP status; the message is safe to send to the client (one line)."""

    status = 500
    kind = "InternalServerException"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(HttpError):
    status = 400
    kind = "BadRequestException"


class UnsupportedMediaType(HttpError):
    status = 415
    kind = "UnsupportedMediaTypeException"


def unsupported(content_type: str | None, what: str = "Content type") -> UnsupportedMediaType:
    return UnsupportedMediaType(
        f"{what} {content_type!r} is not supported by the default PyTorch handler (it reads and writes "
        f"{', '.join(SUPPORTED_ACCEPT)}, exactly these strings). Implement input_fn/output_fn in your "
        f"inference script to handle other types.")


# -- decoding -------------------------------------------------------------------------------------
def decode(body: Any, content_type: str | None) -> np.ndarray:
    """The numpy array in ``body`` (``str`` for JSON/CSV, bytes-like for NPY), as ``decoder.decode``."""
    if content_type == JSON:
        return _json_to_numpy(body)
    if content_type == CSV:
        return _csv_to_numpy(body)
    if content_type == NPY:
        return npy_to_numpy(body)
    raise unsupported(content_type)


def _json_to_numpy(text: Any) -> np.ndarray:
    try:
        data = json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:
        raise BadRequest(f"The request body is not valid JSON: {_one_line(exc)}") from None
    try:
        return np.array(data)
    except (ValueError, TypeError, RecursionError) as exc:
        raise BadRequest(f"The JSON body is not a rectangular array of numbers: {_one_line(exc)}") from None


def _csv_to_numpy(text: Any) -> np.ndarray:
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("The CSV body is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns (and returns junk) on some malformed input
            return np.genfromtxt(io.StringIO(text), delimiter=",")
    except (ValueError, TypeError, UserWarning) as exc:
        raise BadRequest(f"The CSV body is not a table of numbers with the same number of columns in every "
                         f"row: {_one_line(exc)}") from None


def npy_to_numpy(body: bytes | bytearray | memoryview) -> np.ndarray:
    """Parse one ``.npy`` array without pickle; refuse object arrays and sizes that do not match."""
    view = memoryview(body).cast("B")
    if bytes(view[:6]) != _NPY_MAGIC:
        raise BadRequest("The body is not an NPY array (it does not start with the \\x93NUMPY magic); "
                         "send numpy.save() output with Content-Type application/x-npy.")
    stream = io.BytesIO(view)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"NPY format version {version} is not supported")
    except (ValueError, TypeError, SyntaxError, EOFError) as exc:
        raise BadRequest(f"The NPY header is malformed: {_one_line(exc)}") from None
    if dtype.hasobject:
        raise BadRequest("The NPY array holds Python objects, which can only be loaded with pickle; this "
                         "server never unpickles request data (allow_pickle=False). Send a numeric array.")
    count = math.prod(shape)
    offset = stream.tell()
    if len(view) - offset != count * dtype.itemsize:
        raise BadRequest(f"The NPY header says shape {shape} of {dtype.str} ({count * dtype.itemsize} bytes) "
                         f"but {len(view) - offset} bytes of data follow it.")
    array = np.frombuffer(view, dtype=dtype, count=count, offset=offset)
    array = array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))  # torch.from_numpy refuses non-native byte order
    return array.copy()  # writable and owning its memory, as np.load's result is


# -- encoding -------------------------------------------------------------------------------------
def parse_accept(accept: str) -> list[str]:
    """The toolkit's ``utils.parse_accept``: no quality values, no parameters, spaces dropped."""
    return accept.replace(" ", "").split(",")


def encode(data: Any, accept: str) -> bytes:
    """``default_output_fn``'s serialisation: the first of ``SUPPORTED_ACCEPT`` named in ``accept``."""
    for content_type in parse_accept(accept):
        if content_type == JSON:
            return json.dumps(data, default=_tolist).encode("utf-8")
        if content_type == CSV:
            stream = io.StringIO()
            np.savetxt(stream, data, delimiter=",", fmt="%s")
            return stream.getvalue().encode("utf-8")
        if content_type == NPY:
            buffer = io.BytesIO()
            np.save(buffer, data)
            return buffer.getvalue()
    raise unsupported(accept, "Accept")


def _tolist(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
