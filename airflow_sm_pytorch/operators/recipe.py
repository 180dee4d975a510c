"""``RecipeTrainOperator``: ``PyTorch(training_recipe=..., recipe_overrides=...).fit(...)`` as an Airflow task.

A :class:`~airflow_sm_pytorch.operators.train.PyTorchTrainOperator` whose spec comes from a HyperPod recipe
(:mod:`airflow_sm_pytorch.builders.recipes`): same templating, XCom, job names, retries, re-attach and kill.
Importing this module is cheap: no boto3, botocore, torch, omegaconf or numpy (a test pins this).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_sm_pytorch.builders.recipes import CPU_LAUNCHER_MARKER, RECIPE_KEYS, SETTINGS
from airflow_sm_pytorch.operators.train import PyTorchTrainOperator, _native

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_sm_pytorch.builders.recipes import RecipePlan
    from airflow_sm_pytorch.specs import TrainingSpec


class RecipeTrainOperator(PyTorchTrainOperator):
    """Train from a SageMaker HyperPod recipe on SageMaker (or the local runtime) and wait for it.

    Takes ``PyTorch(training_recipe=..., recipe_overrides=...)``'s keyword arguments (and
    ``ModelTrainer.from_recipe``'s ``compute``, ``requirements`` and ``training_image``), plus ``inputs``
    and ``job_name``; everything else is :class:`PyTorchTrainOperator`'s (``aws_conn_id``, ``wait``,
    ``logs``, ``if_job_exists`` …). The recipe is a name in ``recipes_dir`` (a pinned checkout of
    sagemaker-hyperpod-recipes), a local ``.yaml`` file, or an ``https://`` URL fetched at execute time
    (at most 1 MiB). Launchers come from pinned checkouts too: ``adapter_dir``
    (sagemaker-training-adapter-for-nemo, GPU recipes) or ``neuron_dir`` (neuronx-distributed-training,
    Trainium). Each setting given here wins over the connection's ``sm_pytorch.<setting>``. Nothing is
    ever cloned.

    An override key the recipe does not have, an interpolation left unresolved, a GPU recipe on a
    Trainium type (or the reverse) fail the task before anything is uploaded, naming the key. On the local
    runtime a launcher that cannot run on this machine (no GPU or Neuron devices, unless its checkout holds
    a ``LOCAL_CPU_LAUNCHER`` file) fails at once, saying what is missing.

    The rendered ``resolved_recipe`` field shows the recipe as sent, secrets masked (``model.hf_access_token``
    and any secret-looking key); the token still reaches the job in the uploaded recipe file.
    """

    template_fields = ("estimator", "recipe", "resolved_recipe", "aws_conn_id", "region_name")
    template_fields_renderers: ClassVar[dict[str, str]] = {"estimator": "json", "recipe": "json",
                                                           "resolved_recipe": "yaml"}
    #: the resolved recipe is only known in execute: send the rendered fields again afterwards
    overwrite_rtif_after_execution = True
    ui_color = "#f0b35e"

    def __init__(
        self,
        *,
        training_recipe: str,
        recipe_overrides: Mapping[str, Any] | None = None,
        requirements: str | None = None,
        compute: Mapping[str, Any] | None = None,
        training_image: str | None = None,
        recipes_dir: str | None = None,
        adapter_dir: str | None = None,
        neuron_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        given = {"training_recipe": training_recipe, "recipe_overrides": recipe_overrides,
                 "requirements": requirements, "compute": compute, "training_image": training_image,
                 "recipes_dir": recipes_dir, "adapter_dir": adapter_dir, "neuron_dir": neuron_dir}
        self.recipe: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        self.resolved_recipe: str | None = None
        self._staging: tempfile.TemporaryDirectory[str] | None = None

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Render, then hand every secret in the overrides to Airflow's masker (rendered fields, logs)."""
        super().render_template_fields(context, jinja_env)
        _mask_all(self.recipe.get("recipe_overrides"))

    def plan_recipe(self) -> RecipePlan:
        """Resolve the rendered recipe (a URL is fetched now) with the operator's or connection's checkouts."""
        from airflow_sm_pytorch.builders.recipes import Launchers, RecipeSpec, plan_recipe
        from airflow_sm_pytorch.recipe_fetch import fetch_https

        estimator = {k: _native(k, v) for k, v in self.estimator.items()}
        recipe = {k: v for k, v in self.recipe.items() if k in RECIPE_KEYS}
        spec = RecipeSpec.from_dict({**estimator, **recipe})
        settings = {k: v for k, v in self.recipe.items() if k in SETTINGS}
        launchers = Launchers.first(settings, self.hook.settings)
        return plan_recipe(spec, launchers, region=self.hook.region, fetch=fetch_https)

    def build_spec(self) -> TrainingSpec:
        """The recipe job's spec: its code staged (source_dir's files, the launcher, the resolved recipe)."""
        plan = self.plan_recipe()
        _mask_all(plan.recipe.config)
        self.resolved_recipe = plan.recipe.shown(mark=True)
        for warning in plan.warnings:
            self.log.warning("%s", warning)
        self.log.info("Recipe %s (%s) -> %s on %s, entry point %s from %s; overridden: %s", plan.recipe.name,
                      plan.recipe.source, plan.recipe.file_name, plan.device, plan.entry_point,
                      plan.launcher_dir, ", ".join(plan.recipe.overridden) or "nothing")
        if self.hook.is_local:
            check_runs_here(plan)
        self._cleanup()
        self._staging = tempfile.TemporaryDirectory(prefix="sm-recipe-")
        return plan.stage(self._staging.name)

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            return super().execute(context)
        finally:
            self._cleanup()  # the staged code is uploaded, the task deferred or failed: drop it

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        try:
            return super().execute_complete(context, event)
        finally:
            self._cleanup()  # resuming re-resolves the recipe (for its secrets); nothing is uploaded

    def _cleanup(self) -> None:
        if self._staging is not None:
            self._staging.cleanup()
            self._staging = None


