"""``airflow-sm-pytorch plan train|deploy|recipe --spec F``: print the exact requests and uploads; send nothing.

The spec file (``.json``: read by the json module; otherwise YAML, with YAML 1.2's numbers, so that
``lr: 1e-5`` is a float as in Python) holds the ``PyTorch`` estimator's keyword arguments plus ``inputs`` and
``job_name`` (as in ``fit``) and the session keys ``region`` (default: ``AWS_REGION`` /
``AWS_DEFAULT_REGION``), ``default_bucket``, ``default_bucket_prefix`` and ``local``. Relative paths
(``entry_point``, ``source_dir``, ``dependencies``, local inputs) are resolved against the current
directory, as with the SDK.

``plan recipe``'s spec file holds ``PyTorch(training_recipe=..., recipe_overrides=...)``'s keyword arguments
(and ``ModelTrainer.from_recipe``'s ``compute``, ``requirements``, ``training_image``), ``inputs``,
``job_name``, the session keys, and where recipes and launchers come from: ``recipes_dir`` (a pinned
checkout of sagemaker-hyperpod-recipes, for recipes by name), ``adapter_dir`` (GPU launcher checkout) and
``neuron_dir`` (Trainium). Without the launcher checkout it still prints the request, names the entry point
and says what the upload would add. ``--show-recipe`` also prints the resolved recipe (secrets masked),
each overridden key marked ``# overridden``.

``plan deploy``'s spec file holds ``model`` (``PyTorchModel`` arguments) or ``estimator`` (``PyTorch``
arguments) with ``training_job_name`` (the job whose output is deployed, derived offline as ``fit`` would
have produced it), plus ``deploy`` (``deploy(...)`` arguments), ``name`` (the model name) and the same
session keys. It prints ``{"CreateModel", "CreateEndpointConfig", "CreateEndpoint", "uploads"}``.

Without ``default_bucket``, when one is needed, the SDK's ``sagemaker-<region>-<account>`` is used, the
account coming from STS ``GetCallerIdentity`` (a read-only call; boto3 is imported only then). Nothing
is created, uploaded or submitted. Bad input prints one ``error: ...`` paragraph and exits 2.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from airflow_sm_pytorch.exceptions import SpecError

EXIT_BAD_INPUT = 2


#: YAML 1.2 (core schema) numbers: ``1e-5`` is a float (YAML 1.1 wants ``1.0e-5``), ``010`` is 10, and
#: ``1_000`` or ``1:30`` stay strings, as Python's own literals and the json module read them.
_YAML12_INT = r"^[-+]?[0-9]+$|^0o[0-7]+$|^0x[0-9a-fA-F]+$"
_YAML12_FLOAT = (r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$"
                 r"|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$")


def spec_loader() -> type:
    """A ``yaml.SafeLoader`` subclass that resolves numbers by YAML 1.2's rules (PyYAML implements 1.1)."""
    import re

    import yaml

    class Yaml12SafeLoader(yaml.SafeLoader):
        """SafeLoader with the YAML 1.2 core schema's int and float resolvers."""

        def construct_yaml_int(self, node: Any) -> int:
            text = self.construct_scalar(node)
            base = {"0o": 8, "0x": 16}.get(text[:2], 10)
            return int(text[2:] if base != 10 else text, base)

    resolvers = {first: [(tag, rx) for tag, rx in pairs if tag not in ("tag:yaml.org,2002:int",
                                                                       "tag:yaml.org,2002:float")]
                 for first, pairs in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Yaml12SafeLoader.yaml_implicit_resolvers = resolvers
    Yaml12SafeLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(_YAML12_INT),
                                           list("-+0123456789"))
    Yaml12SafeLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(_YAML12_FLOAT),
                                           list("-+0123456789."))
    Yaml12SafeLoader.add_constructor("tag:yaml.org,2002:int", Yaml12SafeLoader.construct_yaml_int)
    return Yaml12SafeLoader


def load_spec(path: str) -> dict[str, Any]:
    """A spec file's mapping: ``.json`` with the json module, anything else as YAML 1.2 (numbers)."""
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text) if path.lower().endswith(".json") else yaml.load(text, Loader=spec_loader())
    if not isinstance(data, dict):
        raise SpecError("--spec", path, "write a mapping of estimator arguments (JSON object or YAML "
                        "mapping)", problem="is not a mapping")
    return data


