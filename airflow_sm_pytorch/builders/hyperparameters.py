"""Hyperparameters as the SageMaker SDK (v2.257.6) sends them: every value JSON-encoded.

``EstimatorBase._json_encode_hyperparameters`` turns ``{k: v}`` into ``{str(k): json.dumps(v)}``, so
numbers and booleans arrive bare (``"10"``, ``"true"``), strings arrive quoted (``"\\"resnet\\""``) and lists
or dicts as JSON text. ``Framework._script_mode_hyperparam_update`` then adds five reserved
``sagemaker_*`` keys, encoded the same way (``sagemaker_container_log_level`` is an int, so unquoted).

The service allows at most 100 hyperparameters, keys of at most 256 characters and values of at most
2,500; botocore does not check those limits client-side, so we do, counting the keys the SDK adds.

>>> encode_hyperparameters({"epochs": 10, "model_name": "resnet", "flag": True, "lst": [1, 2]})
{'epochs': '10', 'model_name': '"resnet"', 'flag': 'true', 'lst': '[1, 2]'}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow_sm_pytorch.exceptions import SpecError

# Script-mode keys (src/sagemaker/model.py constants), in the order the SDK adds them.
DIR_PARAM_NAME = "sagemaker_submit_directory"
SCRIPT_PARAM_NAME = "sagemaker_program"
CONTAINER_LOG_LEVEL_PARAM_NAME = "sagemaker_container_log_level"
JOB_NAME_PARAM_NAME = "sagemaker_job_name"
SAGEMAKER_REGION_PARAM_NAME = "sagemaker_region"
SCRIPT_MODE_KEYS = (
    DIR_PARAM_NAME,
    SCRIPT_PARAM_NAME,
    CONTAINER_LOG_LEVEL_PARAM_NAME,
    JOB_NAME_PARAM_NAME,
    SAGEMAKER_REGION_PARAM_NAME,
)

# Keys the distribution options add (``Framework``/``PyTorch`` class constants, contracts/sdk-requests.md
# §2.1); ``builders.distribution`` sets them and the local runtime reads them.
PYTORCH_DDP_ENABLED = "sagemaker_pytorch_ddp_enabled"  # legacy: SDK >= 2.222 sends smdistributed keys
TORCH_DISTRIBUTED_ENABLED = "sagemaker_torch_distributed_enabled"
INSTANCE_TYPE = "sagemaker_instance_type"
MPI_ENABLED = "sagemaker_mpi_enabled"
MPI_PROCESSES_PER_HOST = "sagemaker_mpi_num_of_processes_per_host"
MPI_CUSTOM_OPTIONS = "sagemaker_mpi_custom_mpi_options"
SMDDP_ENABLED = "sagemaker_distributed_dataparallel_enabled"
SMDDP_CUSTOM_OPTIONS = "sagemaker_distributed_dataparallel_custom_mpi_options"
PARAMETER_SERVER_ENABLED = "sagemaker_parameter_server_enabled"
PYTORCH_XLA_ENABLED = "sagemaker_pytorch_xla_multi_worker_enabled"
MWMS_ENABLED = "sagemaker_multi_worker_mirrored_strategy_enabled"
INSTANCE_GROUPS = "sagemaker_distribution_instance_groups"
MP_PARAMETERS = "mp_parameters"
DISTRIBUTION_KEYS = (
    PYTORCH_DDP_ENABLED, TORCH_DISTRIBUTED_ENABLED, INSTANCE_TYPE, MPI_ENABLED, MPI_PROCESSES_PER_HOST,
    MPI_CUSTOM_OPTIONS, SMDDP_ENABLED, SMDDP_CUSTOM_OPTIONS, PARAMETER_SERVER_ENABLED, PYTORCH_XLA_ENABLED,
    MWMS_ENABLED, INSTANCE_GROUPS, MP_PARAMETERS,
)

#: Every key the SDK sets itself; users may not set these, nor any other ``sagemaker_*`` key.
RESERVED_KEYS = frozenset(SCRIPT_MODE_KEYS + DISTRIBUTION_KEYS)
RESERVED_PREFIX = "sagemaker_"
_OTHER_RESERVED = sorted(k for k in RESERVED_KEYS if not k.startswith(RESERVED_PREFIX))

MAX_HYPERPARAMETERS = 100
MAX_KEY_LENGTH = 256
MAX_VALUE_LENGTH = 2500


def _field(key: str) -> str:
    return f"hyperparameters[{key}]"


def encode_hyperparameters(hps: Mapping[Any, Any] | None) -> dict[str, str]:
    """``{str(k): json.dumps(v)}``; a value JSON cannot encode raises :class:`SpecError`."""
    encoded: dict[str, str] = {}
    for key, value in (hps or {}).items():
        try:
            encoded[str(key)] = json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise SpecError(
                _field(str(key)),
                value,
                f"use a JSON-serialisable value (str, int, float, bool, None, list, dict); "
                f"SageMaker receives json.dumps(value) ({exc})",
                problem="cannot be JSON-encoded",
            ) from None
    return encoded


def script_mode_hyperparameters(
    *,
    program: str,
    submit_directory: str,
    job_name: str,
    region: str,
    container_log_level: int = 20,
) -> dict[str, str]:
    """The five keys ``Framework._script_mode_hyperparam_update`` adds, encoded, in the SDK's order."""
    return encode_hyperparameters(
        {
            DIR_PARAM_NAME: submit_directory,
            SCRIPT_PARAM_NAME: program,
            CONTAINER_LOG_LEVEL_PARAM_NAME: container_log_level,
            JOB_NAME_PARAM_NAME: job_name,
            SAGEMAKER_REGION_PARAM_NAME: region,
        }
    )


