"""The one place that decides what is secret before a value reaches a log, XCom or a rendered field.

A value is secret when its key looks like a credential (token, secret, password, private key …), at any
depth of a request. Pure: callers also hand the secret values to Airflow's masker so that they are
masked wherever else they might be printed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

MASK = "***"
_WORDS = frozenset({"token", "secret", "password", "passwd", "pwd", "passphrase", "credential",
                    "credentials", "auth", "authorization", "apikey"})
_PAIRS = frozenset({("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key")})
_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def is_sensitive(key: str) -> bool:
    """True for credential-like names: ``hf_token``, ``WANDB_API_KEY``, ``accessToken``, ``db_password``.

    Whole words only, so ``tokenizer`` or ``max_tokens`` stay visible.
    """
    words = [w.lower() for w in _SPLIT.split(key) if w]
    return any(w in _WORDS for w in words) or any(pair in _PAIRS for pair in zip(words, words[1:]))


def redact(value: Any) -> Any:
    """A copy of ``value`` with every value under a sensitive key replaced by ``***``."""
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and is_sensitive(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


def secrets(value: Any) -> Iterator[str]:
    """Every string stored under a sensitive key (for Airflow's masker)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and is_sensitive(k):
                yield from _strings(v)
            else:
                yield from secrets(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from secrets(v)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if value:
            yield value
            # hyperparameters travel JSON-encoded: mask the quoted form too
            yield value.strip('"')
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)
