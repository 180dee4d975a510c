"""Reading botocore ``ClientError``s: their code, message, and whether asking again may help."""

from __future__ import annotations

from botocore.exceptions import ClientError

RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        "SlowDown",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "InternalError",
    }
)


def is_retryable(err: ClientError) -> bool:
    code = err.response.get("Error", {}).get("Code", "")
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return code in RETRYABLE_CODES or status >= 500


def code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", "Unknown"))


def message(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Message", err))
