"""Who may talk to the local runtime: SigV4-signed requests with its own keys, sent to a loopback Host.

The runtime runs arbitrary code as its user, so every request is authenticated the way AWS does it:

* **Keys.** One key pair: ``local serve --access-key-id ID --secret-access-key KEY``, else
  ``SM_PYTORCH_LOCAL_ACCESS_KEY_ID`` / ``SM_PYTORCH_LOCAL_SECRET_ACCESS_KEY``, else the pair kept in
  ``<root>/credentials`` (generated once, mode 0600, in the AWS shared-credentials format, so
  ``AWS_SHARED_CREDENTIALS_FILE=<root>/credentials`` works for the CLI and boto3 too).
* **Signatures.** The request's SigV4 ``Authorization`` header is recomputed with botocore's own signer
  over the headers it names and the body, and compared in constant time. Unsigned requests get
  ``MissingAuthenticationTokenException``, an unknown key ``UnrecognizedClientException``, a wrong
  signature or a ``X-Amz-Date`` more than 15 minutes off ``InvalidSignatureException`` — AWS's codes, so
  botocore raises the ``ClientError`` users know.
* **Host.** DNS rebinding lets a web page send requests to 127.0.0.1 with its own ``Host``: only loopback
  names and addresses (and hosts allowed with ``--allowed-host``) are served, as Jupyter does since its
  rebinding advisory.

Not covered: another local user who can read ``<root>/credentials`` (it is 0600, in a directory of the
runtime's user) or the environment of the process that started the runtime; TLS (plain HTTP on
loopback; anyone who can sniff loopback is root already); replay of a captured request within 15 minutes.
"""

from __future__ import annotations

import configparser
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ACCESS_KEY_ENV = "SM_PYTORCH_LOCAL_ACCESS_KEY_ID"
SECRET_KEY_ENV = "SM_PYTORCH_LOCAL_SECRET_ACCESS_KEY"
CREDENTIALS_FILE = "credentials"
MAX_SKEW_S = 15 * 60
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/"
    r"(?P<service>[^/,\s]+)/aws4_request,\s*SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<sig>[0-9a-f]{64})"
)
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


class AuthError(Exception):
    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str
    source: str  # where they came from, for messages: "--access-key-id", "$SM_...", or the file's path


def _read_file(path: Path) -> Keys | None:
    parser = configparser.ConfigParser()
    try:
        parser.read_string(path.read_text(encoding="utf-8"))
        section = parser["default"]
        return Keys(section["aws_access_key_id"].strip(), section["aws_secret_access_key"].strip(), str(path))
    except FileNotFoundError:
        return None
    except (OSError, KeyError, configparser.Error) as exc:
        raise ValueError(f"{path} is not a credentials file with a [default] aws_access_key_id and "
                         f"aws_secret_access_key ({exc}); delete it to have a new pair generated") from None


def key_file(root: Path) -> Path:
    return Path(root) / CREDENTIALS_FILE


def ensure_key_file(root: Path) -> Keys:
    """The pair in ``<root>/credentials``, generated (mode 0600, atomically) when the file is absent."""
    path = key_file(root)
    keys = _read_file(path)
    if keys is not None:
        return keys
    path.parent.mkdir(parents=True, exist_ok=True)
    akid = "LKIA" + secrets.token_hex(8).upper()
    secret = secrets.token_urlsafe(30)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# The local SageMaker runtime's keys (airflow-sm-pytorch local serve).\n"
                 f"[default]\naws_access_key_id = {akid}\naws_secret_access_key = {secret}\n")
    try:
        os.link(tmp, path)  # never replace a file another process created meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read_file(path)  # type: ignore[return-value]


