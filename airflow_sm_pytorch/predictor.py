"""``PyTorchPredictor``: call a deployed endpoint as the SDK's ``sagemaker.pytorch.PyTorchPredictor`` does.

NPY in and out by default (a numpy array in, a numpy array out), JSON and CSV on request, on AWS and on
the local runtime alike (the connection decides)::

    predictor = PyTorchPredictor("my-endpoint", aws_conn_id="sm_pytorch")
    predictor.predict(np.array([[0.1, 0.2]]))          # -> np.ndarray
    PyTorchPredictor("my-endpoint", serializer=JSONSerializer(), deserializer=JSONDeserializer())

NPY responses are read with ``allow_pickle=False`` (the SDK's ``NumpyDeserializer`` default): an endpoint
cannot make the caller unpickle anything. numpy is imported when a predictor is made, not at DAG parse.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

NPY = "application/x-npy"


class NumpySerializer:
    content_type = NPY

    def serialize(self, data: Any) -> bytes:
        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, np.asarray(data), allow_pickle=False)
        return buffer.getvalue()


class NumpyDeserializer:
    accept = (NPY,)

    def deserialize(self, body: bytes, content_type: str) -> Any:
        import numpy as np

        if content_type.split(";")[0].strip() == NPY:
            return np.load(io.BytesIO(body), allow_pickle=False)
        if content_type.startswith("application/json"):
            return np.array(json.loads(body))
        if content_type.startswith("text/csv"):
            return np.genfromtxt(io.StringIO(body.decode("utf-8")), delimiter=",")
        raise ValueError(f"cannot read a {content_type!r} response as a numpy array")


class JSONSerializer:
    content_type = "application/json"

    def serialize(self, data: Any) -> bytes:
        if hasattr(data, "tolist"):
            data = data.tolist()
        return json.dumps(data).encode("utf-8")


class JSONDeserializer:
    accept = ("application/json",)

    def deserialize(self, body: bytes, content_type: str) -> Any:
        return json.loads(body)


class CSVSerializer:
    content_type = "text/csv"

    def serialize(self, data: Any) -> bytes:
        if hasattr(data, "tolist"):
            data = data.tolist()
        rows = data if data and isinstance(data[0], (list, tuple)) else [data]
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        return out.getvalue().encode("utf-8")


class CSVDeserializer:
    accept = ("text/csv",)

    def deserialize(self, body: bytes, content_type: str) -> Any:
        return [row for row in csv.reader(io.StringIO(body.decode("utf-8")))]


class PyTorchPredictor:
    """``predict(data)`` sends ``serializer(data)`` to the endpoint and returns ``deserializer(response)``."""

    def __init__(self, endpoint_name: str, aws_conn_id: str | None = "aws_default", *,
                 serializer: Any = None, deserializer: Any = None, region_name: str | None = None,
                 hook: Any = None) -> None:
        self.endpoint_name = endpoint_name
        self.serializer = serializer or NumpySerializer()
        self.deserializer = deserializer or NumpyDeserializer()
        if hook is None:
            from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook

            hook = SageMakerPyTorchHook(aws_conn_id=aws_conn_id, region_name=region_name)
        self.hook = hook

    @property
    def content_type(self) -> str:
        return self.serializer.content_type

    @property
    def accept(self) -> tuple[str, ...]:
        return tuple(self.deserializer.accept)

    def predict(self, data: Any, *, custom_attributes: str | None = None) -> Any:
        params: dict[str, Any] = {"EndpointName": self.endpoint_name, "Body": self.serializer.serialize(data),
                                  "ContentType": self.content_type, "Accept": ", ".join(self.accept)}
        if custom_attributes:
            params["CustomAttributes"] = custom_attributes
        response = self.hook.call("sagemaker-runtime", "InvokeEndpoint", **params)
        body = response["Body"].read()
        return self.deserializer.deserialize(body, response.get("ContentType") or self.accept[0])