def _region(data: dict[str, Any]) -> str:
    region = data.pop("region", None) or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise SpecError("region", None, "add 'region: <name>' to the spec file or set AWS_REGION",
                        problem="is required")
    return str(region)


def _account_bucket(region: str) -> str:
    """``sagemaker-<region>-<account>``, the account from STS; a SpecError when there are no credentials."""
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        raise SpecError("default_bucket", None, "set default_bucket in the spec file",
                        problem="is required") from None
    try:
        account = boto3.client("sts", region_name=region).get_caller_identity()["Account"]
    except (BotoCoreError, ClientError) as exc:
        raise SpecError("default_bucket", None, f"set default_bucket in the spec file: without it the SDK's "
                        f"sagemaker-{region}-<account id> is used, and the account could not be looked up "
                        f"({exc})", problem="is required") from None
    return f"sagemaker-{region}-{account}"


def _session_keys(data: dict[str, Any]) -> tuple[str, Any, Any, bool]:
    """Pop ``region``, ``default_bucket``, ``default_bucket_prefix`` and ``local`` from ``data``."""
    region = _region(data)
    bucket = data.pop("default_bucket", None)
    prefix = data.pop("default_bucket_prefix", None)
    local = data.pop("local", False)
    if not isinstance(local, bool):
        raise SpecError("local", local, "use true (the local runtime) or false (AWS)")
    return region, bucket, prefix, local


def _no_bucket(local: bool) -> SpecError:
    fix = ("set default_bucket to a file:///... directory (or a bucket) for the local runtime" if local
           else "set default_bucket")
    return SpecError("default_bucket", None, fix, problem="is required")


def build_plan(data: dict[str, Any]) -> Any:
    """Spec-file contents -> :class:`TrainingPlan` (session keys popped, job name chosen)."""
    from airflow_sm_pytorch.builders.naming import sdk_job_name
    from airflow_sm_pytorch.builders.training import (
        Session,
        build_training_plan,
        default_base_job_name,
        needs_default_bucket,
    )
    from airflow_sm_pytorch.specs import TrainingSpec

    data = dict(data)
    region, bucket, prefix, local = _session_keys(data)
    spec = TrainingSpec.from_dict(data)
    if not bucket and needs_default_bucket(spec):
        if local:
            raise _no_bucket(local)
        bucket = _account_bucket(region)
    session = Session(region=region, default_bucket=str(bucket or ""), default_bucket_prefix=prefix,
                      local=local)
    job_name = spec.job_name or sdk_job_name(default_base_job_name(spec, region))
    return build_training_plan(spec, session, job_name=job_name)


DEPLOY_KEYS = ("model", "estimator", "training_job_name", "deploy", "name")


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(key, value, f"write {key} as a mapping of keyword arguments",
                        problem="is not a mapping")
    return value


def build_deploy(data: dict[str, Any]) -> Any:
    """Spec-file contents -> :class:`DeployPlan`; the default bucket is looked up (STS) only when needed."""
    import difflib

    from airflow_sm_pytorch.builders.deploy import build_deploy_plan, trained_model_from_estimator
    from airflow_sm_pytorch.builders.training import Session
    from airflow_sm_pytorch.specs import DeploySpec, ModelSpec, TrainingSpec

    data = dict(data)
    region, bucket, prefix, local = _session_keys(data)
    unknown = sorted(set(data) - set(DEPLOY_KEYS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], DEPLOY_KEYS, n=1)
        fix = f"did you mean {close[0]!r}?" if close else f"use {list(DEPLOY_KEYS)} and the session keys"
        raise SpecError(unknown[0], data[unknown[0]], fix, problem="is not a plan deploy key")
    if ("model" in data) == ("estimator" in data):
        raise SpecError("model", data.get("model"), "give either model (PyTorchModel arguments) or estimator "
                        "(PyTorch arguments) with training_job_name", problem="conflicts" if "model" in data
                        else "is required")
    deploy = DeploySpec.from_dict(_section(data, "deploy"))
    name = data.get("name")

    def build(default_bucket: str) -> Any:
        session = Session(region=region, default_bucket=default_bucket, default_bucket_prefix=prefix,
                          local=local)
        if "model" in data:
            source: Any = ModelSpec.from_dict(_section(data, "model"))
        else:
            job = data.get("training_job_name")
            if not job:
                raise SpecError("training_job_name", job, "name the training job whose model to deploy",
                                problem="is required")
            estimator = TrainingSpec.from_dict(_section(data, "estimator"))
            source = trained_model_from_estimator(estimator, session, training_job_name=str(job))
        return build_deploy_plan(source, deploy, session, model_name=name)

    try:
        return build(str(bucket or ""))
    except SpecError as exc:
        if bucket or exc.field != "default_bucket":
            raise
        if local:
            raise _no_bucket(local) from None
    return build(_account_bucket(region))