def resolve_keys(root: Path, access_key_id: str | None = None, secret_access_key: str | None = None,
                 environ: Mapping[str, str] = os.environ) -> Keys:
    """Flags, else environment, else ``<root>/credentials`` (created when missing)."""
    if access_key_id or secret_access_key:
        if not (access_key_id and secret_access_key):
            raise ValueError("give both --access-key-id and --secret-access-key, or neither")
        return Keys(access_key_id, secret_access_key, "--access-key-id/--secret-access-key")
    env_id, env_secret = environ.get(ACCESS_KEY_ENV), environ.get(SECRET_KEY_ENV)
    if env_id or env_secret:
        if not (env_id and env_secret):
            raise ValueError(f"set both {ACCESS_KEY_ENV} and {SECRET_KEY_ENV}, or neither")
        return Keys(env_id, env_secret, f"${ACCESS_KEY_ENV}")
    return ensure_key_file(root)


def is_loopback_host(host: str) -> bool:
    name = host.strip("[]").lower().rstrip(".")
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8787`` -> ``::1``, ``a:1`` -> ``a``)."""
    header = header.strip()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def check_host(header: str | None, allowed: Iterable[str] = ()) -> None:
    """Refuse a ``Host`` that is neither loopback nor explicitly allowed (DNS rebinding)."""
    name = host_name(header or "")
    if not name:
        raise AuthError("AccessDeniedException", "The request has no Host header.", 400)
    if is_loopback_host(name) or name.lower() in {h.lower() for h in allowed}:
        return
    raise AuthError("AccessDeniedException",
                    f"Host {name!r} is not served: the local runtime answers loopback hosts only "
                    "(start it with --allowed-host NAME to serve another name).", 403)


def verify_sigv4(method: str, path: str, query: str, headers: Mapping[str, str], body: bytes, keys: Keys,
                 now: datetime | None = None) -> str:
    """Check the request's SigV4 signature against ``keys``; return the region of its credential scope."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    lower = {k.lower(): v for k, v in headers.items()}
    authorization = lower.get("authorization")
    if not authorization:
        raise AuthError("MissingAuthenticationTokenException", "Missing Authentication Token")
    match = _AUTH.fullmatch(authorization.strip())
    if match is None:
        raise AuthError("IncompleteSignatureException",
                        "Authorization header requires a AWS4-HMAC-SHA256 Credential, SignedHeaders and "
                        "Signature.", 400)
    if not hmac.compare_digest(match["key"], keys.access_key_id):
        raise AuthError("UnrecognizedClientException",
                        "The security token included in the request is invalid.", 400)
    signed = match["signed"].split(";")
    stamp = lower.get("x-amz-date", "")
    if "host" not in signed or not stamp or stamp[:8] != match["date"]:
        raise AuthError("IncompleteSignatureException",
                        "The request must sign the Host header and carry a matching X-Amz-Date.", 400)
    try:
        when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise AuthError("IncompleteSignatureException", f"Invalid X-Amz-Date {stamp!r}.", 400) from None
    skew = abs(((now or datetime.now(timezone.utc)) - when).total_seconds())
    if skew > MAX_SKEW_S:
        raise AuthError("InvalidSignatureException",
                        f"Signature expired: {stamp} is more than 15 minutes away from the server's time.", 400)
    missing = [h for h in signed if h not in lower]
    if missing:
        raise AuthError("IncompleteSignatureException", f"Signed headers are missing: {', '.join(missing)}.", 400)
    claimed = lower.get("x-amz-content-sha256")
    if claimed is not None and not hmac.compare_digest(claimed, hashlib.sha256(body).hexdigest()):
        raise AuthError("InvalidSignatureException", "X-Amz-Content-SHA256 does not match the body.", 400)
    request = AWSRequest(method=method, url=f"http://{lower['host']}{path}" + (f"?{query}" if query else ""),
                         data=body, headers={h: lower[h] for h in signed})
    request.context["timestamp"] = stamp
    auth = SigV4Auth(Credentials(keys.access_key_id, keys.secret_access_key), match["service"], match["region"])
    canonical = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, match["sig"]):
        raise AuthError("InvalidSignatureException",
                        "The request signature we calculated does not match the signature you provided. "
                        "Check your AWS Secret Access Key and signing method.", 400)
    return match["region"]
