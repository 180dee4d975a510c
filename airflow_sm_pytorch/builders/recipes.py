"""HyperPod recipes: ``PyTorch(training_recipe=..., recipe_overrides=...)`` as SageMaker SDK 2.257.6 builds it.

Facts: contracts/sdk-requests.md §5.1 (``_setup_for_training_recipe`` / ``_setup_for_standard_recipe``).
A recipe (a name in a recipes directory, a local YAML file, or YAML fetched from an ``https://`` URL by the
caller) is merged with ``recipe_overrides``, its interpolations resolved (the SDK's ``multiply``,
``divide_ceil``, ``divide_floor`` and ``add`` resolvers; as is, then wrapped as ``recipes``, then as
``training``), and turned into the estimator the SDK would make: the launcher's entry point, the resolved
recipe written into the code directory and passed as ``config-path``/``config-name``, the GPU (SMP) or
Trainium (Neuron) image and distribution, and ``instance_count`` from ``trainer.num_nodes``.

Where we differ on purpose (the SDK is silent or fragile there):

* an override key that is not in the recipe is refused, naming it and the closest existing keys (SDK v2
  keeps it, v3 drops it; either way a job runs that ignores the setting); a string override of a number
  or boolean key is read as that type when it is one (Jinja renders templates to strings);
* an unresolved interpolation names the key, the missing reference and the override that fixes it (the
  SDK says ``Could not resolve provided recipe.``);
* a GPU recipe on a Trainium instance type (or the reverse) is refused (the SDK sends it);
* launchers come from pinned local checkouts (``adapter_dir``: sagemaker-training-adapter-for-nemo,
  ``neuron_dir``: neuronx-distributed-training), never a ``git clone``; recipes by name from a pinned
  checkout of sagemaker-hyperpod-recipes (``recipes_dir``);
* the recipe file is ``<recipe name>_<8 hex of its sha256>.yaml`` (the SDK adds 8 random characters), so
  the same recipe gives the same ``sourcedir.tar.gz``, and nothing is written into the user's
  ``source_dir``: files are staged into a directory of their own (:meth:`RecipePlan.stage`);
* without ``source_dir`` only the launcher and the recipe are uploaded (the SDK uploads the current
  directory, ``"."``).

Nova, evaluation and LLMFT recipes (``run.model_type`` ``amazon.nova*``, ``llm_finetuning_aws``, ``verl``)
send a different request (a ``recipe`` channel) and are refused with a message saying so.

OmegaConf is imported only when a recipe is resolved, never at import.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import os
import shutil
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from airflow_sm_pytorch._redact import MASK, is_sensitive, redact
from airflow_sm_pytorch.builders.images import instance_family, recipe_gpu_image_uri, recipe_neuron_image_uri
from airflow_sm_pytorch.exceptions import SpecError

#: ``_get_training_recipe_gpu_script``: ``model.model_type`` prefix -> the adapter's ``examples/`` script.
GPU_SCRIPTS = {
    "llama_v3": ("llama", "llama_pretrain.py"),
    "mistral": ("mistral", "mistral_pretrain.py"),
    "mixtral": ("mixtral", "mixtral_pretrain.py"),
    "deepseek": ("deepseek", "deepseek_pretrain.py"),
    "gpt_oss": ("custom_model", "custom_pretrain.py"),
}
TRAINIUM_SCRIPT = "training_orchestrator.py"
GPU_DISTRIBUTION = {
    "smdistributed": {"modelparallel": {"enabled": True, "parameters": {"placement_strategy": "cluster"}}},
    "torch_distributed": {"enabled": True},
}
TRAINIUM_DISTRIBUTION = {"torch_distributed": {"enabled": True}}
ADAPTER_REPO = "https://github.com/aws/sagemaker-training-adapter-for-nemo"
NEURON_REPO = "https://github.com/aws-neuron/neuronx-distributed-training"
RECIPES_REPO = "https://github.com/aws/sagemaker-hyperpod-recipes"
#: A launcher checkout holding this file says it runs without GPU/Neuron devices (a local stand-in).
CPU_LAUNCHER_MARKER = "LOCAL_CPU_LAUNCHER"
#: The most a recipe fetched from a URL may weigh (the stock recipes are under 10 KB).
MAX_RECIPE_BYTES = 1024 * 1024
#: ``ModelTrainer.from_recipe``'s ``Compute`` fields -> the ``PyTorch`` estimator's.
COMPUTE_FIELDS = {
    "instance_type": "instance_type",
    "instance_count": "instance_count",
    "volume_size_in_gb": "volume_size",
    "volume_kms_key_id": "volume_kms_key",
    "keep_alive_period_in_seconds": "keep_alive_period_in_seconds",
    "enable_managed_spot_training": "use_spot_instances",
}
#: Keys of a recipe spec besides the estimator's: the recipe, and ModelTrainer.from_recipe's names.
RECIPE_KEYS = ("training_recipe", "recipe_overrides", "requirements", "compute", "training_image")
#: Estimator arguments the SDK ignores (with a warning) when a recipe is given.
IGNORED = ("entry_point", "hyperparameters", "distribution")
SETTINGS = ("recipes_dir", "adapter_dir", "neuron_dir")


# ----------------------------------------------------------------------------------------- the spec
@dataclasses.dataclass(frozen=True)
class RecipeSpec:
    """``PyTorch(training_recipe=..., recipe_overrides=..., **estimator)`` plus ``fit``'s ``inputs``/``job_name``.

    ``estimator`` holds every other ``PyTorch`` keyword argument (checked by ``TrainingSpec`` once the
    recipe has supplied the entry point, image and distribution). ``compute`` (``instance_type``,
    ``instance_count``, ``volume_size_in_gb`` …), ``requirements`` (a requirements file, uploaded as
    ``requirements.txt``) and ``training_image`` are ``ModelTrainer.from_recipe``'s names.
    """

    training_recipe: str
    recipe_overrides: Mapping[str, Any] | None = None
    requirements: str | None = None
    compute: Mapping[str, Any] | None = None
    training_image: str | None = None
    estimator: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.training_recipe, str) or not self.training_recipe.strip():
            raise SpecError("training_recipe", self.training_recipe, "name a recipe (e.g. "
                            "fine-tuning/llama/hf_llama3_8b_seq8k_gpu_lora), a local .yaml file or an "
                            "https:// URL", problem="is required")
        if self.recipe_overrides is not None and not isinstance(self.recipe_overrides, Mapping):
            raise SpecError("recipe_overrides", _shown("recipe_overrides", self.recipe_overrides),
                            'use a mapping, nested as the recipe is (e.g. {"trainer": {"max_steps": 10}})',
                            problem="has the wrong type")
        for name in ("requirements", "training_image"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise SpecError(name, value, "use a string", problem="has the wrong type")
        if self.compute is not None:
            if not isinstance(self.compute, Mapping):
                raise SpecError("compute", self.compute, "use a mapping of Compute arguments "
                                f"{list(COMPUTE_FIELDS)}", problem="has the wrong type")
            _refuse_unknown(self.compute, list(COMPUTE_FIELDS), "compute", "a Compute argument")
            for key, name in COMPUTE_FIELDS.items():
                if key in self.compute and self.estimator.get(name) is not None:
                    raise SpecError(f"compute.{key}", self.compute[key], f"give it once: {name} is also set",
                                    problem="conflicts")
        if self.training_image is not None and self.estimator.get("image_uri") is not None:
            raise SpecError("training_image", self.training_image, "give image_uri or training_image, not "
                            "both", problem="conflicts")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecipeSpec:
        """Split a mapping into the recipe keys and the estimator's, refusing unknown keys by name."""
        from airflow_sm_pytorch.specs import TrainingSpec

        known = [f.name for f in dataclasses.fields(TrainingSpec)] + list(RECIPE_KEYS)
        _refuse_unknown(data, known, "", "a PyTorch estimator or recipe argument")
        recipe = {k: data[k] for k in RECIPE_KEYS if k in data}
        estimator = {k: v for k, v in data.items() if k not in RECIPE_KEYS}
        return cls(**recipe, estimator=estimator)

    def estimator_args(self) -> dict[str, Any]:
        """The ``PyTorch`` arguments, ``compute`` and ``training_image`` folded in (lists made tuples)."""
        args = dict(self.estimator)
        for key, name in COMPUTE_FIELDS.items():
            if self.compute and key in self.compute:
                args[name] = self.compute[key]
        if self.training_image is not None:
            args["image_uri"] = self.training_image
        for name in ("dependencies", "subnets", "security_group_ids", "metric_definitions"):
            if isinstance(args.get(name), list):
                args[name] = tuple(args[name])
        return args


