"""Where the kernel's AWS calls get their credentials, in the order the SDK looks on Lambda.

1. `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`): what Lambda sets for
   the execution role, read on every call (they never expire within an execution environment).
2. The container credentials endpoint: `AWS_CONTAINER_CREDENTIALS_FULL_URI` with the token in
   `AWS_CONTAINER_AUTHORIZATION_TOKEN` (or the file `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`
   names), or ECS's `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`. Lambda SnapStart functions get
   their credentials this way instead of the variables above (so that none are baked into the
   snapshot). They are cached until 5 minutes before they expire, so a restored snapshot fetches
   fresh ones on its first call.

Shared config files, SSO and instance metadata are not read: the serving path runs on Lambda,
where none of them exists. The CLI and training use the full SDK.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

from sds.kernel.aws.errors import CredentialsError
from sds.kernel.aws.sigv4 import Credentials

ECS_HOST = "169.254.170.2"
# Hosts a plain-http credentials endpoint may be on (botocore's list): loopback and the ECS/EKS
# link-local agents. Anything else must be https.
_HTTP_CREDENTIAL_HOSTS = frozenset({"169.254.170.2", "169.254.170.23", "fd00:ec2::23"})
REFRESH_BEFORE_EXPIRY_S = 300
FETCH_ATTEMPTS = 3


class CredentialProvider:
    """Credentials for signing, from the environment or the container endpoint (cached)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ
        self._cached: Credentials | None = None
        self._lock = threading.Lock()

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def get(self) -> Credentials:
        env = self.environ
        key = env.get("AWS_ACCESS_KEY_ID", "")
        secret = env.get("AWS_SECRET_ACCESS_KEY", "")
        if key and secret:
            return Credentials(key, secret, env.get("AWS_SESSION_TOKEN") or None)
        if key or secret:
            missing = "AWS_SECRET_ACCESS_KEY" if key else "AWS_ACCESS_KEY_ID"
            raise CredentialsError(
                f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together; {missing} is not set",
                code="PartialCredentials",
            )
        with self._lock:
            cached = self._cached
            if cached is not None and (
                cached.expires_at is None
                or cached.expires_at - time.time() > REFRESH_BEFORE_EXPIRY_S
            ):
                return cached
            self._cached = _from_container(env)
            return self._cached

    def invalidate(self) -> None:
        """Forget cached credentials (AWS said they expired): the next `get` fetches anew."""
        with self._lock:
            self._cached = None

    @property
    def refreshable(self) -> bool:
        """Whether `invalidate` can bring different credentials (not the static variables)."""
        return not self.environ.get("AWS_ACCESS_KEY_ID")


def _container_url(env: Mapping[str, str]) -> str | None:
    relative = env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "").strip()
    if relative:
        return f"http://{ECS_HOST}{relative if relative.startswith('/') else '/' + relative}"
    full = env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI", "").strip()
    if not full:
        return None
    parts = urlsplit(full)
    if parts.scheme == "https":
        return full
    host = parts.hostname or ""
    if parts.scheme == "http" and (host == "localhost" or _allowed_http_host(host)):
        return full
    raise CredentialsError(
        f"AWS_CONTAINER_CREDENTIALS_FULL_URI={full!r}: plain http is allowed only to a loopback "
        "address or the ECS/EKS credential agents; use https",
        code="InvalidCredentialsEndpoint",
    )


def _allowed_http_host(host: str) -> bool:
    if host in _HTTP_CREDENTIAL_HOSTS:
        return True
    import ipaddress  # only here: a cold start with static credentials never needs it

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token(env: Mapping[str, str]) -> str | None:
    token_file = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "").strip()
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise CredentialsError(
                f"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={token_file}: cannot read it ({exc})",
                code="InvalidCredentialsEndpoint",
            ) from None
    token = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN", "").strip()
    if token and ("\r" in token or "\n" in token):
        raise CredentialsError(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN contains a line break",
            code="InvalidCredentialsEndpoint",
        )
    return token or None


def _from_container(env: Mapping[str, str]) -> Credentials:
    url = _container_url(env)
    if url is None:
        raise CredentialsError(
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (Lambda sets "
            "them for the execution role) or AWS_CONTAINER_CREDENTIALS_FULL_URI",
            code="NoCredentials",
        )
    from sds.kernel.aws.transport import Connection

    parts = urlsplit(url)
    headers = [("Host", parts.netloc), ("Accept", "application/json")]
    token = _token(env)
    if token:
        headers.append(("Authorization", token))
    target = parts.path + (f"?{parts.query}" if parts.query else "") or "/"
    connection: Connection | None = None
    last: Exception | None = None
    for attempt in range(FETCH_ATTEMPTS):
        try:
            if parts.scheme == "https":
                from sds.kernel.aws.trust import contexts_for

                connection = Connection(
                    "https",
                    parts.hostname or "",
                    parts.port or 443,
                    connect_timeout=2,
                    read_timeout=2,
                    tls=contexts_for,
                )
            else:
                connection = Connection(
                    "http",
                    parts.hostname or "",
                    parts.port or 80,
                    connect_timeout=2,
                    read_timeout=2,
                )
            response = connection.request("GET", target, headers)
        except OSError as exc:
            last = exc
            time.sleep(0.05 * 2**attempt)
            continue
        finally:
            if connection is not None:
                connection.close()
        if response.status >= 500:
            last = CredentialsError(
                f"the credentials endpoint answered HTTP {response.status}",
                code="CredentialsEndpointError",
                status=response.status,
            )
            time.sleep(0.05 * 2**attempt)
            continue
        return _parse_container_credentials(response.status, response.body)
    raise CredentialsError(
        f"the credentials endpoint {parts.scheme}://{parts.netloc} did not answer after "
        f"{FETCH_ATTEMPTS} attempts: {last}",
        code="CredentialsEndpointError",
    )


def _parse_container_credentials(status: int, body: bytes) -> Credentials:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if status != 200 or not isinstance(document, dict):
        detail = document.get("message", "") if isinstance(document, dict) else body[:200]
        raise CredentialsError(
            f"the credentials endpoint refused: {detail!r}",
            code="CredentialsEndpointError",
            status=status,
        )
    try:
        key = str(document["AccessKeyId"])
        secret = str(document["SecretAccessKey"])
    except KeyError as exc:
        raise CredentialsError(
            f"the credentials endpoint's answer has no {exc.args[0]}",
            code="CredentialsEndpointError",
            status=status,
        ) from None
    expires_at = None
    if document.get("Expiration"):
        try:
            expiration = datetime.fromisoformat(str(document["Expiration"]))
        except ValueError:
            raise CredentialsError(
                f"the credentials endpoint's Expiration {document['Expiration']!r} is not a date",
                code="CredentialsEndpointError",
                status=status,
            ) from None
        if expiration.tzinfo is None:  # the endpoints answer in UTC
            expiration = expiration.replace(tzinfo=UTC)
        expires_at = expiration.timestamp()
    return Credentials(key, secret, document.get("Token") or None, expires_at)
