"""The SageMaker resources the hook creates and waits for, as data: one generic path serves them all.

Each :class:`Resource` names its Describe/Create operations, the request key that holds its name, and
waiter-style acceptors on its status (``success`` / ``failure`` states; anything else means "keep
waiting"). ``hook.describe(kind, name)``, ``hook.create_once(kind, request)`` and
``hook.wait_for(kind, name)`` read this table; a new kind (a processing job, an inference component) is
one entry here, not new hook code.

A Describe that answers ``ValidationException`` or ``ResourceNotFound`` means "no such resource": the
name was validated before it was sent, and SageMaker reports a missing training job, model, endpoint
config or endpoint with these codes (its message texts differ; they are not read).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Resource:
    kind: str                      # "TrainingJob", "Model", "EndpointConfig", "Endpoint"
    name_key: str                  # the request/response member holding the name
    status_key: str | None = None  # None: the resource exists once created (models, configs)
    success: frozenset[str] = field(default_factory=frozenset)
    failure: frozenset[str] = field(default_factory=frozenset)
    reason_key: str = "FailureReason"

    @property
    def describe(self) -> str:
        return f"Describe{self.kind}"

    @property
    def create(self) -> str:
        return f"Create{self.kind}"

    @property
    def delete(self) -> str:
        return f"Delete{self.kind}"

    def outcome(self, description: dict) -> str:
        """``"success"``, ``"failure"`` or ``"retry"`` for a Describe response (the waiter's acceptors)."""
        if self.status_key is None:
            return "success"
        status = description.get(self.status_key)
        if status in self.success:
            return "success"
        return "failure" if status in self.failure else "retry"


TRAINING_JOB = Resource("TrainingJob", "TrainingJobName", "TrainingJobStatus",
                        success=frozenset({"Completed"}), failure=frozenset({"Failed", "Stopped"}))
MODEL = Resource("Model", "ModelName")
ENDPOINT_CONFIG = Resource("EndpointConfig", "EndpointConfigName")
ENDPOINT = Resource("Endpoint", "EndpointName", "EndpointStatus",
                    success=frozenset({"InService"}), failure=frozenset({"Failed", "OutOfService"}))
RESOURCES = {r.kind: r for r in (TRAINING_JOB, MODEL, ENDPOINT_CONFIG, ENDPOINT)}
#: Codes a Describe answers for a resource that does not exist.
NOT_FOUND_CODES = frozenset({"ValidationException", "ResourceNotFound", "ResourceNotFoundException"})
#: Codes a Create answers when the name is taken: the resource exists, attach to it.
EXISTS_CODES = frozenset({"ResourceInUse", "ResourceInUseException"})


def method_name(operation: str) -> str:
    """A client's method for an API operation: ``DescribeTrainingJob`` -> ``describe_training_job``."""
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(operation))