RECIPE_SETTINGS = ("recipes_dir", "adapter_dir", "neuron_dir")


class RecipePlanView:
    """What ``plan recipe`` prints: the training plan, plus where the recipe and launcher come from."""

    def __init__(self, plan: Any, recipe: Any) -> None:
        self.plan = plan
        self.recipe = recipe
        self.warnings = tuple(recipe.warnings) + tuple(getattr(plan, "warnings", ()))

    def to_json(self) -> dict[str, Any]:
        recipe = self.recipe
        launcher: dict[str, Any] = {"entry_point": recipe.entry_point, "from": recipe.launcher_dir,
                                    "adds": recipe.adds()}
        if recipe.launcher_missing:
            launcher["missing"] = recipe.launcher_missing
        return {**self.plan.to_json(), "recipe": {
            "name": recipe.recipe.name, "source": recipe.recipe.source, "file": recipe.recipe.file_name,
            "device": recipe.device, "overridden": list(recipe.recipe.overridden), "launcher": launcher}}


def build_recipe(data: dict[str, Any]) -> RecipePlanView:
    """Spec-file contents (``PyTorch(training_recipe=...)`` kwargs, session keys, ``recipes_dir``,
    ``adapter_dir``, ``neuron_dir``) -> the plan of the job the SDK would start (a URL recipe is fetched)."""
    import tempfile

    from airflow_sm_pytorch.builders.recipes import Launchers, RecipeSpec, plan_recipe
    from airflow_sm_pytorch.recipe_fetch import fetch_https

    data = dict(data)
    settings = {k: data.pop(k) for k in RECIPE_SETTINGS if k in data}
    session = {k: data.pop(k) for k in ("region", "default_bucket", "default_bucket_prefix", "local") if k in data}
    region = _region(dict(session))
    recipe = plan_recipe(RecipeSpec.from_dict(data), Launchers.first(settings), region=region, fetch=fetch_https)
    with tempfile.TemporaryDirectory(prefix="sm-recipe-plan-") as staged:
        training = recipe.stage(staged, placeholder=True)  # an empty entry point stands in for a missing one
        plan = build_plan({**training.to_dict(), **session, "region": region})
    return RecipePlanView(plan, recipe)


def _paragraph(text: str) -> str:
    return " ".join(str(text).split())


def plan_main(args: Any) -> int:
    """Print the plan for ``args.spec`` as JSON; exit 0, or 2 with one ``error:`` paragraph on stderr."""
    import yaml

    try:
        data = load_spec(args.spec)
        with warnings.catch_warnings():  # the plan's own warnings are printed below, once
            warnings.simplefilter("ignore")
            builder = {"deploy": build_deploy, "recipe": build_recipe}.get(getattr(args, "kind", "train"),
                                                                           build_plan)
            plan = builder(data)
    except SpecError as exc:
        print(f"error: {_paragraph(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"error: cannot read {exc.filename or args.spec}: {_paragraph(reason)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except json.JSONDecodeError as exc:
        print(f"error: {args.spec} is not valid JSON: {_paragraph(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except yaml.YAMLError as exc:
        print(f"error: {args.spec} is not valid JSON or YAML: {_paragraph(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for note in getattr(plan, "warnings", ()):
        print(f"warning: {_paragraph(note)}", file=sys.stderr)
    print(json.dumps(plan.to_json(), indent=2))
    if getattr(args, "show_recipe", False):
        print(f"# resolved recipe {plan.recipe.recipe.file_name} (secrets masked; '# overridden': set by "
              "recipe_overrides)")
        print(plan.recipe.recipe.shown(mark=True))
    return 0