def _refuse_unknown(data: Mapping[str, Any], known: list[str], prefix: str, what: str) -> None:
    unknown = sorted(str(k) for k in set(data) - set(known))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, known, n=1)
        fix = f"did you mean {close[0]!r}?" if close else f"use one of {sorted(known)}"
        field = f"{prefix}.{key}" if prefix else key
        raise SpecError(field, _shown(key, data[key]), fix, problem=f"is not {what}")


def _shown(key: str, value: Any) -> Any:
    """``value`` as an error may show it: masked under a secret-looking key, redacted inside."""
    return MASK if is_sensitive(key.rsplit(".", 1)[-1]) else redact(value)


@dataclasses.dataclass(frozen=True)
class Launchers:
    """Where recipes and launchers come from: pinned local checkouts (operator, connection or spec file)."""

    recipes_dir: str | None = None  # sagemaker-hyperpod-recipes (or its recipes_collection[/recipes])
    adapter_dir: str | None = None  # sagemaker-training-adapter-for-nemo (GPU)
    neuron_dir: str | None = None  # neuronx-distributed-training (Trainium)

    @classmethod
    def first(cls, *sources: Mapping[str, Any] | None) -> Launchers:
        """Each setting from the first source that gives it (operator, then connection)."""
        values: dict[str, str | None] = {}
        for name in SETTINGS:
            values[name] = next((str(s[name]) for s in sources if s and s.get(name)), None)
        return cls(**values)


