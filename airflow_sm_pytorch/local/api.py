"""The local runtime's operations, one service module each, behind one dispatcher.

:mod:`.training_jobs` (SageMaker training), :mod:`.hosting` (models, endpoint configs, endpoints),
:mod:`.cloudwatch_logs`; every request is first checked against botocore's model for its operation
(every limit, pattern and enum, at every depth; ``file://`` URIs and ``local`` instance types allowed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from airflow_sm_pytorch.local.cloudwatch_logs import CloudWatchLogs
from airflow_sm_pytorch.local.hosting import Hosting
from airflow_sm_pytorch.local.protocol import ACCOUNT, ApiError
from airflow_sm_pytorch.local.store import Store
from airflow_sm_pytorch.local.training_jobs import TrainingJobs

__all__ = ["ACCOUNT", "Api", "ApiError"]
#: X-Amz-Target prefix -> botocore service name.
SERVICES = {"SageMaker": "sagemaker", "Logs_20140328": "logs"}


class Api:
    def __init__(self, store: Store, root: Path, allowed_paths: Iterable[Path] = ()) -> None:
        self.store = store
        self.training = TrainingJobs(store, root, allowed_paths)
        self.hosting = Hosting(store, Path(root))
        self.logs = CloudWatchLogs(store)
        self._ops: dict[tuple[str, str], Callable[[dict[str, Any], str], dict[str, Any]]] = {
            **{("sagemaker", op): handler for op, handler in self.training.ops.items()},
            **{("sagemaker", op): handler for op, handler in self.hosting.ops.items()},
            **{("logs", op): handler for op, handler in self.logs.ops.items()},
        }

    def reap_all(self) -> int:
        return self.training.reap_all()

    def dispatch(self, target: str, params: dict[str, Any], region: str) -> dict[str, Any]:
        prefix, _, op = target.partition(".")
        service = SERVICES.get(prefix)
        handler = self._ops.get((service or "", op))
        if handler is None:
            raise ApiError("UnknownOperationException",
                           f"The local runtime does not implement {target or '(no X-Amz-Target)'}")
        from airflow_sm_pytorch.builders.validation import validate_request
        from airflow_sm_pytorch.exceptions import SpecError

        bad = "ValidationException" if service == "sagemaker" else "InvalidParameterException"
        try:  # every limit, pattern and enum of botocore's model, at every depth ("local" instance types too)
            validate_request(op, params, allow_file_uris=True, service=service)
        except SpecError as exc:
            raise ApiError(bad, str(exc)) from None
        return handler(params, region)
