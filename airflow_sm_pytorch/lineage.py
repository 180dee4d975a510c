"""OpenLineage datasets of a training job (channels -> model artifacts) and a deployment (model -> endpoint).

Pure functions for the operators' ``get_openlineage_facets_on_complete``. They report what the Amazon
provider's ``SageMakerTrainingOperator`` reports (every channel's ``S3Uri`` in, ``S3ModelArtifacts`` out,
as plain ``Dataset`` objects named ``s3://<bucket>`` + key) and follow OpenLineage's naming spec
elsewhere: a local runtime's ``file://`` URI is namespace ``file`` + path; the endpoint, which has no
entry in the spec, is named the way the spec names the other ARN-identified AWS resources (Glue):
namespace ``arn:<partition>:sagemaker:<region>:<account>``, name ``endpoint/<endpoint name>``.

Nothing is imported at module level beyond the standard library: the OpenLineage classes are imported
when lineage is built (only the OpenLineage listener asks for it). Without the OpenLineage client and
provider the same functions return look-alike objects (``namespace``/``name``/``facets``;
``inputs``/``outputs``/``run_facets``/``job_facets``), which is what the provider's extractor reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

#: a dataset's OpenLineage identity
DatasetId = tuple[str, str]


def dataset_id(uri: str | None) -> DatasetId | None:
    """(namespace, name) of a storage URI per OpenLineage's naming spec; None for no URI.

    ``s3://bucket/key`` -> (``s3://bucket``, ``key``), as the Amazon provider names it (a bare bucket is
    name ``/``); ``file:///path`` or ``/path`` -> (``file``, ``/path``); ``file://host/path`` ->
    (``file://host``, ``/path``); any other ``scheme://authority/path`` -> (``scheme://authority``,
    ``path``).
    """
    if not uri or not str(uri).strip():
        return None
    uri = str(uri).strip()
    if uri.startswith("/"):
        return "file", uri
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("s3", "s3a", "s3n", "gs", "gcs"):
        scheme = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}.get(scheme, scheme)
        return f"{scheme}://{parts.netloc}", parts.path.lstrip("/") or "/"
    if scheme == "file":
        path = parts.path or "/"
        if parts.netloc in ("", "localhost"):
            return "file", path
        return f"file://{parts.netloc}", path
    if not scheme:
        return "file", uri  # a relative path, as given
    return f"{scheme}://{parts.netloc}" if parts.netloc else scheme, parts.path or "/"


def endpoint_id(endpoint: str, region: str | None = None, *, account_id: str | None = None,
                partition: str | None = None) -> DatasetId:
    """(namespace, name) of an endpoint from its ARN, or from its name, region and account.

    SageMaker lowers the name in the ARN; a name given alone is lowered too, so both give one identity.
    """
    if endpoint.startswith("arn:"):
        head, _, resource = endpoint.partition(":endpoint/")
        if not resource:
            raise ValueError(f"{endpoint!r} is not an endpoint ARN (arn:<partition>:sagemaker:<region>:"
                             "<account>:endpoint/<name>)")
        return head, f"endpoint/{resource.lower()}"
    if not region or not account_id:
        raise ValueError("an endpoint given by name needs region and account_id (or pass its EndpointArn)")
    if partition is None:
        from airflow_sm_pytorch.builders.images import partition_for

        partition = partition_for(region)
    return f"arn:{partition}:sagemaker:{region}:{account_id}", f"endpoint/{endpoint.lower()}"


def _unique(ids: Iterable[DatasetId | None]) -> list[DatasetId]:
    return list(dict.fromkeys(i for i in ids if i is not None))


def training_datasets(description: Mapping[str, Any]) -> tuple[list[DatasetId], list[DatasetId]]:
    """(inputs, outputs) of a DescribeTrainingJob answer: each channel's data, then the model artifacts.

    Channels from S3 (``S3DataSource.S3Uri``) and from the local runtime's ``file://`` URIs count; EFS
    and FSx channels (``FileSystemDataSource``) are named ``efs://<id>`` / ``fsx<type>://<id>`` + their
    directory path. A job that has not produced its artifacts yet has no output.
    """
    inputs = []
    for channel in description.get("InputDataConfig") or []:
        source = channel.get("DataSource") or {}
        if s3 := source.get("S3DataSource"):
            inputs.append(dataset_id(s3.get("S3Uri")))
        elif fs := source.get("FileSystemDataSource"):
            kind = str(fs.get("FileSystemType", "")).lower()
            inputs.append((f"{kind}://{fs.get('FileSystemId')}", fs.get("DirectoryPath") or "/"))
    artifacts = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    return _unique(inputs), _unique([dataset_id(artifacts)])


def deploy_datasets(model_data: str | Iterable[str] | None, endpoint: str, region: str | None = None, *,
                    account_id: str | None = None, partition: str | None = None,
                    ) -> tuple[list[DatasetId], list[DatasetId]]:
    """(inputs, outputs) of a deployment: the model data in, the endpoint out.

    ``model_data``: the model's ``ModelDataUrl`` (or ``ModelDataSource`` S3 prefix); when the code was
    repacked into a new archive, pass both ``[<the training job's artifacts>, <the repacked archive>]`` so
    that the deployment joins the training job's output in the lineage graph.
    """
    return _model_inputs(model_data), [endpoint_id(endpoint, region, account_id=account_id,
                                                    partition=partition)]


def _model_inputs(model_data: str | Iterable[str] | None) -> list[DatasetId]:
    urls = [model_data] if isinstance(model_data, str) or model_data is None else list(model_data)
    return _unique(dataset_id(u) for u in urls)


# ------------------------------------------------------------------------------- OpenLineage objects
@dataclasses.dataclass(frozen=True)
class _Dataset:
    """What ``openlineage.client``'s ``Dataset`` carries, where that client is not installed."""

    namespace: str
    name: str
    facets: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Lineage:
    """What the OpenLineage provider's ``OperatorLineage`` carries, where that provider is not installed."""

    inputs: list[Any] = dataclasses.field(default_factory=list)
    outputs: list[Any] = dataclasses.field(default_factory=list)
    run_facets: dict[str, Any] = dataclasses.field(default_factory=dict)
    job_facets: dict[str, Any] = dataclasses.field(default_factory=dict)


def _classes() -> tuple[Any, Any]:
    """(Dataset, OperatorLineage): OpenLineage's where installed, else the look-alikes above."""
    try:
        import openlineage.client  # noqa: F401 - without it the compat layer's Dataset is a no-op
        from airflow.providers.common.compat.openlineage.facet import Dataset
    except ImportError:
        Dataset = _Dataset
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        OperatorLineage = _Lineage
    return Dataset, OperatorLineage


def lineage(inputs: Iterable[DatasetId], outputs: Iterable[DatasetId]) -> Any:
    """An ``OperatorLineage`` of these datasets (plain ``Dataset`` objects, as the Amazon provider's)."""
    dataset, operator_lineage = _classes()
    return operator_lineage(inputs=[dataset(namespace=ns, name=name, facets={}) for ns, name in inputs],
                            outputs=[dataset(namespace=ns, name=name, facets={}) for ns, name in outputs])


def training_lineage(description: Mapping[str, Any] | None) -> Any:
    """``OperatorLineage`` of a training job from its DescribeTrainingJob answer (empty for None)."""
    return lineage(*training_datasets(description or {}))


def deploy_lineage(model_data: str | Iterable[str] | None, endpoint: str | None, region: str | None = None,
                   *, account_id: str | None = None, partition: str | None = None) -> Any:
    """``OperatorLineage`` of a deployment: ``model_data`` in, the endpoint (ARN, or name) out.

    An endpoint that cannot be named (no ARN, no account) is left out rather than failing the listener.
    """
    outputs: list[DatasetId] = []
    if endpoint:
        try:
            outputs = [endpoint_id(endpoint, region, account_id=account_id, partition=partition)]
        except ValueError:
            pass
    return lineage(_model_inputs(model_data), outputs)