# ----------------------------------------------------------------------------------------- loading
def recipe_kind(training_recipe: str) -> str:
    """``"url"`` (has a scheme), ``"file"`` (ends with .yaml/.yml, as the SDK decides) or ``"name"``."""
    if "://" in training_recipe:
        return "url"
    if training_recipe.lower().endswith((".yaml", ".yml")):
        return "file"
    return "name"


def check_recipe_url(url: str) -> None:
    """Only ``https://`` URLs are fetched (a recipe may carry a token; it names what runs)."""
    if not url.lower().startswith("https://"):
        raise SpecError("training_recipe", url, "use an https:// URL, a local .yaml file or a recipe name "
                        "(plain http and other schemes are not fetched)", problem="is not an https URL")


def recipes_root(recipes_dir: str) -> Path:
    """The directory recipe names are relative to, given a checkout or its ``recipes_collection``."""
    root = Path(recipes_dir).expanduser()
    for candidate in (root / "recipes_collection" / "recipes", root / "recipes", root):
        if candidate.is_dir():
            return candidate
    raise SpecError("recipes_dir", recipes_dir, f"point it at a checkout of {RECIPES_REPO} (pin a tag, e.g. "
                    "v1.5.1)", problem="is not a directory")


def recipe_names(root: Path) -> list[str]:
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def _find_named(name: str, recipes_dir: str | None) -> Path:
    if not recipes_dir:
        raise SpecError("recipes_dir", None, f"set recipes_dir (operator argument, or sm_pytorch.recipes_dir "
                        f"on the connection) to a pinned checkout of {RECIPES_REPO} to use recipe {name!r} by "
                        "name, or give training_recipe as a .yaml file or an https:// URL",
                        problem="is required")
    root = recipes_root(recipes_dir)
    path = root / f"{name}.yaml"
    if ".." in Path(name).parts or Path(name).is_absolute():
        raise SpecError("training_recipe", name, "give the recipe's name relative to the recipes directory "
                        "(e.g. fine-tuning/llama/hf_llama3_8b_seq8k_gpu_lora)", problem="is not a recipe name")
    if path.is_file():
        return path
    names = recipe_names(root)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    by_base = [n for n in names if n.rsplit("/", 1)[-1] == name.rsplit("/", 1)[-1] and n not in close]
    nearest = close + by_base
    fix = (f"the nearest names are {nearest}" if nearest else f"{len(names)} recipes are there; list them with "
           f"`find {root} -name '*.yaml'`")
    raise SpecError("training_recipe", name, f"Recipe {name} not found in {root}: {fix}",
                    problem="is not a known recipe")


