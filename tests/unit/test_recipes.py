"""HyperPod recipes: resolution, overrides, devices and the request, as SageMaker SDK 2.257.6 builds them
(its requests were captured with the SDK, git clones replaced by these fixtures; contracts §5.1)."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.request
from pathlib import Path

import pytest

from airflow_sm_pytorch import recipe_fetch
from airflow_sm_pytorch.builders.recipes import Launchers, RecipeSpec, plan_recipe
from airflow_sm_pytorch.builders.training import Session, build_training_plan
from airflow_sm_pytorch.cli import main
from airflow_sm_pytorch.exceptions import SpecError
from airflow_sm_pytorch.packaging import sourcedir_bytes
from airflow_sm_pytorch.planning import build_recipe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "recipes"
RECIPES = str(FIXTURES)  # a checkout root: recipes_collection/recipes/<name>.yaml
ADAPTER, NEURONX = str(FIXTURES / "adapter"), str(FIXTURES / "neuronx")
GPU = "training/llama/hf_llama3_8b_seq8k_gpu_p5x16_pretrain"
LORA = "fine-tuning/llama/hf_llama3_8b_seq8k_gpu_lora"
TRN = "training/llama/hf_llama3_8b_seq8k_trn1x4_pretrain"
ROLE = "arn:aws:iam::111111111111:role/r"
RESULTS = {"run": {"results_dir": "/opt/ml/model"}}
TOKEN = "hf_TOKENabcdef0123456789"
LAUNCHERS = Launchers(recipes_dir=RECIPES, adapter_dir=ADAPTER, neuron_dir=NEURONX)


def plan(recipe=GPU, overrides=RESULTS, launchers=LAUNCHERS, **estimator):
    estimator = {"role": ROLE, "instance_type": "ml.p5.48xlarge", **estimator}
    spec = RecipeSpec.from_dict({"training_recipe": recipe, "recipe_overrides": overrides, **estimator})
    return plan_recipe(spec, launchers, region="us-west-2")


def request(recipe_plan, tmp_path):
    training = recipe_plan.stage(tmp_path / "staged", placeholder=True)
    return build_training_plan(training, Session("us-west-2", "bkt"), job_name="j1")


def error(fn, *args, **kwargs) -> SpecError:
    with pytest.raises(SpecError) as info:
        fn(*args, **kwargs)
    return info.value


# ------------------------------------------------------------------------ requests the SDK sends
def test_gpu_recipe_request_is_the_sdks(tmp_path):
    p = plan(GPU, {**RESULTS, "trainer": {"max_steps": 10}})
    built = request(p, tmp_path)
    req = built.request
    name = p.recipe.file_name
    assert name.startswith("hf_llama3_8b_seq8k_gpu_p5x16_pretrain_") and len(name) == len(
        "hf_llama3_8b_seq8k_gpu_p5x16_pretrain_") + 8 + len(".yaml")
    assert req["AlgorithmSpecification"] == {
        "TrainingInputMode": "File",
        "TrainingImage": "658645717510.dkr.ecr.us-west-2.amazonaws.com/smdistributed-modelparallel:"
                         "2.4.1-gpu-py311-cu121"}
    assert req["ResourceConfig"] == {"VolumeSizeInGB": 30, "InstanceCount": 16, "InstanceType": "ml.p5.48xlarge"}
    assert req["HyperParameters"] == {
        "config-path": '"."', "config-name": f'"{name}"',
        "sagemaker_submit_directory": '"s3://bkt/j1/source/sourcedir.tar.gz"',
        "sagemaker_program": '"llama_pretrain.py"', "sagemaker_container_log_level": "20",
        "sagemaker_job_name": '"j1"', "sagemaker_region": '"us-west-2"',
        "mp_parameters": '{"placement_strategy": "cluster"}',
        "sagemaker_distributed_dataparallel_enabled": "false",
        "sagemaker_instance_type": '"ml.p5.48xlarge"', "sagemaker_torch_distributed_enabled": "true"}
    assert "EnableSageMakerMetricsTimeSeries" not in req["AlgorithmSpecification"]
    assert req["ProfilerConfig"] == {"S3OutputPath": "s3://bkt/", "DisableProfiler": False}
    assert built.uploads[0].members == [name, "llama_pretrain.py"]
    recipe = (tmp_path / "staged" / name).read_text()
    assert "${" not in recipe and "results_dir: /opt/ml/model" in recipe and "max_steps: 10" in recipe
    assert "checkpoint_dir: None/checkpoints/" in recipe  # as the SDK resolves ${recipes.exp_manager.exp_dir}
    assert p.recipe.overridden == ("run.results_dir", "trainer.max_steps")


def test_trainium_recipe_request_is_the_sdks(tmp_path):
    p = plan(TRN, RESULTS, instance_type="ml.trn1.32xlarge")
    req = request(p, tmp_path).request
    assert req["AlgorithmSpecification"]["TrainingImage"] == (
        "763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-training-neuronx:2.1.2-neuronx-py310-sdk2.20.2-"
        "ubuntu20.04")
    assert req["ResourceConfig"]["InstanceCount"] == 4
    hps = req["HyperParameters"]
    assert hps["sagemaker_program"] == '"training_orchestrator.py"'
    assert list(hps)[-2:] == ["sagemaker_torch_distributed_enabled", "sagemaker_instance_type"]
    assert "mp_parameters" not in hps
    assert req["ProfilerConfig"] == {"DisableProfiler": True}
    # neuronx-distributed-training's examples/ is copied whole, as the SDK's copytree does
    staged = request(p, tmp_path / "again").uploads[0].members
    assert staged == ["conf", "conf/hf_llama3_8B_config.yaml", p.recipe.file_name, "training_orchestrator.py"]
    resolved = p.recipe.config["exp_manager"]["checkpoint_callback_params"]["model_parallel_size"]
    assert resolved == 32  # ${multiply:...} with the SDK's resolvers


def test_same_recipe_same_file_name_and_archive(tmp_path):
    a, b = plan(LORA), plan(LORA)
    assert a.recipe.file_name == b.recipe.file_name
    one = request(a, tmp_path / "a").uploads[0].files
    two = request(b, tmp_path / "b").uploads[0].files
    assert sourcedir_bytes(one)[1] == sourcedir_bytes(two)[1]
    assert plan(LORA, {**RESULTS, "trainer": {"max_steps": 3}}).recipe.file_name != a.recipe.file_name


def test_recipe_by_file_and_source_dir_and_requirements(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "helper.py").write_text("x = 1\n")
    reqs = tmp_path / "reqs.txt"
    reqs.write_text("pyyaml\n")
    path = FIXTURES / "recipes_collection" / "recipes" / f"{LORA}.yaml"
    p = plan(str(path), RESULTS, source_dir=str(src), requirements=str(reqs))
    members = request(p, tmp_path).uploads[0].members
    assert members == ["helper.py", p.recipe.file_name, "llama_pretrain.py", "requirements.txt"]
    assert sorted(p.adds()) == sorted([p.recipe.file_name, "llama_pretrain.py", "requirements.txt"])
    assert not (src / p.recipe.file_name).exists()  # the user's directory is left alone


def test_model_trainer_names_and_ignored_arguments(tmp_path):
    p = plan(LORA, RESULTS, instance_type=None, compute={"instance_type": "ml.g5.12xlarge", "instance_count": 2,
                                                          "volume_size_in_gb": 100},
             training_image="123.dkr.ecr.us-west-2.amazonaws.com/mine:1", entry_point="train.py",
             hyperparameters={"lr": 1}, distribution={"mpi": {"enabled": True}})
    req = request(p, tmp_path).request
    assert req["ResourceConfig"] == {"VolumeSizeInGB": 100, "InstanceCount": 2, "InstanceType": "ml.g5.12xlarge"}
    assert req["AlgorithmSpecification"]["TrainingImage"] == "123.dkr.ecr.us-west-2.amazonaws.com/mine:1"
    assert "lr" not in req["HyperParameters"]
    assert p.warnings[:3] == ("Argument entry_point will be ignored with training_recipe.",
                              "Argument hyperparameters will be ignored with training recipe.",
                              "Argument distribution will be ignored with training_recipe.")
    assert error(plan, LORA, RESULTS, compute={"instance_typ": "ml.g5.xlarge"}).field == "compute.instance_typ"


# ------------------------------------------------------------------------ num_nodes <-> instance_count
def test_instance_count_wins_over_num_nodes_with_a_warning(tmp_path):
    p = plan(GPU, RESULTS, instance_count=2)
    assert request(p, tmp_path).request["ResourceConfig"]["InstanceCount"] == 2
    assert len(p.warnings) == 1 and "Ignoring trainer -> num_nodes in recipe (16)" in p.warnings[0]
    assert "num_nodes: 16" in p.recipe.yaml  # the SDK leaves the recipe as it was
    assert plan(GPU, RESULTS, instance_count=16).warnings == ()
    assert plan(GPU, {**RESULTS, "trainer": {"num_nodes": 2}}).estimator["instance_count"] == 2


def test_no_instance_count_and_no_num_nodes(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("trainer: {devices: 8}\nmodel: {model_type: llama_v3}\n")
    e = error(plan, str(recipe), {})
    assert e.field == "instance_count" and "trainer -> num_nodes" in e.fix


# ------------------------------------------------------------------------ bad input
def test_unknown_recipe_name_lists_the_nearest():
    e = error(plan, "training/llama/hf_llama3_8b_seq8k_gpu_p5x16_pretrian", RESULTS)
    assert e.field == "training_recipe" and e.problem == "is not a known recipe"
    assert "training/llama/hf_llama3_8b_seq8k_gpu_p5x16_pretrain" in e.fix
    e = error(plan, "hf_llama3_8b_seq8k_gpu_lora", RESULTS)  # a basename alone
    assert "fine-tuning/llama/hf_llama3_8b_seq8k_gpu_lora" in e.fix
    e = error(plan, GPU, RESULTS, launchers=Launchers())
    assert e.field == "recipes_dir" and "never" not in e.fix and "pinned checkout" in e.fix


def test_recipe_file_that_is_not_yaml_or_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: {name: x\ntrainer: [\n")
    e = error(plan, str(bad), {})
    assert e.problem == "is not valid YAML" and "line" in e.fix
    listed = tmp_path / "list.yaml"
    listed.write_text("- trainer\n- model\n")
    e = error(plan, str(listed), {})
    assert e.problem == "is not a mapping" and "list" in e.fix
    e = error(plan, str(tmp_path / "missing.yaml"), {})
    assert e.problem == "does not exist"


def test_override_of_a_missing_key_names_it_and_the_closest():
    e = error(plan, LORA, {**RESULTS, "trainer": {"max_stpes": 10}})
    assert e.field == "recipe_overrides.trainer.max_stpes" and "trainer.max_steps" in e.fix
    e = error(plan, LORA, {**RESULTS, "model": {"peft": {"rnak": 8}}})
    assert e.field == "recipe_overrides.model.peft.rnak" and "'model.peft.rank'" in e.fix
    e = error(plan, LORA, {"trainr": {"num_nodes": 2}})
    assert e.field == "recipe_overrides.trainr" and "'trainer'" in e.fix
    e = error(plan, LORA, {"model": {"hf_acess_token": TOKEN}})  # a misspelt secret is not printed
    assert "model.hf_access_token" in e.fix and TOKEN not in str(e) and e.value == "***"


def test_override_of_a_missing_key_in_a_list(tmp_path):
    recipe = tmp_path / "listy.yaml"
    recipe.write_text("run: {name: x, results_dir: /tmp/r}\ntrainer: {num_nodes: 1}\n"
                      "model: {model_type: llama_v3, optim: {betas: [0.9, 0.95]}}\n"
                      "datasets:\n- {name: a, path: /data/a}\n- {name: b, path: /data/b}\n")
    ok = plan(str(recipe), {"datasets": [{"name": "c"}, {"path": "/d"}]})
    assert ok.recipe.config["datasets"] == [{"name": "c"}, {"path": "/d"}]  # a list replaces the list
    e = error(plan, str(recipe), {"datasets": [{"name": "c"}, {"pth": "/d"}]})
    assert e.field == "recipe_overrides.datasets[1].pth" and "datasets[1].path" in e.fix
    e = error(plan, str(recipe), {"model": {"optim": {"betas": {"0": 0.8}}}})
    assert e.field == "recipe_overrides.model.optim.betas" and "give the whole list" in e.fix


def test_unresolved_interpolation_names_the_override_that_fixes_it():
    e = error(plan, GPU, {})
    assert e.field == "recipe.run.results_dir" and e.value == "${base_results_dir}/${.name}"
    assert "base_results_dir" in e.fix and "recipe_overrides={'run': {'results_dir': '/opt/ml/model'}}" in e.fix
    assert plan(GPU, RESULTS).recipe.config["run"]["results_dir"] == "/opt/ml/model"


def test_gpu_recipe_on_trainium_and_the_reverse():
    e = error(plan, GPU, RESULTS, instance_type="ml.trn1.32xlarge")
    assert e.field == "instance_type" and "is a gpu recipe" in e.fix and "ml.p5.48xlarge" in e.fix
    e = error(plan, TRN, RESULTS, instance_type="ml.p4d.24xlarge")
    assert e.field == "instance_type" and "is a trainium recipe" in e.fix and "ml.trn1.32xlarge" in e.fix
    e = error(plan, GPU, RESULTS, instance_type="ml.m5.xlarge")
    assert "Devices of type cpu are not supported" in e.fix
    assert error(plan, GPU, RESULTS, instance_type=None).problem == "is required"


def test_url_must_be_https_and_small(monkeypatch):
    e = error(plan, "http://example.com/recipe.yaml", RESULTS)
    assert e.problem == "is not an https URL"
    e = error(recipe_fetch.fetch_https, "ftp://example.com/r.yaml")
    assert e.problem == "is not an https URL"

    class Response(io.BytesIO):
        def __init__(self, body, length=None):
            super().__init__(body)
            self.headers = {"Content-Length": str(length)} if length is not None else {}

    bodies = {"big-declared": Response(b"x", length=10 ** 9), "big-streamed": Response(b"a: 1\n" * 1000),
              "ok": Response(b"trainer: {num_nodes: 1}\n")}

    class Opener:
        def open(self, req, timeout):
            return bodies[req.full_url.rsplit("/", 1)[-1]]

    monkeypatch.setattr(urllib.request, "build_opener", lambda *handlers: Opener())
    assert error(recipe_fetch.fetch_https, "https://h/big-declared").problem == "is too large"
    assert error(recipe_fetch.fetch_https, "https://h/big-streamed", max_bytes=100).problem == "is too large"
    assert recipe_fetch.fetch_https("https://h/ok") == b"trainer: {num_nodes: 1}\n"
    redirect = recipe_fetch._HttpsOnlyRedirects()
    req = urllib.request.Request("https://h/ok")
    assert error(redirect.redirect_request, req, None, 302, "Found", {}, "http://h/ok").problem == (
        "redirects off https")


def test_url_recipe_is_fetched_by_the_caller():
    text = (FIXTURES / "recipes_collection" / "recipes" / f"{LORA}.yaml").read_bytes()
    spec = RecipeSpec.from_dict({"training_recipe": "https://example.com/r/my_lora.yaml",
                                 "recipe_overrides": RESULTS, "role": ROLE, "instance_type": "ml.p4d.24xlarge"})
    p = plan_recipe(spec, Launchers(adapter_dir=ADAPTER), region="us-east-1", fetch=lambda url: text)
    assert p.recipe.name == "my_lora" and p.recipe.source == "https://example.com/r/my_lora.yaml"
    assert error(plan_recipe, spec, Launchers(), region="us-east-1").problem == "needs fetching"


def test_string_overrides_take_the_recipes_types():
    p = plan(LORA, {**RESULTS, "trainer": {"max_steps": "12"}, "model": {"fp8": "true", "optim": {"lr": "0.5"}}})
    assert p.recipe.config["trainer"]["max_steps"] == 12
    assert p.recipe.config["model"]["fp8"] is True and p.recipe.config["model"]["optim"]["lr"] == 0.5


def test_launcher_missing_still_plans_and_says_what_is_added(tmp_path):
    p = plan(LORA, RESULTS, launchers=Launchers(recipes_dir=RECIPES))
    assert p.launcher_files == () and "adapter_dir" in p.launcher_missing
    assert p.adds() == [p.recipe.file_name, "llama_pretrain.py"]
    assert error(p.stage, tmp_path / "x").field == "adapter_dir"  # a real stage refuses
    assert request(p, tmp_path).uploads[0].members == [p.recipe.file_name, "llama_pretrain.py"]
    trn = plan(TRN, RESULTS, instance_type="ml.trn1.32xlarge", launchers=Launchers(recipes_dir=RECIPES))
    assert "neuron_dir" in trn.launcher_missing and "examples/" in trn.adds()[1]


# ------------------------------------------------------------------------ secrets
def test_token_is_sent_in_the_recipe_but_masked_when_shown(tmp_path):
    p = plan(LORA, {**RESULTS, "model": {"hf_access_token": TOKEN}})
    assert TOKEN in p.recipe.yaml and p.recipe.secrets() == [TOKEN] and TOKEN not in repr(p)
    built = request(p, tmp_path)
    data, _ = sourcedir_bytes(built.uploads[0].files)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        sent = tar.extractfile(p.recipe.file_name).read().decode()
    assert f"hf_access_token: {TOKEN}" in sent
    shown = p.recipe.shown(mark=True)
    assert TOKEN not in shown and "hf_access_token: '***'  # overridden" in shown


def test_plan_recipe_cli(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"training_recipe": LORA, "recipe_overrides": {
        **RESULTS, "model": {"hf_access_token": TOKEN}, "trainer": {"max_steps": 5}},
        "role": ROLE, "instance_type": "ml.p4d.24xlarge", "instance_count": 2, "region": "us-west-2",
        "default_bucket": "bkt", "recipes_dir": RECIPES, "adapter_dir": ADAPTER}))
    assert main(["plan", "recipe", "--spec", str(spec), "--show-recipe"]) == 0
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    body, shown = out.split("# resolved recipe ", 1)
    printed = json.loads(body)
    assert printed["CreateTrainingJob"]["ResourceConfig"]["InstanceCount"] == 2
    assert printed["CreateTrainingJob"]["TrainingJobName"].startswith("smdistributed-modelparallel-")
    assert printed["recipe"]["launcher"] == {"entry_point": "llama_pretrain.py", "from": ADAPTER,
                                             "adds": [printed["recipe"]["file"], "llama_pretrain.py"]}
    assert printed["uploads"][0]["members"] == [printed["recipe"]["file"], "llama_pretrain.py"]
    assert "max_steps: 5  # overridden" in shown and "warning: Using instance_count" in err

    spec.write_text(json.dumps({"training_recipe": LORA, "recipe_overrides": {"trainer": {"max_stpes": 5}},
                                "role": ROLE, "instance_type": "ml.p4d.24xlarge", "region": "us-west-2",
                                "default_bucket": "bkt", "recipes_dir": RECIPES}))
    assert main(["plan", "recipe", "--spec", str(spec)]) == 2
    assert "error: recipe_overrides.trainer.max_stpes=5 is not a key of the recipe" in capsys.readouterr().err


def test_plan_recipe_without_launcher_names_what_is_missing():
    view = build_recipe({"training_recipe": TRN, "recipe_overrides": RESULTS, "role": ROLE,
                         "instance_type": "ml.trn1.32xlarge", "region": "us-east-1", "default_bucket": "bkt",
                         "recipes_dir": RECIPES})
    out = view.to_json()
    assert out["recipe"]["launcher"]["from"] is None and "neuron_dir" in out["recipe"]["launcher"]["missing"]
    assert out["CreateTrainingJob"]["HyperParameters"]["sagemaker_program"] == '"training_orchestrator.py"'


def test_spec_refuses_unknown_keys_by_name():
    e = error(RecipeSpec.from_dict, {"training_recipe": LORA, "recipe_overides": {}})
    assert e.field == "recipe_overides" and "'recipe_overrides'" in e.fix
    assert error(RecipeSpec.from_dict, {"training_recipe": ""}).problem == "is required"
    e = error(RecipeSpec.from_dict, {"training_recipe": LORA, "recipe_overrides": ["a"]})
    assert e.problem == "has the wrong type"
