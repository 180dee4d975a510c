"""What every service module of the local runtime shares: the error type and the paging tokens.

Handlers take the decoded request and return the response dict; every refusal is an :class:`ApiError`
with the AWS error code (``__type``) and message that botocore turns into ``ClientError``.
"""

from __future__ import annotations

import base64
import binascii
import json

ACCOUNT = "000000000000"


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def page_offset(token: str | None, code: str) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
        if isinstance(offset, int) and offset >= 0:
            return offset
    except (ValueError, KeyError, TypeError, binascii.Error):
        pass
    raise ApiError(code, "Invalid pagination token" if code == "ValidationException"
                   else "The specified nextToken is invalid.")