def load_recipe_text(
    training_recipe: str, recipes_dir: str | None, fetch: Callable[[str], bytes] | None = None
) -> tuple[str, str, str]:
    """``(recipe name, where it came from, YAML text)``; ``fetch`` reads an https URL (the caller's I/O)."""
    kind = recipe_kind(training_recipe)
    name = os.path.splitext(os.path.basename(training_recipe.rstrip("/")))[0]
    if kind == "url":
        check_recipe_url(training_recipe)
        if fetch is None:
            raise SpecError("training_recipe", training_recipe, "fetch it first (the operator does, at "
                            "execute time) or give a local file", problem="needs fetching")
        data = fetch(training_recipe)
        name = os.path.splitext(os.path.basename(training_recipe.split("?", 1)[0].rstrip("/")))[0]
        return name, training_recipe, _decode(data, training_recipe)
    path = Path(training_recipe).expanduser() if kind == "file" else _find_named(training_recipe, recipes_dir)
    if not path.is_file():
        raise SpecError("training_recipe", training_recipe, "check the path (relative paths are resolved "
                        f"against {os.getcwd()})", problem="does not exist")
    return name, str(path), _decode(path.read_bytes(), str(path))


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError("training_recipe", source, "give a YAML recipe (UTF-8 text)",
                        problem="is not text") from None


def parse_recipe(text: str, source: str) -> Any:
    """The recipe as an OmegaConf ``DictConfig``; not YAML, or YAML that is not a mapping, is a SpecError."""
    import yaml
    from omegaconf import OmegaConf

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError("training_recipe", source, f"fix the YAML{at}: {reason}",
                        problem="is not valid YAML") from None
    if not isinstance(data, dict):
        raise SpecError("training_recipe", source, f"a recipe is a YAML mapping (run:, trainer:, model: …); "
                        f"this file holds {type(data).__name__ if data is not None else 'nothing'}",
                        problem="is not a mapping")
    return OmegaConf.create(text)


# ----------------------------------------------------------------------------------------- overrides
def _dotted(path: str, key: Any) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))


def _all_keys(node: Any, path: str = "") -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            child = _dotted(path, key)
            out += [child, *_all_keys(value, child)]
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _all_keys(value, _dotted(path, i))
    return out


def _closest(missing: str, recipe: dict[str, Any], siblings: list[str]) -> list[str]:
    leaf = missing.rsplit(".", 1)[-1].split("[", 1)[0]
    near = [s for s in difflib.get_close_matches(leaf, siblings, n=3, cutoff=0.6)]
    parent = missing.rsplit(".", 1)[0] if "." in missing else ""
    out = [_dotted(parent, s) if parent else s for s in near]
    everywhere = _all_keys(recipe)
    by_leaf = {k.rsplit(".", 1)[-1]: k for k in everywhere}
    out += [k for k in difflib.get_close_matches(missing, everywhere, n=3, cutoff=0.75) if k not in out]
    for leaf_near in difflib.get_close_matches(leaf, list(by_leaf), n=2, cutoff=0.8):
        if by_leaf[leaf_near] not in out:
            out.append(by_leaf[leaf_near])
    return out[:4]


def _coerce(current: Any, value: Any) -> Any:
    """A string override of a number/boolean key as that type, when it reads as one (Jinja renders strings)."""
    if not isinstance(value, str) or isinstance(current, str) or current is None:
        return value
    text = value.strip()
    if isinstance(current, bool):
        return {"true": True, "false": False}.get(text.lower(), value)
    try:
        return int(text) if isinstance(current, int) else float(text) if isinstance(current, float) else value
    except ValueError:
        return value


