"""``DeployOperator`` and ``DeleteEndpointOperator``: ``estimator.deploy`` / ``PyTorchModel(...).deploy`` as tasks.

Importing this module is cheap (no boto3, botocore, torch, omegaconf or numpy): the hook is made in
``execute``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_sm_pytorch.links import EndpointLink, EndpointLogsLink, ExtraLinks, ModelLink, store_links
from airflow_sm_pytorch.operators.common import defer, fail_fast, raise_for_event
from airflow_sm_pytorch.operators.tagging import merge_tags, task_tags
from airflow_sm_pytorch.specs import DeploySpec, ModelSpec

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook

MODEL_ARGS = frozenset(f.name for f in dataclasses.fields(ModelSpec))
DEPLOY_ARGS = frozenset(f.name for f in dataclasses.fields(DeploySpec))


class DeployOperator(BaseOperator):
    """Put a model behind a SageMaker endpoint (or a local one) and wait until it is InService.

    The model is either what a training job produced — ``training_job=`` a job name or the XCom of
    ``PyTorchTrainOperator`` / ``AttachSensor`` (model data, image version, entry point and source dir are
    read from DescribeTrainingJob, as ``estimator.deploy`` does) — or ``model_data=`` a ``model.tar.gz``
    trained anywhere. Every other keyword argument is the SDK's: ``PyTorchModel`` arguments
    (``entry_point``, ``source_dir``, ``framework_version``, ``py_version``, ``image_uri``, ``role``,
    ``env``, ``model_server_workers``, …; given with ``training_job`` they override what the job used,
    e.g. an ``inference.py``) and ``deploy`` arguments (``initial_instance_count``, ``instance_type``,
    ``endpoint_name``, ``serverless_inference_config``, ``tags``, …). All templated.

    Create-or-update with idempotent names: the endpoint is ``endpoint_name``, else a name derived from
    the task instance; the model and endpoint config are named after the endpoint plus a digest of what
    they contain. A retried task attaches to what exists; a changed model (code, data, image, instance
    type) gets a new model and config, and the endpoint is updated to it.

    ``on_kill`` leaves the endpoint alone: its creation goes on (on SageMaker as locally) and a retry
    attaches to it; delete it with :class:`DeleteEndpointOperator`.

    ``deferrable=True`` (default: Airflow's ``[operators] default_deferrable``) sends the requests, then
    waits for InService in the triggerer; ``max_wait`` (seconds; None: as long as it takes) bounds the
    wait. Bad input and requests SageMaker refuses as invalid fail without retrying.

    Returns (XCom) ``{"EndpointName", "EndpointArn", "EndpointStatus", "ModelName", "EndpointConfigName",
    "ModelDataUrl", "Image"}``.
    """

    template_fields = ("training_job", "arguments", "aws_conn_id", "region_name")
    template_fields_renderers = {"arguments": "json"}
    operator_extra_links = ExtraLinks(ModelLink(), EndpointLink(), EndpointLogsLink(),
                                      instance_type=lambda op: op.arguments.get("instance_type"))
    ui_color = "#7fc97f"

    def __init__(self, *, training_job: str | Mapping[str, Any] | None = None, aws_conn_id: str | None = "aws_default",
                 region_name: str | None = None, wait: bool = True, poll_interval: float = 10.0,
                 max_wait: float | None = None, deferrable: bool | None = None, **kwargs: Any) -> None:
        from airflow_sm_pytorch.operators.common import check_limit, default_deferrable

        arguments = {name: kwargs.pop(name) for name in list(kwargs) if name in MODEL_ARGS | DEPLOY_ARGS}
        super().__init__(**kwargs)
        self.training_job = training_job
        self.arguments: dict[str, Any] = arguments
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.wait = wait
        self.poll_interval = poll_interval
        self.max_wait = check_limit("max_wait", max_wait)
        self.deferrable = default_deferrable() if deferrable is None else deferrable

    @cached_property
    def hook(self) -> SageMakerPyTorchHook:
        from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook

        return SageMakerPyTorchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    def _source(self) -> Any:
        from airflow_sm_pytorch.builders.deploy import TrainedModel

        model_args = {k: v for k, v in self.arguments.items() if k in MODEL_ARGS and v is not None}
        if self.training_job:
            trained = self.hook.trained_model(self.training_job)
            if not model_args:
                return trained
            merged = ModelSpec.from_dict({**_spec_dict(trained.model), **model_args})
            return TrainedModel(model=merged, base_name=trained.base_name, tags=trained.tags)
        return ModelSpec.from_dict(model_args)

    @fail_fast
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_sm_pytorch.builders.naming import task_job_name

        source = self._source()
        deploy = DeploySpec.from_dict({k: v for k, v in self.arguments.items() if k in DEPLOY_ARGS})
        ti = context["ti"]
        user_tags = deploy.tags if deploy.tags is not None else getattr(source, "tags", None)
        deploy = dataclasses.replace(deploy, tags=merge_tags(user_tags, task_tags(ti), self.log.warning))
        endpoint = deploy.endpoint_name or task_job_name(
            dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=getattr(ti, "map_index", -1),
            base_job_name="endpoint")
        draft = self.hook.plan_deploy(source, deploy, model_name=endpoint[:54], endpoint_name=endpoint)
        name = f"{endpoint[:54]}-{content_digest(draft)[:8]}"
        plan = self.hook.plan_deploy(source, deploy, model_name=name, endpoint_name=endpoint)
        plan.create_endpoint_config["EndpointConfigName"] = name  # a new config per content: updates work
        plan.create_endpoint["EndpointConfigName"] = name
        for note in plan.warnings:
            self.log.warning("%s", note)
        self.log.info("Deploy requests:\n%s", json.dumps(plan.to_json(), indent=2, default=str))
        deferring = self.wait and self.deferrable
        description, changed = self.hook.deploy(plan, wait=self.wait and not deferring,
                                                poll_interval=self.poll_interval, timeout=self.max_wait)
        store_links(context, self.hook, model=name, endpoint=endpoint, log=self.log, operator=self)
        container = plan.create_model.get("PrimaryContainer") or {}
        # lineage: the training output too when the code was repacked into a new model.tar.gz
        self._model_data = [u.repack_of for u in plan.uploads if getattr(u, "repack_of", None)]
        self._model_data.append(container.get("ModelDataUrl"))
        result = {
            "EndpointName": endpoint,
            "EndpointArn": description.get("EndpointArn"),
            "EndpointStatus": description.get("EndpointStatus"),
            "ModelName": name,
            "EndpointConfigName": name,
            "ModelDataUrl": container.get("ModelDataUrl"),
            "Image": container.get("Image"),
            "Changed": changed,
        }
        self._result = result
        if deferring:
            defer(self, "Endpoint", endpoint, limit=self.max_wait, stop_on_kill=False,
                  carry={"result": _json_safe(result)})
        return _json_safe(result)

    @fail_fast
    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """The deferred task resumes: the endpoint is InService, or the task fails with its FailureReason."""
        from airflow_sm_pytorch.hooks.waiting import failure

        result = (event.get("carry") or {}).get("result") or {"EndpointName": event["name"]}
        name = result["EndpointName"]
        store_links(context, self.hook, model=result.get("ModelName"), endpoint=name, operator=self)
        self._model_data = [result.get("ModelDataUrl")]
        description = (self.hook.describe_patiently("Endpoint", name, poll_interval=self.poll_interval)
                       or {"EndpointStatus": "Failed"})
        self.log.info("Endpoint %s: %s", name, event.get("message"))
        raise_for_event(event, lambda: failure("Endpoint", name, description))
        self._result = {**result, "EndpointArn": description.get("EndpointArn"),
                        "EndpointStatus": description.get("EndpointStatus")}
        return _json_safe(self._result)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the model data (and the training output it was repacked from) in, the endpoint out."""
        from airflow_sm_pytorch.lineage import deploy_lineage

        result = getattr(self, "_result", None) or {}
        return deploy_lineage([u for u in getattr(self, "_model_data", []) if u],
                              result.get("EndpointArn") or result.get("EndpointName"), self.hook.region)


def _json_safe(result: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in result.items()}


class DeleteEndpointOperator(BaseOperator):
    """Tear a deployment down: the endpoint, then its endpoint config and model (what exists of them).

    ``endpoint`` is an endpoint name or :class:`DeployOperator`'s XCom (then its config and model are the
    ones it created). Give it ``trigger_rule="all_done"`` to clean up after a failed test task too.
    """

    template_fields = ("endpoint", "aws_conn_id", "region_name")

    def __init__(self, *, endpoint: str | Mapping[str, Any], aws_conn_id: str | None = "aws_default",
                 region_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.endpoint = endpoint
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name

    @fail_fast
    def execute(self, context: Context) -> list[str]:
        from airflow_sm_pytorch.hooks.sagemaker_pytorch import SageMakerPyTorchHook

        hook = SageMakerPyTorchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        info = self.endpoint if isinstance(self.endpoint, Mapping) else {"EndpointName": self.endpoint}
        deleted = hook.delete_deployment(str(info["EndpointName"]), endpoint_config_name=info.get("EndpointConfigName"),
                                         model_name=info.get("ModelName"))
        self.log.info("Deleted: %s", ", ".join(deleted) or "nothing (already gone)")
        return deleted


def content_digest(plan: Any) -> str:
    """What the model and its config hold (not their names): image, environment, model data, code, variant."""
    container = dict(plan.create_model.get("PrimaryContainer") or {})
    data = container.pop("ModelDataUrl", None)
    code = []
    for upload in plan.uploads:
        data = getattr(upload, "repack_of", None) or data
        code += [(arc, hashlib.sha256(Path(path).read_bytes()).hexdigest()) for arc, path in upload.files]
    variant = [{k: v for k, v in pv.items() if k != "ModelName"}
               for pv in plan.create_endpoint_config.get("ProductionVariants", [])]
    blob = json.dumps({"container": container, "data": data, "code": sorted(code), "variant": variant,
                       "role": plan.create_model.get("ExecutionRoleArn")}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _spec_dict(spec: Any) -> dict[str, Any]:
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
            if getattr(spec, f.name) != f.default and getattr(spec, f.name) is not None}