def check_runs_here(plan: RecipePlan) -> None:
    """On the local runtime: the launcher must be there and able to run on this machine, else a SpecError
    that says exactly what is missing (instead of a job that hangs or fails deep inside the adapter)."""
    from airflow_sm_pytorch.exceptions import SpecError
    from airflow_sm_pytorch.local.training import contract

    if plan.launcher_missing:
        name = "adapter_dir" if plan.device == "gpu" else "neuron_dir"
        raise SpecError(name, plan.launcher_dir, f"{plan.launcher_missing}. The local runtime runs the launcher "
                        "itself, so it needs the checkout on this machine", problem="is required")
    instance_type = plan.estimator.get("instance_type")
    if plan.device == "trainium" and not contract.num_neurons():
        raise SpecError("instance_type", instance_type, "this machine has no Neuron devices (neuron-ls finds "
                        "none), so the local runtime cannot run a Trainium recipe job: run it on SageMaker, or "
                        "check it with `airflow-sm-pytorch plan recipe --spec FILE`", problem="cannot run here")
    if plan.device == "gpu" and not plan.cpu_launcher and not contract.num_gpus():
        raise SpecError("adapter_dir", plan.launcher_dir, f"this machine has no GPU (nvidia-smi finds none) and "
                        f"the launcher {plan.entry_point} from {plan.launcher_dir} needs CUDA: run it on "
                        "SageMaker, check it with `airflow-sm-pytorch plan recipe --spec FILE`, or point "
                        f"adapter_dir at a CPU stand-in in the adapter's layout (its checkout holds a "
                        f"{CPU_LAUNCHER_MARKER} file, like dags/recipe_launcher)", problem="cannot run here")


def _mask_all(value: Any) -> None:
    """Give every secret-looking value to Airflow's masker (logs, rendered fields, XCom)."""
    from airflow.sdk.log import mask_secret

    from airflow_sm_pytorch._redact import secrets

    for secret in set(secrets(value)) if isinstance(value, Mapping) else ():
        mask_secret(secret)