def check_overrides(recipe: dict[str, Any], overrides: Mapping[str, Any], root: dict[str, Any] | None = None,
                    path: str = "") -> tuple[dict[str, Any], list[str]]:
    """Every override key must exist in ``recipe`` (nested mappings and mappings inside lists too).

    Returns the overrides (strings of number/boolean keys read as such) and the dotted keys they set.
    """
    root = recipe if root is None else root
    out: dict[str, Any] = {}
    touched: list[str] = []
    for key, value in overrides.items():
        where = _dotted(path, key)
        if not isinstance(key, str):
            raise SpecError(f"recipe_overrides.{where}", _shown(str(key), value), "use string keys, nested as "
                            "the recipe is", problem="has a key that is not a string")
        if key not in recipe:
            close = _closest(where, root, list(recipe))
            fix = (f"the closest existing keys are {close}" if close else
                   f"the keys there are {sorted(recipe)[:20]}")
            raise SpecError(f"recipe_overrides.{where}", _shown(key, value), f"{fix}; an override can only "
                            "set a key the recipe has (a misspelt key would be silently kept or dropped by the "
                            "SDK)", problem="is not a key of the recipe")
        current = recipe[key]
        if isinstance(value, Mapping) and isinstance(current, dict):
            out[key], sub = check_overrides(current, value, root, where)
            touched += sub or [where]
        elif isinstance(value, Mapping) and isinstance(current, list):
            raise SpecError(f"recipe_overrides.{where}", _shown(key, value), f"{where} is a list in the recipe: "
                            "give the whole list", problem="is not a mapping in the recipe")
        elif isinstance(value, (list, tuple)) and isinstance(current, list):
            items = []
            for i, item in enumerate(value):
                template = current[i] if i < len(current) else (current[0] if current else None)
                if isinstance(item, Mapping) and isinstance(template, dict):
                    checked, _ = check_overrides(template, item, root, _dotted(where, i))
                    items.append(checked)
                else:
                    items.append(item)
            out[key] = items
            touched.append(where)
        else:
            out[key] = _coerce(current, dict(value) if isinstance(value, Mapping) else value)
            touched.append(where)
    return out, touched


# ----------------------------------------------------------------------------------------- resolution
def _setup_resolvers() -> None:
    """``_setup_omegaconf_resolvers`` (process-wide, as in the SDK; registered once)."""
    from omegaconf import OmegaConf

    resolvers: dict[str, Callable[..., Any]] = {
        "multiply": lambda x, y: x * y,
        "divide_ceil": lambda x, y: math.ceil(x / y),
        "divide_floor": lambda x, y: math.floor(x / y),
        "add": lambda *numbers: sum(numbers),
    }
    with warnings.catch_warnings():  # omegaconf 2.4 deprecates the name the SDK (and 2.1-2.3) use
        warnings.simplefilter("ignore")
        for name, fn in resolvers.items():
            if not OmegaConf.has_resolver(name):
                OmegaConf.register_new_resolver(name, fn)


def _failures(config: Any, wrap: str | None) -> list[tuple[str, str, str]]:
    """``(dotted key, raw value, reason)`` for every interpolation that does not resolve under ``wrap``."""
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    root = DictConfig({wrap: config}) if wrap else config
    node = root[wrap] if wrap else root
    out: list[tuple[str, str, str]] = []

    def walk(container: Any, path: str) -> None:
        keys = container.keys() if isinstance(container, DictConfig) else range(len(container))
        for key in keys:
            where = _dotted(path, key)
            if OmegaConf.is_interpolation(container, key):
                try:
                    container[key]
                except OmegaConfBaseException as exc:
                    raw = str(container._get_node(key)._value())
                    out.append((where, raw, str(getattr(exc, "msg", exc)).splitlines()[0]))
                continue
            child = container._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)) and not child._is_none():
                walk(child, where)

    walk(node, "")
    return out


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(dotted.replace("[", ".[").split(".")):
        out = {part: out}
    return out


