"""Spot interruptions rehearsed on the local runtime (stdlib only: the server and the supervisor import it).

A managed spot training job (``EnableManagedSpotTraining: true``) can be interrupted on purpose, so that a
DAG and a training script can be tried against what SageMaker does when it reclaims spot capacity. What
asks for it, most specific first:

* the job's tag ``airflow-sm-pytorch:spot-interruptions`` (request ``Tags``; on AWS it is an ordinary tag
  and does nothing), e.g. ``PyTorchTrainOperator(..., use_spot_instances=True, max_wait=...,
  tags={"airflow-sm-pytorch:spot-interruptions": "5x2"})``;
* the runtime's default for every spot job: ``airflow-sm-pytorch local serve --spot-interruptions 5x2``
  or ``$SM_PYTORCH_LOCAL_SPOT_INTERRUPTIONS`` in the runtime's environment (a hook's autostart passes its
  own environment on). ``0`` or ``off`` in the tag turns the default off for that job.

The value is ``AFTER[xTIMES]``: every one of the job's first ``TIMES`` attempts (default 1) is interrupted
``AFTER`` seconds (a number > 0) after its Training began.

On demand, whenever a test or a task decides (e.g. once the script has written a checkpoint): create the
file ``<runtime root>/jobs/<job>/interrupt-spot`` (:data:`INTERRUPT_FILE`). The runtime consumes it (deletes
it) and interrupts the job's current Training at once; a file created outside Training waits for the next
Training. A job that is not a spot job is never interrupted, whatever the tag, the runtime or a file says.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The per-job tag (its value: ``AFTER[xTIMES]``).
TAG = "airflow-sm-pytorch:spot-interruptions"
#: Created in the job's directory (``<root>/jobs/<job>/``): interrupt that spot job's Training now, once.
INTERRUPT_FILE = "interrupt-spot"
#: How long an interrupted job waits for "spot capacity" (SecondaryStatus ``Interrupted``) before it starts
#: again. MaxWaitTimeInSeconds counts it; MaxRuntimeInSeconds does not.
CAPACITY_WAIT_S = 1.0
#: BillableTimeInSeconds of a spot job: the seconds its instances ran (interrupted waits excluded) at this
#: fraction of on-demand time. The local runtime's stand-in for SageMaker's spot savings (``(1 - Billable /
#: Training) * 100`` percent); real savings vary with the instance type and the day.
SPOT_PRICE_RATE = 0.3
_OFF = ("0", "off", "none", "no", "false")
_PATTERN = re.compile(r"(?P<after>\d+(?:\.\d*)?|\.\d+)(?:x(?P<times>\d+))?")


@dataclass(frozen=True)
class SpotInterruptions:
    """Interrupt each of the first ``times`` attempts ``after`` seconds into its Training."""

    after: float
    times: int = 1

    def __str__(self) -> str:
        return f"{self.after:g}x{self.times}"


def parse(text: str, source: str = "spot interruptions") -> SpotInterruptions | None:
    """``AFTER[xTIMES]`` (``5``, ``2.5x3``); ``0``/``off`` is None. A ValueError names ``source``."""
    value = str(text).strip().lower()
    if value in _OFF:
        return None
    match = _PATTERN.fullmatch(value)
    after = float(match.group("after")) if match else 0.0
    times = int(match.group("times") or 1) if match else 0
    if not match or not math.isfinite(after) or after <= 0 or times < 1:
        raise ValueError(f"{source} {text!r} is not AFTER[xTIMES]: give the seconds into each attempt's "
                         "Training at which it is interrupted (> 0) and, optionally, how many attempts are "
                         "(>= 1), e.g. '5' or '2.5x3'; '0' or 'off' for none")
    return SpotInterruptions(after, times)


def is_spot(request: Mapping[str, Any]) -> bool:
    return request.get("EnableManagedSpotTraining") is True


def tag_value(request: Mapping[str, Any]) -> str | None:
    for tag in request.get("Tags") or []:
        if isinstance(tag, Mapping) and tag.get("Key") == TAG:
            return str(tag.get("Value", ""))
    return None


def for_job(request: Mapping[str, Any], default: SpotInterruptions | None) -> SpotInterruptions | None:
    """The interruptions ``request`` gets: its tag's, else ``default``; None for a job that is not spot.
    A malformed tag is a ValueError (the runtime refuses the request with it)."""
    value = tag_value(request)
    plan = parse(value, f"tag {TAG}") if value is not None else default
    return plan if is_spot(request) else None


def interrupt_requested(job_dir: Path) -> bool:
    """Consume ``job_dir/interrupt-spot``: True once per file created."""
    try:
        os.unlink(job_dir / INTERRUPT_FILE)
    except FileNotFoundError:
        return False
    except OSError:
        return False
    return True


def billable_seconds(instance_seconds: float) -> int:
    """BillableTimeInSeconds of a spot job whose instances ran ``instance_seconds`` in all."""
    return max(1, math.ceil(instance_seconds * SPOT_PRICE_RATE))
