"""The one door to SageMaker: AWS or the local runtime, chosen by the Airflow connection alone.

``SageMakerPyTorchHook`` extends the Amazon provider's ``AwsBaseHook``, so every connection feature users
know works (``aws_conn_id``, region, role assumption, ``endpoint_url`` and per-service endpoints in the
extra). On top it reads an ``sm_pytorch`` object from the connection's extra:

``default_bucket``
    bucket name (or ``file://`` directory) instead of the SDK's ``sagemaker-<region>-<account>``.
``default_bucket_prefix``
    key prefix inside the default bucket, as the SDK's ``default_bucket_prefix``.
``local_runtime``
    ``true`` or ``{"root": DIR, "autostart": true, "allow_paths": [DIR, ...]}``: the endpoint is our local
    runtime. ``file://`` URIs and local paths are then allowed, the default bucket is
    ``file://<root>/store/sagemaker-<region>``, and, when the endpoint is on loopback and nothing answers,
    the hook starts ``airflow-sm-pytorch local serve`` in the background (``"autostart": false`` turns
    that off) with the connection's own keys (so its requests are accepted) and ``--allow-path`` for each
    of ``allow_paths`` (where jobs may write ``file://`` outputs besides the root). A connection without
    keys signs with the runtime's own, from ``<root>/credentials``.

Service errors become the exceptions in :mod:`airflow_sm_pytorch.exceptions` here and nowhere else.
Throttling and 5xx answers are retried by botocore (standard mode, 10 attempts) and, while waiting, by
the poll loop itself: a slow API never fails a task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from airflow_sm_pytorch.exceptions import JobFailed, RequestRejected, SpecError
from airflow_sm_pytorch.hooks.errors import code as _code
from airflow_sm_pytorch.hooks.errors import message as _message
from airflow_sm_pytorch.hooks.logs import JobLog
from airflow_sm_pytorch.hooks.resources import NOT_FOUND_CODES, RESOURCES, method_name
from airflow_sm_pytorch.hooks.waiting import answered, run_sync, waiting
from airflow_sm_pytorch.local import config as local_config

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
#: Seconds a /ping of the local runtime may take before it counts as not answering.
PING_TIMEOUT = 5.0
#: Services the local runtime serves on its endpoint (the rest, e.g. s3, go where the connection says).
_RUNTIME_SERVICES = ("sagemaker", "logs", "sagemaker-runtime")
#: What a local runtime answers when a request's keys or signature are wrong.
_AUTH_CODES = frozenset({"UnrecognizedClientException", "InvalidSignatureException",
                         "MissingAuthenticationTokenException", "IncompleteSignatureException"})


class SageMakerPyTorchHook(AwsBaseHook):
    """Build, upload, submit, wait for, tail and stop SageMaker PyTorch training jobs."""

    hook_name = "Amazon SageMaker PyTorch"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["client_type"] = "sagemaker"
        super().__init__(*args, **kwargs)
        self._clients: dict[str, Any] = {}
        self._owner_of_default_bucket: str | None = None  # set when we derived the SDK's default bucket
        self._bucket_ready = False

    # ---------------------------------------------------------------- connection settings
    @cached_property
    def conn_config(self) -> Any:
        """The provider's connection wrapper; a named connection must exist (no silent fallback to boto3's
        default credentials, which ends in an STS DNS error far from the cause); a local-runtime
        connection without keys uses the runtime's own key file."""
        if self.aws_conn_id:
            from airflow.exceptions import AirflowNotFoundException

            try:
                self.get_connection(self.aws_conn_id)
            except AirflowNotFoundException:
                raise SpecError(
                    "aws_conn_id", self.aws_conn_id,
                    "define that Airflow connection (for the local runtime, as in the README: "
                    "AIRFLOW_CONN_SM_PYTORCH='{\"conn_type\": \"aws\", \"extra\": {\"endpoint_url\": "
                    "\"http://127.0.0.1:8787\", \"region_name\": \"us-east-1\", \"sm_pytorch\": "
                    "{\"local_runtime\": true}}}'), or pass aws_conn_id=None to use boto3's default "
                    "credentials", problem="is not a defined Airflow connection") from None
        wrapper = super().conn_config
        settings = _settings(wrapper)
        if settings.get("local_runtime") and not wrapper.aws_access_key_id:
            from airflow_sm_pytorch.local.auth import ensure_key_file

            keys = ensure_key_file(_local_runtime(settings)["root"])
            wrapper.aws_access_key_id, wrapper.aws_secret_access_key = keys.access_key_id, keys.secret_access_key
            _mask(keys.secret_access_key)
        return wrapper

    @cached_property
    def settings(self) -> dict[str, Any]:
        return _settings(self.conn_config)

    @cached_property
    def local_runtime(self) -> dict[str, Any] | None:
        """The ``local_runtime`` settings, or None when the connection points at AWS (or moto)."""
        return _local_runtime(self.settings) if self.settings.get("local_runtime") else None

    @property
    def is_local(self) -> bool:
        return self.local_runtime is not None

    @cached_property
    def region(self) -> str:
        region = self.region_name or self.conn_config.region_name or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise SpecError(
                "region_name", None, "set region_name on the operator or in the AWS connection's extra"
            )
        return region

    def _get_config(self, config: Config | None = None) -> Config:
        """botocore standard retries (10 attempts) unless the connection's own config says otherwise."""
        return Config(retries={"mode": "standard", "max_attempts": 10}).merge(super()._get_config(config))

    def get_client_type(self, region_name: str | None = None, config: Config | None = None,
                        deferrable: bool = False) -> Any:
        """The provider's client (``hook.conn``, waiters, triggers), after starting a silent local runtime."""
        self.ensure_local_runtime()
        return super().get_client_type(region_name=region_name or self.region, config=config,
                                       deferrable=deferrable)

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` honouring the connection (per-service endpoint, role, region).

        ``sagemaker`` is the provider's own cached client (``self.conn``); the others are made the same way.
        """
        if service == self.client_type:
            return self.conn
        if service not in self._clients:
            if service in _RUNTIME_SERVICES:
                self.ensure_local_runtime()
            self._clients[service] = self.get_session(region_name=self.region).client(
                service_name=service,
                endpoint_url=self.conn_config.get_service_endpoint_url(service),
                config=self._get_config(),
                verify=self.verify,
            )
        return self._clients[service]

    def call(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        """Call one API operation; a service error becomes :class:`RequestRejected`."""
        method = getattr(self.client(service), method_name(operation))
        try:
            return method(**params)
        except ClientError as err:
            raise self.rejected(operation, err) from err

    def rejected(self, operation: str, err: ClientError) -> RequestRejected:
        """``err`` as :class:`RequestRejected`; a local runtime refusing our keys says where its keys are."""
        message = _message(err)
        if self.is_local and _code(err) in _AUTH_CODES:
            from airflow_sm_pytorch.local.auth import ACCESS_KEY_ENV, key_file

            message += (f" -- the local runtime at {self.conn_config.endpoint_url} refused this connection's "
                        f"keys: it accepts the pair in {key_file(self.local_runtime['root'])} unless it was "
                        f"started with --access-key-id or ${ACCESS_KEY_ENV}; give the connection that pair "
                        "(login/password), leave them out to use the key file, or restart the runtime")
        return RequestRejected(operation, _code(err), message)

    # ---------------------------------------------------------------- session: region + default bucket
    @cached_property
    def session(self) -> Any:
        from airflow_sm_pytorch.builders.training import Session

        return Session(
            region=self.region,
            default_bucket=self.default_bucket,
            default_bucket_prefix=self.settings.get("default_bucket_prefix"),
            local=self.is_local,
        )

    @cached_property
    def default_bucket(self) -> str:
        """The SDK's default bucket name (STS tells the account when none is configured); created only when
        something is uploaded into it (:meth:`ensure_default_bucket`), never while planning."""
        bucket = self.settings.get("default_bucket")
        if not bucket and self.local_runtime is not None:
            bucket = local_config.default_bucket_uri(self.local_runtime["root"], self.region)
        if not bucket:
            bucket = f"sagemaker-{self.region}-{self.account_id}"
            self._owner_of_default_bucket = self.account_id
        return bucket if bucket.startswith("file://") else bucket.removeprefix("s3://").rstrip("/")

    def ensure_default_bucket(self) -> None:
        """Create the default bucket (or ``file://`` directory) when missing, as ``Session.default_bucket()``."""
        if self._bucket_ready:
            return
        bucket = self.default_bucket
        if bucket.startswith("file://"):
            from airflow_sm_pytorch.storage import parse_uri

            Path(parse_uri(bucket).path).mkdir(parents=True, exist_ok=True)
        else:
            self._ensure_bucket(bucket)
        self._bucket_ready = True

    def _ensure_bucket(self, bucket: str) -> None:
        s3 = self.client("s3")
        try:
            s3.head_bucket(Bucket=bucket)
            return
        except ClientError as err:
            if _code(err) not in ("404", "NoSuchBucket", "NotFound"):
                raise RequestRejected("HeadBucket", _code(err), _message(err)) from err
        params: dict[str, Any] = {"Bucket": bucket}
        if self.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            s3.create_bucket(**params)
        except ClientError as err:
            if _code(err) not in ("BucketAlreadyOwnedByYou", "OperationAborted"):
                raise RequestRejected("CreateBucket", _code(err), _message(err)) from err

    @cached_property
    def storage(self) -> Any:
        from airflow_sm_pytorch.storage import Storage

        return Storage(s3_client=lambda: self.client("s3"))

    # ---------------------------------------------------------------- build, upload, submit
    def plan_training(self, spec: Any, *, job_name: str) -> Any:
        """The exact request and uploads for ``spec`` (pure; nothing is sent)."""
        from airflow_sm_pytorch.builders.training import build_training_plan

        return build_training_plan(spec, self.session, job_name=job_name)

    def upload_plan(self, plan: Any) -> list[str]:
        """Upload the plan's archives (a deploy plan's repacks too); what was uploaded.

        A source archive whose content is already there (same sha256) is kept as is."""
        from airflow_sm_pytorch.builders.deploy import RepackUpload
        from airflow_sm_pytorch.packaging import sourcedir_bytes

        uploaded = []
        if plan.uploads:
            self.ensure_default_bucket()
        for upload in plan.uploads:
            if isinstance(upload, RepackUpload):
                environment = (getattr(plan, "create_model", {}).get("PrimaryContainer") or {}).get("Environment")
                self._repack(upload, program=(environment or {}).get("SAGEMAKER_PROGRAM"))
                uploaded.append(upload.uri)
                continue
            data, digest = sourcedir_bytes(upload.files)
            if self.storage.sha256(upload.uri) == digest:
                self.log.info("Code archive %s is up to date (sha256 %s); not uploading", upload.uri, digest)
                continue
            self.log.info("Uploading %s (%d bytes, sha256 %s)", upload.uri, len(data), digest)
            self.storage.upload_bytes(data, upload.uri, extra_args=self._upload_args(upload))
            uploaded.append(upload.uri)
        return uploaded

    def _upload_args(self, upload: Any) -> dict[str, str] | None:
        """The plan's ExtraArgs, plus ``ExpectedBucketOwner`` for the SDK-generated default bucket (as the SDK).

        ``plan`` cannot add it offline; here the account is known.
        """
        if upload.uri.startswith("file://"):
            return None
        extra = dict(upload.extra_args)
        owner = self._owner_of_default_bucket
        if owner and upload.uri.startswith(f"s3://{self.default_bucket}/"):
            extra["ExpectedBucketOwner"] = owner
        return extra

    # ---------------------------------------------------------------- any resource: describe, create once, wait
    def describe(self, kind: str, name: str) -> dict[str, Any] | None:
        """Describe the ``kind`` resource ``name``; None when it does not exist (by error code)."""
        resource = RESOURCES[kind]
        try:
            return self.call("sagemaker", resource.describe, **{resource.name_key: name})
        except RequestRejected as err:
            if err.code in NOT_FOUND_CODES:
                return None
            raise

    def create_once(self, kind: str, request: dict[str, Any],
                    before_create: Callable[[], Any] | None = None) -> tuple[dict[str, Any], bool]:
        """Describe, then create only when missing: ``(description, created)``. A create that fails because
        another caller created it meanwhile attaches too. ``before_create`` (uploads) runs only when creating.

        A retried or cleared task therefore re-attaches to its resource instead of creating a second one.
        """
        resource = RESOURCES[kind]
        name = request[resource.name_key]
        existing = self.describe(kind, name)
        if existing is not None:
            self.log.info("%s %s already exists; attaching to it", kind, name)
            return existing, False
        if before_create is not None:
            before_create()
        try:
            self.call("sagemaker", resource.create, **request)
        except RequestRejected as err:
            existing = self.describe(kind, name)
            if existing is None:
                raise
            self.log.info("%s %s was created concurrently (%s); attaching to it", kind, name, err.code)
            return existing, False
        created = self.describe(kind, name)
        if created is None:
            raise RequestRejected(resource.describe, "ValidationException", f"{kind} {name} vanished after creation")
        return created, True

    def wait_for(self, kind: str, name: str, *, poll_interval: float = 5.0, timeout: float | None = None,
                 on_poll: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll ``kind`` until its acceptors say success or failure; return the last description.

        The rules are :func:`hooks.waiting.waiting`'s (shared with the deferred trigger): transient errors
        are retried with backoff, a failure state raises :class:`JobFailed`, ``timeout`` seconds raise
        :class:`JobTimeout`. ``on_poll(description)`` runs after every successful Describe (log tailing).
        """
        deadline = None if timeout is None else time.time() + timeout
        step = waiting(kind, name, poll_interval=poll_interval, deadline=deadline, on_poll=on_poll,
                       warn=self.log.warning)
        return run_sync(step, lambda: self.describe(kind, name))

    def describe_patiently(self, kind: str, name: str, *, poll_interval: float = 5.0,
                           timeout: float | None = None) -> dict[str, Any] | None:
        """:meth:`describe`, retrying transient errors (the service or the local runtime away a while) as a
        wait does; ``None`` when the resource does not exist. A resumed task reads its job's outcome so."""
        deadline = None if timeout is None else time.time() + timeout
        step = answered(kind, name, poll_interval=poll_interval, deadline=deadline, warn=self.log.warning)
        return run_sync(step, lambda: self.describe(kind, name))

    # ---------------------------------------------------------------- training
    def submit_training(self, plan: Any) -> tuple[dict[str, Any], bool]:
        """Create the plan's training job once (uploading its code only when creating)."""
        return self.create_once("TrainingJob", plan.request, before_create=lambda: self.upload_plan(plan))

    def find_training_job(self, name: str) -> dict[str, Any] | None:
        return self.describe("TrainingJob", name)

    def describe_training_job(self, name: str) -> dict[str, Any]:
        return self.call("sagemaker", "DescribeTrainingJob", TrainingJobName=name)

    def stop_training_job(self, name: str) -> bool:
        """Ask the job to stop; False when it had already ended (not an error)."""
        try:
            self.call("sagemaker", "StopTrainingJob", TrainingJobName=name)
        except RequestRejected as err:
            if err.code == "ValidationException":
                self.log.info("Training job %s was not running: %s", name, err.message)
                return False
            raise
        self.log.info("Asked training job %s to stop", name)
        return True

    # ---------------------------------------------------------------- wait + logs
    def wait_for_training_job(
        self,
        name: str,
        *,
        logs: bool = True,
        poll_interval: float = 5.0,
        timeout: float | None = None,
        log_sink: Callable[[str], None] | None = None,
        mask: Iterable[str] = (),
        job_log: JobLog | None = None,
    ) -> dict[str, Any]:
        """Poll until the job ends, streaming its CloudWatch logs; raise :class:`JobFailed` unless Completed
        (its message ends with the last log lines).

        Every string in ``mask`` is replaced by ``***`` in the streamed lines (secrets the job might print);
        ``job_log`` continues from a known position instead (a resumed task).
        """
        if job_log is None and logs:
            job_log = JobLog(self, name, log_sink or self.log.info, mask=mask)
        last_secondary: list[str | None] = [None]

        def on_poll(desc: dict[str, Any]) -> None:
            if job_log is not None:
                job_log.poll()
            secondary = desc.get("SecondaryStatus")
            if secondary != last_secondary[0]:
                self.log.info("Training job %s: %s / %s", name, desc["TrainingJobStatus"], secondary)
                last_secondary[0] = secondary

        try:
            return self.wait_for("TrainingJob", name, poll_interval=poll_interval, timeout=timeout,
                                 on_poll=on_poll)
        except JobFailed as err:
            raise (job_log or JobLog(self, name, _silent, mask=mask)).annotated(err) from None

    # ---------------------------------------------------------------- hosting
    def plan_deploy(self, source: Any, deploy: Any, *, model_name: str | None = None,
                    endpoint_name: str | None = None) -> Any:
        """The exact CreateModel / EndpointConfig / Endpoint requests and uploads (pure; nothing is sent)."""
        from airflow_sm_pytorch.builders.deploy import build_deploy_plan

        return build_deploy_plan(source, deploy, self.session, model_name=model_name, endpoint_name=endpoint_name)

    def trained_model(self, training_job: str | Mapping[str, Any]) -> Any:
        """What ``estimator.deploy`` deploys for a training job: its name, or the training operator's XCom."""
        from airflow_sm_pytorch.builders.deploy import trained_model

        name = training_job if isinstance(training_job, str) else training_job.get("TrainingJobName")
        if not name:
            raise SpecError("training_job", training_job, "give a training job name or the XCom of "
                            "PyTorchTrainOperator / AttachSensor")
        description = self.describe("TrainingJob", str(name))
        if description is None:
            raise SpecError("training_job", name, "no such training job in this account and region",
                            problem="does not exist")
        if description["TrainingJobStatus"] != "Completed":
            raise SpecError("training_job", name, f"deploy a Completed job (this one is "
                            f"{description['TrainingJobStatus']})", problem="has no model to deploy")
        return trained_model(description)

    def _repack(self, upload: Any, *, program: str | None) -> None:
        import tempfile

        from airflow_sm_pytorch import repack
        from airflow_sm_pytorch.archives import safe_extract
        from airflow_sm_pytorch.storage import parse_uri

        with tempfile.TemporaryDirectory(prefix="sm-repack-") as tmp:
            work = Path(tmp)
            source = upload.repack_of
            local = Path(parse_uri(source).path) if source.startswith("file://") else None
            if not (local.is_file() if local is not None else self.storage.exists(source)):
                raise SpecError("model_data", source, "point model_data at an existing model.tar.gz (nothing "
                                "was created)", problem="does not exist")
            if local is not None:
                original = local
            else:
                original = work / "model.tar.gz"
                self.storage.download_file(source, original)
            code = [(arc, Path(path)) for arc, path in upload.files]
            if upload.code_archive:
                extracted = work / "code"
                archive = work / "sourcedir.tar.gz"
                self.storage.download_file(upload.code_archive, archive)
                safe_extract(archive, extracted)
                code = [(f"code/{p.relative_to(extracted).as_posix()}", p)
                        for p in sorted(extracted.rglob("*")) if p.is_file()] + code
            target = upload.uri
            dest = Path(parse_uri(target).path) if target.startswith("file://") else work / "repacked.tar.gz"
            dest.parent.mkdir(parents=True, exist_ok=True)
            result, warnings = repack.repack_file(original, dest, code, name=source, entry_point=program,
                                                  replace_code=upload.replace_code)
            for warning in warnings:
                self.log.warning("%s: %s", source, warning)
            self.log.info("Repacked %s with %d code file(s) into %s (%s%s)", source, len(code), target,
                          result.method, f": {result.reason}" if result.reason else "")
            if not target.startswith("file://"):
                self.storage.upload_file(dest, target, extra_args=self._upload_args(upload))

    def deploy(self, plan: Any, *, wait: bool = True, poll_interval: float = 10.0,
               timeout: float | None = None) -> tuple[dict[str, Any], bool]:
        """Create-or-update: the model and config once, then the endpoint created, or updated to this config
        when it serves another one, or attached to. Waits for InService (Failed raises)."""
        self.create_once("Model", plan.create_model, before_create=lambda: self.upload_plan(plan))
        self.create_once("EndpointConfig", plan.create_endpoint_config)
        name, config = plan.endpoint_name, plan.endpoint_config_name
        endpoint = self.describe("Endpoint", name)
        changed = False
        if endpoint is None:
            endpoint, changed = self.create_once("Endpoint", plan.create_endpoint)
        elif endpoint.get("EndpointConfigName") != config:
            if endpoint["EndpointStatus"] in ("Creating", "Updating", "SystemUpdating"):
                self.log.info("Endpoint %s is %s; waiting before updating it", name, endpoint["EndpointStatus"])
                self._wait_endpoint(name, poll_interval, timeout, raise_on_failure=False)
            self.log.info("Updating endpoint %s to config %s", name, config)
            self.call("sagemaker", "UpdateEndpoint", EndpointName=name, EndpointConfigName=config)
            changed = True
        else:
            self.log.info("Endpoint %s already serves %s; attaching to it", name, config)
        if wait:
            endpoint = self._wait_endpoint(name, poll_interval, timeout)
        else:
            endpoint = self.describe("Endpoint", name) or endpoint
        return endpoint, changed

    def _wait_endpoint(self, name: str, poll_interval: float, timeout: float | None, *,
                       raise_on_failure: bool = True) -> dict[str, Any]:
        def progress(desc: dict[str, Any]) -> None:
            self.log.info("Endpoint %s: %s", name, desc["EndpointStatus"])

        try:
            return self.wait_for("Endpoint", name, poll_interval=poll_interval, timeout=timeout, on_poll=progress)
        except JobFailed:
            if raise_on_failure:
                raise
            return self.describe("Endpoint", name) or {}

    def delete_deployment(self, endpoint_name: str, *, endpoint_config_name: str | None = None,
                          model_name: str | None = None) -> list[str]:
        """Delete the endpoint, then its config and model (each only if it exists); what was deleted."""
        deleted = []
        endpoint = self.describe("Endpoint", endpoint_name)
        if endpoint is not None:
            if endpoint["EndpointStatus"] in ("Creating", "Updating"):
                self._wait_endpoint(endpoint_name, 5.0, None, raise_on_failure=False)
            config = self.describe("EndpointConfig", endpoint_config_name or endpoint["EndpointConfigName"])
            if config is not None and model_name is None:
                model_name = config["ProductionVariants"][0].get("ModelName")
            endpoint_config_name = endpoint_config_name or endpoint["EndpointConfigName"]
            self.call("sagemaker", "DeleteEndpoint", EndpointName=endpoint_name)
            deleted.append(f"endpoint {endpoint_name}")
        for kind, name in (("EndpointConfig", endpoint_config_name), ("Model", model_name)):
            if name and self.describe(kind, name) is not None:
                self.call("sagemaker", RESOURCES[kind].delete, **{RESOURCES[kind].name_key: name})
                deleted.append(f"{kind} {name}")
        return deleted

    # ---------------------------------------------------------------- data staging
    def upload_data(self, path: str | os.PathLike[str], *, key_prefix: str = "data",
                    bucket: str | None = None) -> str:
        """Upload a file or directory like the SDK's ``Session.upload_data``; return its URI.

        A directory gives ``<bucket>/<key_prefix>`` (its files keep their relative paths), a file gives
        ``<bucket>/<key_prefix>/<file name>``. ``bucket`` defaults to the default bucket (a ``file://``
        store on the local runtime), so the same DAG code stages data on both backends.
        """
        parts = [key_prefix.strip("/")]
        if bucket is None and self.settings.get("default_bucket_prefix"):
            parts.insert(0, self.settings["default_bucket_prefix"].strip("/"))
        if bucket is None:
            self.ensure_default_bucket()
        target = "/".join([_bucket_uri(bucket or self.default_bucket), *filter(None, parts)])
        src = Path(path)
        if src.is_dir():
            for file in sorted(p for p in src.rglob("*") if p.is_file()):
                self.storage.upload_file(file, f"{target}/{file.relative_to(src).as_posix()}")
            return target
        if not src.is_file():
            raise SpecError("path", str(path), "give an existing file or directory to upload")
        uri = f"{target}/{src.name}"
        self.storage.upload_file(src, uri)
        return uri

    # ---------------------------------------------------------------- local runtime
    def ensure_local_runtime(self, *, wait_seconds: float = 30.0) -> None:
        """Start the local runtime in the background when it is configured, on loopback and silent."""
        settings = self.local_runtime
        endpoint = self.conn_config.get_service_endpoint_url("sagemaker")
        if settings is None or not endpoint:
            return
        if _ping(endpoint):
            return
        url = urllib.parse.urlparse(endpoint)
        if not settings.get("autostart", True) or url.hostname not in _LOOPBACK:
            # caused by a refused connection, so that a wait retries it like any call's (the runtime
            # restarting), while a submission fails with this message
            raise RequestRejected(
                "Connect", "EndpointUnreachable",
                f"nothing answers at {endpoint}; start it with `airflow-sm-pytorch local serve "
                f"--port {url.port}` or set sm_pytorch.local_runtime.autostart to true",
            ) from EndpointConnectionError(endpoint_url=endpoint)
        root = Path(settings["root"])
        root.mkdir(parents=True, exist_ok=True)
        log_path = root / "server.log"
        self.log.info("Starting the local SageMaker runtime on %s (root %s, log %s)", endpoint, root, log_path)
        from airflow_sm_pytorch.local.auth import ACCESS_KEY_ENV, SECRET_KEY_ENV

        argv = [sys.executable, "-m", "airflow_sm_pytorch.local", "--host", url.hostname or "127.0.0.1",
                "--port", str(url.port or local_config.DEFAULT_PORT), "--root", str(root)]
        for path in settings.get("allow_paths") or ():
            argv += ["--allow-path", str(Path(path).expanduser())]
        # the connection's keys travel in the environment (argv is visible to every local user)
        env = {**os.environ, ACCESS_KEY_ENV: self.conn_config.aws_access_key_id or "",
               SECRET_KEY_ENV: self.conn_config.aws_secret_access_key or ""}
        with open(log_path, "ab") as log_file:
            subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                env=env,
            )
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if _ping(endpoint):
                return
            time.sleep(0.1)
        raise RequestRejected("Connect", "EndpointUnreachable",
                              f"the local runtime did not answer at {endpoint} within {wait_seconds:.0f}s; "
                              f"see {log_path}") from EndpointConnectionError(endpoint_url=endpoint)


def _settings(conn_config: Any) -> dict[str, Any]:
    extra = conn_config.extra_config or {}
    value = extra.get("sm_pytorch") or {}
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value)


def _local_runtime(settings: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"autostart": True, "root": None, "allow_paths": []}
    value = settings.get("local_runtime")
    if isinstance(value, dict):
        out.update(value)
    root = out["root"]
    out["root"] = Path(root).expanduser() if root else local_config.default_root()
    if isinstance(out["allow_paths"], str):
        out["allow_paths"] = [out["allow_paths"]]
    return out


def _silent(line: str) -> None:
    """A log sink that prints nothing."""


def _mask(secret: str) -> None:
    """Hide ``secret`` in task logs (Airflow's masker), where one runs."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - Airflow 3 has it
        return
    mask_secret(secret)


def _bucket_uri(bucket: str) -> str:
    if bucket.startswith(("file://", "s3://")):
        return bucket.rstrip("/")
    return f"s3://{bucket}"


def _ping(endpoint: str) -> bool:
    try:
        # a refused connection answers at once; a busy runtime (or machine) may take seconds
        with urllib.request.urlopen(endpoint.rstrip("/") + "/ping", timeout=PING_TIMEOUT) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False