def resolve(config: Any) -> Any:
    """The SDK's three attempts (as is, under ``recipes``, under ``training``); a SpecError names what fails."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _setup_resolvers()
    for wrap in (None, "recipes", "training"):
        candidate = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
        root = DictConfig({wrap: candidate}) if wrap else candidate
        try:
            OmegaConf.resolve(root)
        except OmegaConfBaseException:
            continue
        return root[wrap] if wrap else root
    attempts = [_failures(OmegaConf.create(OmegaConf.to_container(config, resolve=False)), w)
                for w in (None, "recipes", "training")]
    failing = min((a for a in attempts if a), key=len)
    key, raw, reason = failing[0]
    example = "/opt/ml/model" if key.endswith("_dir") else "<value>"
    also = f" ({len(failing) - 1} more: {[k for k, _, _ in failing[1:4]]})" if len(failing) > 1 else ""
    raise SpecError(f"recipe.{key}", raw, f"{reason}; set it with recipe_overrides="
                    f"{_nested(key, example)!r}{also}", problem="cannot be resolved")


# ----------------------------------------------------------------------------------------- the plan
@dataclasses.dataclass(frozen=True)
class ResolvedRecipe:
    name: str  # the SDK's recipe_name: the basename without extension
    source: str  # the file or URL it came from
    config: dict[str, Any] = dataclasses.field(repr=False)  # resolved, plain (secrets included: it is sent)
    overridden: tuple[str, ...] = ()  # dotted keys recipe_overrides set
    yaml: str = dataclasses.field(default="", repr=False)  # the file uploaded (``OmegaConf.save`` output)

    @property
    def file_name(self) -> str:
        digest = hashlib.sha256(self.yaml.encode("utf-8")).hexdigest()[:8]
        return f"{self.name}_{digest}.yaml"

    def secrets(self) -> list[str]:
        """The values under secret-looking keys (``model.hf_access_token`` …), for Airflow's masker."""
        from airflow_sm_pytorch._redact import secrets

        return sorted(set(secrets(self.config)))

    def shown(self, *, mark: bool = False) -> str:
        """The resolved recipe as YAML, secrets masked; with ``mark``, overridden keys end ``# overridden``."""
        import yaml

        text = yaml.safe_dump(redact(self.config), sort_keys=False, default_flow_style=False)
        if not mark:
            return text
        return "\n".join(_mark(text.splitlines(), set(self.overridden)))


def _mark(lines: list[str], overridden: set[str]) -> list[str]:
    stack: list[tuple[int, str]] = []
    out = []
    for line in lines:
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if stripped.startswith("- ") or ":" not in stripped:
            out.append(line)
            continue
        key = stripped.split(":", 1)[0].strip("'\"")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        dotted = ".".join(k for _, k in stack)
        out.append(f"{line}  # overridden" if dotted in overridden else line)
    return out


@dataclasses.dataclass(frozen=True)
class RecipePlan:
    """Everything the SDK's recipe setup decides, before any file is staged."""

    recipe: ResolvedRecipe
    device: str  # "gpu" or "trainium"
    entry_point: str
    launcher_files: tuple[tuple[str, Path], ...]  # (arcname, path) to add; empty when the launcher is missing
    launcher_missing: str | None  # what to set when the launcher checkout is not there
    launcher_dir: str | None
    estimator: dict[str, Any]  # TrainingSpec arguments, source_dir left out
    source_dir: str | None
    requirements: str | None
    warnings: tuple[str, ...]

    @property
    def cpu_launcher(self) -> bool:
        """The launcher checkout says it runs on CPU (:data:`CPU_LAUNCHER_MARKER`): a local stand-in."""
        return bool(self.launcher_dir) and (Path(self.launcher_dir) / CPU_LAUNCHER_MARKER).is_file()

    def adds(self) -> list[str]:
        """What the upload adds to ``source_dir`` (listed even when the launcher checkout is missing)."""
        added = [self.recipe.file_name]
        if self.launcher_files:
            added += [a for a, p in self.launcher_files if p.is_file()]
        else:
            added.append(self.entry_point if self.device == "gpu" else
                         f"{self.entry_point} and the rest of {NEURON_REPO}'s examples/")
        if self.requirements:
            added.append("requirements.txt")
        return added

    def stage(self, directory: str | os.PathLike[str], *, placeholder: bool = False) -> Any:
        """Write the code directory (source_dir's files, the launcher, the recipe) and return the TrainingSpec.

        ``placeholder``: write an empty entry point when the launcher checkout is missing (for ``plan``).
        """
        from airflow_sm_pytorch.specs import TrainingSpec

        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        if self.source_dir:
            shutil.copytree(self.source_dir, target, dirs_exist_ok=True, symlinks=False)
        for arcname, path in self.launcher_files:
            dest = target / arcname
            if path.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
        if not self.launcher_files:
            if not placeholder:
                raise SpecError(*self._missing())
            (target / self.entry_point).touch()
        if self.requirements:
            shutil.copyfile(self.requirements, target / "requirements.txt")
        (target / self.recipe.file_name).write_text(self.recipe.yaml, encoding="utf-8")
        return TrainingSpec(**self.estimator, source_dir=str(target))

    def _missing(self) -> tuple[str, Any, str]:
        name = "adapter_dir" if self.device == "gpu" else "neuron_dir"
        return name, self.launcher_dir, self.launcher_missing or ""


