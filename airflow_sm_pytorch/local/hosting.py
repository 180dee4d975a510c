"""SageMaker hosting on the local runtime: models, endpoint configs and endpoints (one handler per operation).

* ``CreateModel`` / ``CreateEndpointConfig`` record the request (the model's ``file://`` data must exist;
  a config's models must exist). ``CreateEndpoint`` records the endpoint ``Creating`` and launches one
  detached endpoint supervisor (:mod:`.endpoint`) per generation; it extracts the model safely, builds the
  ``code/requirements.txt`` venv, runs the model server (:mod:`.serving`) on a loopback port and reports
  ``InService`` or ``Failed`` (with the model server's reason) into the store.
* ``UpdateEndpoint`` launches the next generation with the new config; the endpoint stays ``Updating``
  (and keeps serving from the old one) until the new one is ready, then the old generation is stopped. A
  new generation that fails leaves the old config serving, ``InService``, with the ``FailureReason``, as
  SageMaker rolls back a failed update.
* ``DeleteEndpoint`` stops the supervisor (SIGTERM: the model server drains, then stops) and forgets the
  endpoint; an endpoint still ``Creating`` or ``Updating`` is refused with a message saying to wait.
* An endpoint whose supervisor died is ``Failed`` at the next look; when the runtime starts, endpoints that
  were ``InService`` get a new generation (they come back, from their recorded config).
* Logs go to CloudWatch Logs' ``/aws/sagemaker/Endpoints/<name>``, stream ``AllTraffic/<instance id>``.

Errors use SageMaker's codes and words ("Could not find model ...", "Cannot create already existing
endpoint ...").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_sm_pytorch.local.protocol import ACCOUNT, ApiError, page_offset, page_token
from airflow_sm_pytorch.local.store import Store, process_alive, process_start
from airflow_sm_pytorch.storage import parse_uri

ENDPOINT = "Endpoint"
#: Endpoint states in which a supervisor must be running.
LIVE = ("Creating", "Updating", "InService")


def log_group(endpoint: str) -> str:
    return f"/aws/sagemaker/Endpoints/{endpoint}"


def _arn(region: str, kind: str, name: str) -> str:
    kebab = {"Model": "model", "EndpointConfig": "endpoint-config", "Endpoint": "endpoint"}[kind]
    return f"arn:aws:sagemaker:{region}:{ACCOUNT}:{kebab}/{name.lower()}"


class Hosting:
    """The hosting operations over one store; ``ops`` maps operation names to handlers."""

    def __init__(self, store: Store, root: Path) -> None:
        self.store, self.root = store, Path(root)
        self._lock = threading.Lock()
        self.ops: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
            "CreateModel": self.create_model, "DescribeModel": self.describe_model,
            "DeleteModel": self.delete_model, "ListModels": self.list_models,
            "CreateEndpointConfig": self.create_endpoint_config,
            "DescribeEndpointConfig": self.describe_endpoint_config,
            "DeleteEndpointConfig": self.delete_endpoint_config, "ListEndpointConfigs": self.list_endpoint_configs,
            "CreateEndpoint": self.create_endpoint, "DescribeEndpoint": self.describe_endpoint,
            "UpdateEndpoint": self.update_endpoint, "DeleteEndpoint": self.delete_endpoint,
            "ListEndpoints": self.list_endpoints,
        }

    # ------------------------------------------------------------------ models
    def create_model(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        name = params["ModelName"]
        containers = [params["PrimaryContainer"]] if params.get("PrimaryContainer") else params.get("Containers") or []
        if len(containers) != 1:
            raise ApiError("ValidationException", "The local runtime serves models with exactly one container "
                                                      "(PrimaryContainer).")
        container = containers[0]
        data = container.get("ModelDataUrl") or ((container.get("ModelDataSource") or {}).get("S3DataSource")
                                                 or {}).get("S3Uri")
        if isinstance(data, str) and data.startswith("file://") and not os.path.exists(parse_uri(data).path):
            raise ApiError("ValidationException", f"Could not access model data at {data}: it does not exist "
                                                      "on the local runtime's machine.")
        arn = _arn(region, "Model", name)
        if not self.store.create_resource("Model", name, arn, params):
            raise ApiError("ValidationException", f'Cannot create already existing model "{arn}".')
        return {"ModelArn": arn}

    def _get(self, kind: str, name: str, region: str) -> dict[str, Any]:
        found = self.store.get_resource(kind, name)
        if found is None:
            what = {"Model": "model", "EndpointConfig": "endpoint configuration", "Endpoint": "endpoint"}[kind]
            raise ApiError("ValidationException", f'Could not find {what} "{_arn(region, kind, name)}".')
        return found

    def describe_model(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        model = self._get("Model", params["ModelName"], region)
        request = model["request"]
        out = {k: v for k, v in request.items() if k not in ("Tags",)}
        out.update(ModelArn=model["arn"], CreationTime=model["creation_time"],
                   EnableNetworkIsolation=bool(request.get("EnableNetworkIsolation", False)))
        return out

    def delete_model(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        self._get("Model", params["ModelName"], region)
        self.store.delete_resource("Model", params["ModelName"])
        return {}

    def list_models(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        return self._list("Model", params, "Models",
                          lambda m: {"ModelName": m["name"], "ModelArn": m["arn"], "CreationTime": m["creation_time"]})

    # ------------------------------------------------------------------ endpoint configs
    def create_endpoint_config(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        name = params["EndpointConfigName"]
        for variant in params["ProductionVariants"]:
            if variant.get("ModelName"):
                self._get("Model", variant["ModelName"], region)
        if len(params["ProductionVariants"]) != 1:
            raise ApiError("ValidationException", "The local runtime serves endpoint configs with exactly one "
                                                      "production variant.")
        arn = _arn(region, "EndpointConfig", name)
        if not self.store.create_resource("EndpointConfig", name, arn, params):
            raise ApiError("ValidationException",
                               f'Cannot create already existing endpoint configuration "{arn}".')
        return {"EndpointConfigArn": arn}

    def describe_endpoint_config(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        config = self._get("EndpointConfig", params["EndpointConfigName"], region)
        out = {k: v for k, v in config["request"].items() if k not in ("Tags",)}
        out.update(EndpointConfigArn=config["arn"], CreationTime=config["creation_time"])
        return out

    def delete_endpoint_config(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        self._get("EndpointConfig", params["EndpointConfigName"], region)
        self.store.delete_resource("EndpointConfig", params["EndpointConfigName"])
        return {}

    def list_endpoint_configs(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        return self._list("EndpointConfig", params, "EndpointConfigs",
                          lambda c: {"EndpointConfigName": c["name"], "EndpointConfigArn": c["arn"],
                                     "CreationTime": c["creation_time"]})

    # ------------------------------------------------------------------ endpoints
    def create_endpoint(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        name, config = params["EndpointName"], params["EndpointConfigName"]
        self._get("EndpointConfig", config, region)
        arn = _arn(region, ENDPOINT, name)
        if not self.store.create_resource(ENDPOINT, name, arn, params, status="Creating",
                                          state={"config": config, "generation": 1, "region": region}):
            raise ApiError("ValidationException", f'Cannot create already existing endpoint "{arn}".')
        self.launch(name, 1)
        return {"EndpointArn": arn}

    def update_endpoint(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        name, config = params["EndpointName"], params["EndpointConfigName"]
        endpoint = self._endpoint(name, region)
        self._get("EndpointConfig", config, region)
        generation = int(endpoint["state"].get("generation", 1)) + 1
        if not self.store.update_resource(ENDPOINT, name, expect=("InService",), status="Updating",
                                          state={"pending_config": config, "pending_generation": generation}):
            raise ApiError("ValidationException", f'Cannot update in-progress endpoint "{endpoint["arn"]}".')
        self.launch(name, generation)
        return {"EndpointArn": endpoint["arn"]}

    def delete_endpoint(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        endpoint = self._endpoint(params["EndpointName"], region)
        if endpoint["status"] in ("Creating", "Updating"):
            raise ApiError("ValidationException",
                               f'Cannot delete endpoint "{endpoint["arn"]}" while it is {endpoint["status"]}: wait '
                               "until it is InService or Failed (DescribeEndpoint), then delete it.")
        procs = self.store.processes(ENDPOINT, endpoint["name"])
        self.store.delete_resource(ENDPOINT, endpoint["name"])
        for proc in procs:
            stop(proc)
        return {}

    def describe_endpoint(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        endpoint = self._endpoint(params["EndpointName"], region)
        state = endpoint["state"]
        config = self.store.get_resource("EndpointConfig", state.get("config", ""))
        out: dict[str, Any] = {
            "EndpointName": endpoint["name"], "EndpointArn": endpoint["arn"],
            "EndpointConfigName": state.get("config"), "EndpointStatus": endpoint["status"],
            "CreationTime": endpoint["creation_time"], "LastModifiedTime": endpoint["last_modified_time"],
        }
        if endpoint["failure_reason"]:
            out["FailureReason"] = endpoint["failure_reason"]
        if config is not None and endpoint["status"] != "Creating":
            out["ProductionVariants"] = [_variant_summary(v, self.store, state)
                                         for v in config["request"]["ProductionVariants"]]
        return out

    def list_endpoints(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        for endpoint in self.store.list_resources(ENDPOINT):
            self.reap(endpoint)
        return self._list(ENDPOINT, params, "Endpoints",
                          lambda e: {"EndpointName": e["name"], "EndpointArn": e["arn"],
                                     "CreationTime": e["creation_time"], "LastModifiedTime": e["last_modified_time"],
                                     "EndpointStatus": e["status"]},
                          status_filter=params.get("StatusEquals"))

    def _endpoint(self, name: str, region: str) -> dict[str, Any]:
        endpoint = self._get(ENDPOINT, name, region)
        if self.reap(endpoint):
            endpoint = self._get(ENDPOINT, name, region)
        return endpoint

    # ------------------------------------------------------------------ supervision
    def launch(self, name: str, generation: int) -> None:
        """Start the endpoint supervisor for ``generation`` (detached: it outlives this server)."""
        work = self.root / "endpoints" / name
        work.mkdir(parents=True, exist_ok=True)
        with open(work / "supervisor.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "airflow_sm_pytorch.local.endpoint", "--root", str(self.root),
                 "--endpoint", name, "--generation", str(generation)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=work,
                start_new_session=True, close_fds=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.store.set_process(ENDPOINT, name, f"gen-{generation}", proc.pid, process_start(proc.pid),
                               generation=generation)
        threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()  # no zombies

    def reap(self, endpoint: dict[str, Any]) -> bool:
        """Fail a live endpoint whose current supervisor is gone; True when the record changed."""
        if endpoint["status"] not in LIVE:
            return False
        state = endpoint["state"]
        current = state.get("pending_generation") if endpoint["status"] == "Updating" else state.get("generation")
        for proc in self.store.processes(ENDPOINT, endpoint["name"]):
            if proc["info"].get("generation") == current and process_alive(proc["pid"], proc["start"]):
                return False
        if time.time() - endpoint["last_modified_time"] < 30 and not self.store.processes(ENDPOINT, endpoint["name"]):
            return False  # launched a moment ago
        log = self.root / "endpoints" / endpoint["name"] / "supervisor.log"
        return self.store.update_resource(
            ENDPOINT, endpoint["name"], expect=LIVE, status="Failed",
            failure_reason=f"the local runtime's endpoint supervisor exited unexpectedly; see {log}")

    def restore(self) -> int:
        """At server start: endpoints that were InService (or on their way) get a new generation."""
        count = 0
        for endpoint in self.store.list_resources(ENDPOINT):
            if endpoint["status"] not in LIVE:
                continue
            state = endpoint["state"]
            alive = [p for p in self.store.processes(ENDPOINT, endpoint["name"])
                     if process_alive(p["pid"], p["start"])]
            if alive:
                continue
            generation = int(max(state.get("generation", 1), state.get("pending_generation") or 0)) + 1
            self.store.update_resource(ENDPOINT, endpoint["name"], status="InService" if endpoint["status"] ==
                                       "InService" else "Creating",
                                       state={"generation": generation, "pending_config": None,
                                              "pending_generation": None, "port": None})
            self.launch(endpoint["name"], generation)
            count += 1
        return count

    def serving_port(self, name: str) -> int | None:
        """The loopback port of an InService endpoint's model server (None: not found or not ready)."""
        endpoint = self.store.get_resource(ENDPOINT, name)
        if endpoint is None or endpoint["status"] not in ("InService", "Updating"):
            return None
        port = endpoint["state"].get("port")
        return int(port) if port else None

    # ------------------------------------------------------------------ lists
    def _list(self, kind: str, params: dict[str, Any], key: str, summary: Callable[[dict[str, Any]], dict[str, Any]],
              status_filter: str | None = None) -> dict[str, Any]:
        items = self.store.list_resources(kind)
        if params.get("NameContains"):
            items = [i for i in items if params["NameContains"].lower() in i["name"].lower()]
        if status_filter:
            items = [i for i in items if i["status"] == status_filter]
        if params.get("SortBy") == "Name":
            items.sort(key=lambda i: i["name"])
        if params.get("SortOrder", "Descending") == "Descending":
            items.reverse()
        offset = page_offset(params.get("NextToken"), "ValidationException")
        size = params.get("MaxResults", 10)
        out: dict[str, Any] = {key: [summary(i) for i in items[offset:offset + size]]}
        if offset + size < len(items):
            out["NextToken"] = page_token(offset + size)
        return out


def _variant_summary(variant: dict[str, Any], store: Store, state: dict[str, Any]) -> dict[str, Any]:
    model = store.get_resource("Model", variant.get("ModelName", ""))
    image = ((model or {}).get("request", {}).get("PrimaryContainer") or {}).get("Image")
    count = variant.get("InitialInstanceCount", 1)
    out: dict[str, Any] = {"VariantName": variant["VariantName"],
                           "CurrentWeight": float(variant.get("InitialVariantWeight", 1.0)),
                           "DesiredWeight": float(variant.get("InitialVariantWeight", 1.0)),
                           "CurrentInstanceCount": count, "DesiredInstanceCount": count}
    if image:
        out["DeployedImages"] = [{"SpecifiedImage": image, "ResolvedImage": image}]
    if variant.get("ServerlessConfig"):
        out["CurrentServerlessConfig"] = variant["ServerlessConfig"]
    return out


def stop(proc: dict[str, Any], sig: int = signal.SIGTERM) -> None:
    """Signal a recorded supervisor if it is still the process that was recorded."""
    if process_alive(proc["pid"], proc["start"]):
        try:
            os.kill(proc["pid"], sig)
        except OSError:
            pass


def status_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
