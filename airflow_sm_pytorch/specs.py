"""Typed, frozen inputs users give: the SageMaker SDK ``PyTorch`` estimator's keyword arguments.

``TrainingSpec`` mirrors ``sagemaker.pytorch.PyTorch(...)`` plus ``fit(inputs=..., job_name=...)``, so a
user can move an SDK call into a DAG by copying its keyword arguments. It holds data and checks what can
be checked without I/O (``__post_init__``); turning it into a request is ``builders.training``'s job.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

from airflow_sm_pytorch.exceptions import SpecError

#: Keys of a plan/spec file that are not estimator arguments but describe where the request goes.
SESSION_KEYS = ("region", "default_bucket", "default_bucket_prefix")


@dataclasses.dataclass(frozen=True)
class TrainingSpec:
    """The SDK's ``PyTorch`` estimator arguments, plus ``inputs`` and ``job_name`` from ``fit``."""

    entry_point: str | None = None
    source_dir: str | None = None
    dependencies: tuple[str, ...] = ()
    hyperparameters: Mapping[str, Any] | None = None
    role: str | None = None
    instance_type: str | None = None
    instance_count: int = 1
    framework_version: str | None = None
    py_version: str | None = None
    image_uri: str | None = None
    output_path: str | None = None
    code_location: str | None = None
    base_job_name: str | None = None
    volume_size: int = 30
    volume_kms_key: str | None = None
    output_kms_key: str | None = None
    max_run: int = 24 * 60 * 60
    max_wait: int | None = None
    use_spot_instances: bool = False
    environment: Mapping[str, str] | None = None
    checkpoint_s3_uri: str | None = None
    checkpoint_local_path: str | None = None
    subnets: tuple[str, ...] | None = None
    security_group_ids: tuple[str, ...] | None = None
    tags: Any = None  # list of {"Key","Value"} or a dict; normalised by the builder
    enable_network_isolation: bool = False
    encrypt_inter_container_traffic: bool = False
    max_retry_attempts: int | None = None
    metric_definitions: tuple[Mapping[str, str], ...] | None = None
    disable_profiler: bool = False
    debugger_hook_config: Any = None  # None: SDK default; False: off; a dict: as given
    keep_alive_period_in_seconds: int | None = None
    input_mode: str = "File"
    container_log_level: int = 20
    disable_output_compression: bool = False
    enable_sagemaker_metrics: bool | None = None
    distribution: Mapping[str, Any] | None = None  # reserved for the distributed-training issue
    # fit(...)
    inputs: Any = None  # a URI string, or {channel: URI | TrainingInput-like dict}
    job_name: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingSpec:
        """Build from a plain mapping (a spec file, operator kwargs), refusing unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, sorted(known), n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"use one of {sorted(known)}"
            raise SpecError(key, data[key], fix, problem="is not a PyTorch estimator argument")
        kwargs = dict(data)
        for name in ("dependencies", "subnets", "security_group_ids", "metric_definitions"):
            if isinstance(kwargs.get(name), list):
                kwargs[name] = tuple(kwargs[name])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The non-default fields, JSON-friendly (what a spec file would hold)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out