def device_for(instance_type: Any) -> str:
    """``_device_validate_and_get_type``: ``p*``/``g*`` gpu, ``trn*`` trainium, anything else cpu."""
    if not isinstance(instance_type, str) or not instance_type:
        raise SpecError("instance_type", instance_type, "Must pass instance type to estimator when using "
                        "training recipes (e.g. ml.p5.48xlarge or ml.trn1.32xlarge).", problem="is required")
    family = instance_family(instance_type) if instance_type.startswith("ml.") else ""
    if family.startswith(("p", "g")):
        return "gpu"
    if family.startswith("trn"):
        return "trainium"
    raise SpecError("instance_type", instance_type, "Devices of type cpu are not supported with training "
                    "recipes: use a GPU (ml.p*/ml.g*) or Trainium (ml.trn*) instance type; the local runtime "
                    "runs those on this machine", problem="is not a GPU or Trainium type")


def recipe_device(config: Mapping[str, Any]) -> str | None:
    """What the recipe was written for, from what it declares: ``gpu``, ``trainium`` or None (unknown)."""
    run = config.get("run") if isinstance(config.get("run"), Mapping) else {}
    trainer = config.get("trainer") if isinstance(config.get("trainer"), Mapping) else {}
    model = config.get("model") if isinstance(config.get("model"), Mapping) else {}
    if str(run.get("model_type", "")).startswith("neuron") or "distributed_strategy" in config:
        return "trainium"
    model_type = str(model.get("model_type", ""))
    if trainer.get("accelerator") == "gpu" or any(model_type.startswith(k) for k in GPU_SCRIPTS):
        return "gpu"
    return None


def _check_standard(config: Mapping[str, Any]) -> None:
    run = config.get("run") if isinstance(config.get("run"), Mapping) else {}
    model_type = str(run.get("model_type", ""))
    special = ("amazon.nova" in model_type or "distillation_data" in (config.get("training_config") or {})
               or "evaluation" in config or model_type in ("llm_finetuning_aws", "verl"))
    if special:
        raise SpecError("training_recipe", model_type or "evaluation", "Nova, evaluation and LLMFT/VERL recipes "
                        "send their recipe as an input channel with image_uri; only the classic HF/Neuron recipes "
                        "(sagemaker-hyperpod-recipes v1.x) are supported", problem="is not supported")
    if not isinstance(config.get("trainer"), Mapping):
        raise SpecError("recipe.trainer", None, "Supplied recipe does not contain required field trainer.",
                        problem="is required")


def _gpu_script(config: Mapping[str, Any]) -> tuple[str, str]:
    model = config.get("model")
    if not isinstance(model, Mapping):
        raise SpecError("recipe.model", None, "Supplied recipe does not contain required field model.",
                        problem="is required")
    if "model_type" not in model:
        raise SpecError("recipe.model.model_type", None, "Supplied recipe does not contain required field "
                        "model_type.", problem="is required")
    model_type = str(model["model_type"])
    for prefix, script in GPU_SCRIPTS.items():
        if model_type.startswith(prefix):
            return script
    raise SpecError("recipe.model.model_type", model_type, f"Model type {model_type} not supported: the "
                    f"adapter has launchers for {list(GPU_SCRIPTS)}")


def _launcher(device: str, config: Mapping[str, Any], launchers: Launchers) -> tuple[
        str, tuple[tuple[str, Path], ...], str | None, str | None]:
    """(entry point, files to add, what is missing, the checkout used)."""
    if device == "gpu":
        folder, script = _gpu_script(config)
        root = launchers.adapter_dir
        wanted = f"examples/{folder}/{script}"
        repo, setting = ADAPTER_REPO, "adapter_dir"
    else:
        script, root, wanted, repo, setting = TRAINIUM_SCRIPT, launchers.neuron_dir, "examples/" + TRAINIUM_SCRIPT, \
            NEURON_REPO, "neuron_dir"
    how = (f"set {setting} (operator argument, or sm_pytorch.{setting} on the connection) to a pinned checkout "
           f"of {repo}")
    if not root:
        return script, (), f"{how}: the launcher {wanted} comes from there (never a git clone)", None
    path = Path(root).expanduser() / wanted
    if not path.is_file():
        return script, (), f"{how}: {path} does not exist", str(Path(root).expanduser())
    if device == "gpu":
        return script, ((script, path),), None, str(Path(root).expanduser())
    examples = path.parent
    files = tuple((p.relative_to(examples).as_posix(), p) for p in sorted(examples.rglob("*")))
    return script, files, None, str(Path(root).expanduser())


