"""Property tests of the spec -> request path: random specs, valid and not, never slip through.

For any spec, ``TrainingSpec.from_dict`` + ``build_training_plan`` either refuse it with one
:class:`SpecError` paragraph that names an argument the user gave, or produce a request that passes our
validator and botocore's own ``ParamValidator``. The strategies aim at the edges: limits (50 tags, 100
hyperparameters, 28 days, 30 retries), reserved names (``aws:`` tags, ``sagemaker_*`` keys), floats such
as 1e-5, entry points that leave the code dir, bad instance types and input modes, and ``distribution``
values (strategies the SDK builds, and bad ones: torchrun on CPU, pytorchddp on 2.3, two strategies).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_sm_pytorch.builders.training import Session, build_training_plan
from airflow_sm_pytorch.builders.validation import validate_request
from airflow_sm_pytorch.exceptions import SpecError
from airflow_sm_pytorch.planning import spec_loader
from airflow_sm_pytorch.specs import TrainingSpec

SRC = str(Path(__file__).resolve().parents[1] / "fixtures" / "builders" / "src")
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
AWS = Session(region="us-west-2", default_bucket="bucket-1")
LOCAL = Session(region="us-east-1", default_bucket="file:///tmp/sm-pytorch-store", local=True)
#: What an error may name: an estimator argument (maybe indexed: ``inputs[train]``) or a session key.
USER_FIELDS = {f.name for f in dataclasses.fields(TrainingSpec)} | {"region", "default_bucket"}
PROPERTY = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

floats = st.one_of(st.sampled_from([1e-5, 1e-05, 0.01, 1e300, -0.0, 5e-324]),
                   st.floats(allow_nan=False, allow_infinity=False))
values = st.one_of(floats, st.integers(-10**6, 10**6), st.booleans(), st.none(), st.text(max_size=20),
                   st.lists(st.integers(0, 9), max_size=3))
#: Characters SageMaker's tag pattern allows (letters, spaces, digits and _.:/=+-@).
TAG_TEXT = st.text(alphabet=st.sampled_from("abcXYZ019 _.:/=+-@éü"), max_size=12)
NAME = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,30}[a-zA-Z0-9])?", fullmatch=True)
valid_channel = st.fixed_dictionaries(
    {"s3_data": st.sampled_from(["s3://data-1/train", "s3://data-1/x/y.csv"])},
    optional={"input_mode": st.sampled_from(["File", "Pipe", "FastFile"]),
              "content_type": st.sampled_from(["text/csv", "application/x-image"]),
              "distribution": st.sampled_from(["FullyReplicated", "ShardedByS3Key"])},
)
bad_channel = st.fixed_dictionaries(
    {"s3_data": st.sampled_from(["s3://", "gs://x/y", "s3://data-1/" + "k" * 1100, "s3://data-1/x"])},
    optional={"input_mode": st.just("Stream"), "content_type": st.just("c" * 257),
              "distribution": st.just("Sharded")},
)

#: Each argument as (valid values, invalid or edge values); a spec takes a few from the second column.
ARGUMENTS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "role": (st.from_regex(r"arn:aws:iam::\d{12}:role/[a-zA-Z0-9_+=,.@-]{1,30}", fullmatch=True),
             st.sampled_from([ROLE + "x" * 2048, "arn:aws:iam::1:role/r", "SageMakerRole", "arn:aws"])),
    "entry_point": (st.sampled_from(["train.py", "utils/helpers.py", "utils/../train.py", "./train.py"]),
                    st.sampled_from(["../outside/evil.py", "/etc/passwd", "missing.py", "utils", "..",
                                     "utils/../../x.py"])),
    "source_dir": (st.sampled_from([SRC, "s3://code-1/sourcedir.tar.gz"]),
                   st.sampled_from([None, "s3://ab", "/nonexistent/dir"])),
    "instance_type": (st.sampled_from(["ml.m5.xlarge", "ml.p3.2xlarge", "ml.c5.xlarge", "ml.g5.xlarge"]),
                      st.sampled_from(["ml.m5.xlarg", "local", "local_gpu", "gpu", "m5.xlarge"])),
    "instance_count": (st.integers(1, 4), st.sampled_from([None, 0, -1])),
    "input_mode": (st.sampled_from(["File", "Pipe", "FastFile"]), st.sampled_from(["Stream", "file"])),
    "max_run": (st.one_of(st.sampled_from([1, 86400, 2_419_200]), st.integers(1, 2_419_200)),
                st.sampled_from([0, -5, 2_419_201, 30 * 24 * 3600])),
    "hyperparameters": (
        st.one_of(st.dictionaries(st.text(alphabet="abcXY019-_.", min_size=1, max_size=20), values,
                                  max_size=8),
                  st.integers(0, 95).map(lambda n: {f"k{i}": i for i in range(n)})),
        st.one_of(st.integers(96, 101).map(lambda n: {f"k{i}": i for i in range(n)}),
                  st.sampled_from([{"sagemaker_program": "x"}, {"sagemaker_x": 1}, {"mp_parameters": {}},
                                   {"k" * 257: 1}, {"v": "x" * 2499}]))),
    "tags": (st.one_of(st.dictionaries(TAG_TEXT.filter(lambda k: k and not k.lower().startswith("aws:")),
                                       TAG_TEXT, max_size=4),
                       st.integers(0, 50).map(lambda n: {f"k{i}": "v" for i in range(n)})),
             st.one_of(st.sampled_from([{"aws:owner": "x"}, {"AWS:x": ""}, {"k" * 129: "v"}, {"a;b": "v"},
                                        {"": "v"}, {"k": "v" * 257}, "team=ml"]),
                       st.integers(51, 53).map(lambda n: {f"k{i}": "v" for i in range(n)}))),
    "inputs": (st.one_of(st.just("s3://data-1/all"), valid_channel,
                         st.dictionaries(st.text(alphabet="abc_-.", min_size=1, max_size=10), valid_channel,
                                         max_size=3)),
               st.one_of(bad_channel, st.dictionaries(st.text(alphabet="abc_-.! ", max_size=66), bad_channel,
                                                      min_size=1, max_size=2))),
    "metric_definitions": (st.just([{"Name": "loss", "Regex": "loss=([0-9.]+)"}]),
                           st.lists(st.fixed_dictionaries({
                               "Name": st.sampled_from(["loss", ""]),
                               "Regex": st.sampled_from(["acc=(\\d+", "([", "x{2,1}", "r" * 501])}),
                               min_size=1, max_size=2)),
    "job_name": (NAME, st.sampled_from(["has_underscore", "x" * 64, "-lead", ""])),
    "base_job_name": (NAME, st.sampled_from(["my_base", "dots.here"])),
    "image_uri": (st.just("123456789012.dkr.ecr.us-west-2.amazonaws.com/repo:1"),
                  st.sampled_from(["123456789012.dkr.ecr.us-west-2.amazonaws.com/my_repo:1", "i" * 256])),
    "max_retry_attempts": (st.integers(1, 30), st.sampled_from([0, 31, -1])),
    "volume_size": (st.integers(1, 100), st.sampled_from([-1])),
    "keep_alive_period_in_seconds": (st.integers(0, 21_600), st.sampled_from([21_601, -1])),
    "environment": (st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,5}", fullmatch=True),
                                    st.text(max_size=5), max_size=3),
                    st.sampled_from([{"1A": "x"}, {"A-B": "x"}, {"A": 1}])),
    # Valid on every instance type above (torchrun is not: CPU types refuse it), and edges.
    "distribution": (st.sampled_from([{}, {"mpi": {"enabled": True}}, {"parameter_server": {"enabled": True}},
                                      {"mpi": {"enabled": True, "processes_per_host": 4,
                                               "custom_mpi_options": "-v"}},
                                      {"torch_distributed": {"enabled": False}}, {"instance_groups": []}]),
                     st.sampled_from([{"torch_distributed": {"enabled": True}},
                                      {"pytorchddp": {"enabled": True}},
                                      {"mpi": {"enabled": True, "processes_per_host": 0}},
                                      {"mpi": {"processes_per_host": "8"}}, {"torchrun": {"enabled": True}},
                                      {"mpi": {"enabled": True}, "torch_distributed": {"enabled": True}},
                                      {"smdistributed": {"modelparallel": {"enabled": True}}, "mpi": {}},
                                      {"mpi": {"enabled": True, "custom_mpi_options": "o" * 2499}}])),
    "output_path": (st.sampled_from(["s3://out-1/prefix", "s3://out-1"]),
                    st.sampled_from(["s3://Out_1/x", "gs://x", "file:///tmp/out"])),
}
REQUIRED = ("role", "entry_point", "source_dir", "instance_type", "instance_count")


@st.composite
def specs(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """A spec and the arguments given an invalid or edge value (none, one or a few)."""
    bad = draw(st.sets(st.sampled_from(sorted(ARGUMENTS)), max_size=2))
    spec: dict[str, Any] = {"framework_version": "2.3.0", "py_version": "py311"}
    for name, (good, wrong) in ARGUMENTS.items():
        if name in bad or name in REQUIRED or draw(st.booleans()):
            spec[name] = draw(wrong if name in bad else good)
    if spec.get("instance_count") is None and "instance_count" in bad and draw(st.booleans()):
        del spec["instance_count"]  # omitted, not None
    return spec, bad


def _plan(spec: dict[str, Any], session: Session) -> dict[str, Any]:
    built = TrainingSpec.from_dict(spec)
    job_name = built.job_name or f"{(built.base_job_name or 'pytorch-training')[:39]}-2024-01-02-03-04-05-678"
    return build_training_plan(built, session, job_name=job_name).request


@PROPERTY
@given(drawn=specs(), local=st.booleans())
def test_spec_to_request_refuses_clearly_or_sends_a_valid_request(
    drawn: tuple[dict[str, Any], set[str]], local: bool
) -> None:
    from botocore.validate import validate_parameters

    from airflow_sm_pytorch.builders.validation import input_shape

    spec, bad = drawn
    try:
        request = _plan(spec, LOCAL if local else AWS)
    except SpecError as exc:
        text = str(exc)
        assert not text.count("\n"), text  # one paragraph
        assert text.startswith(f"{exc.field}=") and exc.fix, text
        root = exc.field.split("[", 1)[0].split(".", 1)[0]
        assert root in USER_FIELDS, f"names a request path, not the user's argument: {text}"
        assert bad, f"a valid spec was refused: {text}"
        return
    validate_request("CreateTrainingJob", request, allow_file_uris=local)
    validate_parameters(request, input_shape("CreateTrainingJob"))
    assert not any(t["Key"].lower().startswith("aws:") for t in request.get("Tags", []))
    assert request["StoppingCondition"]["MaxRuntimeInSeconds"] <= 2_419_200
    program = json.loads(request["HyperParameters"]["sagemaker_program"])
    assert not program.startswith("/") and not program.startswith("..")


@PROPERTY
@given(value=st.floats(allow_nan=False))
def test_yaml_and_json_numbers_read_as_python_writes_them(value: float) -> None:
    text = repr(value).replace("inf", ".inf")
    loaded = yaml.load(f"lr: {text}", Loader=spec_loader())["lr"]
    assert isinstance(loaded, float) and (loaded == value or math.isnan(value))


@pytest.mark.parametrize("text, expected", [("1e-5", 1e-5), ("1e-05", 1e-5), ("-2E+3", -2000.0), ("1.", 1.0),
                                            ("7", 7), ("0o17", 15), ("0x1f", 31)])
def test_yaml_numbers_by_the_1_2_rules(text: str, expected: float) -> None:
    loaded = yaml.load(f"v: {text}", Loader=spec_loader())["v"]
    assert loaded == expected and type(loaded) is type(expected)
