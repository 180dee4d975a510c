"""Fetch a recipe from an ``https://`` URL at execute (or ``plan``) time: https only, redirects included,
with a size limit and a timeout. The SDK's ``urlretrieve`` follows any scheme and reads any size.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from airflow_sm_pytorch.builders.recipes import MAX_RECIPE_BYTES, check_recipe_url
from airflow_sm_pytorch.exceptions import SpecError


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect to anything but https (e.g. a downgrade to http) is refused."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if not newurl.lower().startswith("https://"):
            raise SpecError("training_recipe", req.full_url, f"it redirects to {newurl}, which is not https; "
                            "give the final https URL", problem="redirects off https")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_https(url: str, *, max_bytes: int = MAX_RECIPE_BYTES, timeout: float = 30.0) -> bytes:
    """The body at ``url`` (https only, at most ``max_bytes``); every failure is a SpecError naming the URL."""
    check_recipe_url(url)
    opener = urllib.request.build_opener(_HttpsOnlyRedirects())
    too_big = SpecError("training_recipe", url, f"a recipe may be at most {max_bytes} bytes; download it and "
                        "give the file", problem="is too large")
    try:
        with opener.open(urllib.request.Request(url, headers={"Accept": "application/yaml, text/*"}),
                         timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise too_big
            body = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise SpecError("training_recipe", url, f"check the URL: the server answered {exc.code} {exc.reason}",
                        problem="could not be fetched") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SpecError("training_recipe", url, f"check the URL and the network ({reason})",
                        problem="could not be fetched") from None
    if len(body) > max_bytes:
        raise too_big
    return body