def check_user_hyperparameters(
    hps: Mapping[Any, Any] | None, *, added_by_sdk: int = len(SCRIPT_MODE_KEYS)
) -> dict[str, str]:
    """Encode the user's hyperparameters and refuse reserved keys and values over the API limits.

    ``added_by_sdk`` is how many keys the SDK will add (the five script-mode keys by default), so
    that the 100-entry limit is checked against what is really sent.
    """
    if hps is not None and not isinstance(hps, Mapping):
        raise SpecError("hyperparameters", hps, "use a mapping of name to value, e.g. {'epochs': 10}")
    encoded = encode_hyperparameters(hps)
    for key in encoded:
        if key in RESERVED_KEYS or key.startswith(RESERVED_PREFIX):
            raise SpecError(
                _field(key),
                (hps or {}).get(key, encoded[key]),
                f"rename it: the PyTorch estimator itself sets {', '.join(_OTHER_RESERVED)} and keys "
                f"starting with {RESERVED_PREFIX!r} (script mode, distribution)",
                problem="is reserved",
            )
    check_limits(encoded, added_by_sdk=added_by_sdk)
    return encoded


def check_limits(encoded: Mapping[str, str], *, added_by_sdk: int = 0) -> None:
    """Refuse more than 100 entries, keys over 256 characters and values over 2,500."""
    total = len(encoded) + added_by_sdk
    if total > MAX_HYPERPARAMETERS:
        extra = f" ({len(encoded)} given + {added_by_sdk} the SDK adds)" if added_by_sdk else ""
        raise SpecError(
            "hyperparameters",
            dict(encoded),
            f"SageMaker accepts at most {MAX_HYPERPARAMETERS} hyperparameters in total and this has "
            f"{total}{extra}; pass bulky settings as one JSON value or a config file in source_dir instead",
            problem="has too many entries",
        )
    for key, value in encoded.items():
        if len(key) > MAX_KEY_LENGTH:
            raise SpecError(_field(key), key, f"use a key of at most {MAX_KEY_LENGTH} characters "
                            f"(it has {len(key)})", problem="has a key that is too long")
        if len(value) > MAX_VALUE_LENGTH:
            raise SpecError(
                _field(key),
                value,
                f"its JSON encoding has {len(value)} characters and SageMaker accepts at most "
                f"{MAX_VALUE_LENGTH}; put large values in a file in source_dir or an input channel",
                problem="is too long",
            )