def _instance_count(spec_args: Mapping[str, Any], config: Mapping[str, Any], warnings: list[str]) -> Any:
    trainer = config["trainer"]
    explicit = spec_args.get("instance_count")
    if explicit is not None:
        nodes = trainer.get("num_nodes")
        if nodes is not None and nodes != explicit:
            warnings.append(f"Using instance_count argument to estimator to set number of nodes "
                            f"({explicit}). Ignoring trainer -> num_nodes in recipe ({nodes}); the uploaded "
                            f"recipe still says num_nodes={nodes}: override trainer.num_nodes too if the "
                            "launcher reads it")
        return explicit
    if trainer.get("num_nodes") is None:
        raise SpecError("instance_count", None, "Must set either instance_count argument for estimator or set "
                        "trainer -> num_nodes in recipe.", problem="is required")
    return trainer["num_nodes"]


def plan_recipe(
    spec: RecipeSpec, launchers: Launchers, *, region: str, fetch: Callable[[str], bytes] | None = None
) -> RecipePlan:
    """The SDK's recipe setup for ``spec``: resolved recipe, device, image, distribution, entry point, count."""
    from omegaconf import OmegaConf

    warnings: list[str] = []
    args = spec.estimator_args()
    for name in IGNORED:  # the SDK's words (hyperparameters' say "training recipe")
        if args.pop(name, None) is not None:
            with_what = "training recipe" if name == "hyperparameters" else "training_recipe"
            warnings.append(f"Argument {name} will be ignored with {with_what}.")
    device = device_for(args.get("instance_type"))
    name, source, text = load_recipe_text(spec.training_recipe, launchers.recipes_dir, fetch)
    config = parse_recipe(text, source)
    plain = OmegaConf.to_container(config, resolve=False)
    overrides, touched = check_overrides(plain, spec.recipe_overrides or {})
    merged = OmegaConf.merge(config, overrides)
    _check_standard(OmegaConf.to_container(merged, resolve=False))
    resolved = resolve(merged)
    values = OmegaConf.to_container(resolved, resolve=True)
    written = recipe_device(values)
    if written and written != device:
        want = "a GPU (ml.p*/ml.g*, e.g. ml.p5.48xlarge)" if written == "gpu" else \
            "a Trainium (ml.trn*, e.g. ml.trn1.32xlarge)"
        raise SpecError("instance_type", args.get("instance_type"), f"recipe {name} is a {written} recipe: use "
                        f"{want} instance type, or a {device} recipe", problem=f"is not a {written} type")
    if "container" in values and not values["container"]:
        warnings.append("Ignoring container from training_recipe. Use image_uri arg for estimator.")
    args["instance_count"] = _instance_count(args, values, warnings)
    if args.get("image_uri") is None:
        args["image_uri"] = recipe_gpu_image_uri(region=region) if device == "gpu" else \
            recipe_neuron_image_uri(region=region)
    entry, files, missing, launcher_dir = _launcher(device, values, launchers)
    recipe = ResolvedRecipe(name=name, source=source, config=values, overridden=tuple(touched),
                            yaml=OmegaConf.to_yaml(resolved))
    args.update(entry_point=entry, distribution=GPU_DISTRIBUTION if device == "gpu" else TRAINIUM_DISTRIBUTION,
                hyperparameters={"config-path": ".", "config-name": recipe.file_name})
    source_dir = args.pop("source_dir", None)
    if source_dir is not None and not os.path.isdir(source_dir):
        raise SpecError("source_dir", source_dir, "When using training_recipe, source_dir must be a local "
                        "directory.", problem="is not a directory")
    if spec.requirements is not None and not os.path.isfile(spec.requirements):
        raise SpecError("requirements", spec.requirements, f"Recipe requirements file {spec.requirements} not "
                        "found.", problem="does not exist")
    return RecipePlan(recipe=recipe, device=device, entry_point=entry, launcher_files=files,
                      launcher_missing=missing, launcher_dir=launcher_dir, estimator=args, source_dir=source_dir,
                      requirements=spec.requirements, warnings=tuple(warnings))
