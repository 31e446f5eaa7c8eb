"""What every kernel AWS client shares: region and endpoint from the environment the way the SDK
reads them, kept-alive connections per endpoint, SigV4 signing, and bounded retries.

- Region: `AWS_REGION`, else `AWS_DEFAULT_REGION` (Lambda sets both).
- Endpoint: `AWS_ENDPOINT_URL_<SERVICE>` (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_DYNAMODB`),
  else `AWS_ENDPOINT_URL`, unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`; else the service's
  regional endpoint. `http://` endpoints (moto's server, other local protocol servers) work
  without TLS. FIPS and dual-stack endpoints are refused with a clear error instead of being
  silently ignored: set `AWS_ENDPOINT_URL_<SERVICE>` to the endpoint you want.
- Retries: the SDK's standard mode in small: throttling codes, 5xx, 429, dropped or timed-out
  connections and (DynamoDB) a body whose CRC32 does not match are retried up to
  `max_attempts` in all, with exponential backoff and full jitter capped at `max_delay`; every
  attempt is signed anew. Expired temporary credentials are fetched anew once. A certificate
  that does not verify is never retried.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

from sds.kernel.aws.credentials import CredentialProvider
from sds.kernel.aws.errors import AwsConnectionError, AwsError, ConfigurationError
from sds.kernel.aws.sigv4 import EMPTY_SHA256, canonical_query, sign
from sds.kernel.aws.transport import Connection, Response

if TYPE_CHECKING:
    import ssl

logger = logging.getLogger("sds.aws")

USER_AGENT = "sds-kernel-aws/1"
MAX_IDLE_CONNECTIONS = 10
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# botocore's standard retry mode: throttling and transient error codes.
RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
EXPIRED_CREDENTIAL_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})


class ClientConfig(NamedTuple):
    """Timeouts in seconds, the retry budget (attempts in all, the first included), and how
    long a kept-alive connection may sit idle and still be reused (see `transport`)."""

    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int = 5
    base_delay: float = 0.05
    max_delay: float = 2.0
    max_idle: float = 45.0


class Endpoint(NamedTuple):
    scheme: str
    host: str
    port: int
    base_path: str = ""  # an endpoint URL's own path, without the trailing slash
    custom: bool = False  # set by AWS_ENDPOINT_URL*: path-style S3, no region redirects

    @property
    def netloc(self) -> str:
        """The Host header: the port only when it is not the scheme's default."""
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    def with_host(self, host: str) -> Endpoint:
        return Endpoint(self.scheme, host, self.port, self.base_path, self.custom)


def parse_endpoint(url: str, *, source: str, custom: bool = True) -> Endpoint:
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ConfigurationError(
            f"{source}={url!r} is not an endpoint URL: use http(s)://host[:port]",
            code="InvalidEndpoint",
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(
            f"{source}={url!r}: an endpoint URL has no query, fragment or credentials",
            code="InvalidEndpoint",
        )
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    return Endpoint(
        scheme=parts.scheme,
        host=host,
        port=port or (443 if parts.scheme == "https" else 80),
        base_path=parts.path.rstrip("/"),
        custom=custom,
    )


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def resolve_region(environ: Mapping[str, str]) -> str:
    region = (environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "").strip()
    if not region:
        raise ConfigurationError(
            "no AWS region: set AWS_REGION (Lambda sets it) or AWS_DEFAULT_REGION",
            code="NoRegion",
        )
    return region


def configured_endpoint(service_id: str, environ: Mapping[str, str]) -> Endpoint | None:
    """The endpoint `AWS_ENDPOINT_URL_<SERVICE>` or `AWS_ENDPOINT_URL` configures, if any."""
    if _truthy(environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")):
        return None
    for name in (f"AWS_ENDPOINT_URL_{service_id.upper().replace(' ', '_')}", "AWS_ENDPOINT_URL"):
        value = environ.get(name, "").strip()
        if value:
            return parse_endpoint(value, source=name)
    return None


def dns_suffix(region: str) -> str:
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


class _Pool:
    """Idle kept-alive connections to one endpoint; a request takes one or opens a new one."""

    def __init__(
        self, endpoint: Endpoint, config: ClientConfig, environ: Mapping[str, str] | None
    ) -> None:
        self.endpoint = endpoint
        self.config = config
        self.environ = environ
        self._idle: list[Connection] = []
        self._lock = threading.Lock()

    def take(self) -> Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        tls = None
        if self.endpoint.scheme == "https":
            from sds.kernel.aws.trust import contexts_for

            def tls(host: str) -> list[ssl.SSLContext]:
                return contexts_for(host, self.environ)

        return Connection(
            self.endpoint.scheme,
            self.endpoint.host,
            self.endpoint.port,
            connect_timeout=self.config.connect_timeout,
            read_timeout=self.config.read_timeout,
            tls=tls,
            max_idle=self.config.max_idle,
        )

    def give_back(self, connection: Connection) -> None:
        if not connection.is_open:
            return
        with self._lock:
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class AwsClient:
    """Base of the kernel's service clients: signs, sends, retries and maps errors."""

    service = ""  # the signing name: "s3", "dynamodb"
    service_id = ""  # the name in AWS_ENDPOINT_URL_<SERVICE_ID>

    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        credentials: CredentialProvider | None = None,
        config: ClientConfig | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.region = region or resolve_region(env)
        for flag in ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT"):
            if _truthy(env.get(flag)) and endpoint_url is None:
                raise ConfigurationError(
                    f"{flag}=true is not supported by the kernel's {self.service} client: set "
                    f"AWS_ENDPOINT_URL_{self.service_id.upper()} to the endpoint to use",
                    code="UnsupportedEndpoint",
                )
        self.endpoint = (
            parse_endpoint(endpoint_url, source="endpoint_url")
            if endpoint_url
            else configured_endpoint(self.service_id, env) or self.default_endpoint(self.region)
        )
        self.environ = environ
        self.credentials = credentials or CredentialProvider(environ)
        self.config = config or ClientConfig()
        if self.config.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._pools: dict[Endpoint, _Pool] = {}
        self._pools_lock = threading.Lock()

    def default_endpoint(self, region: str) -> Endpoint:
        return Endpoint("https", f"{self.service}.{region}.{dns_suffix(region)}", 443, custom=False)

    def close(self) -> None:
        """Close every kept-alive connection (the client stays usable: it reconnects)."""
        with self._pools_lock:
            pools = list(self._pools.values())
        for pool in pools:
            pool.close()

    def __enter__(self) -> AwsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _pool(self, endpoint: Endpoint) -> _Pool:
        pool = self._pools.get(endpoint)
        if pool is None:
            with self._pools_lock:
                pool = self._pools.setdefault(endpoint, _Pool(endpoint, self.config, self.environ))
        return pool

    def error_from(self, operation: str, response: Response) -> AwsError:
        """The service's error document as an `AwsError` (each service parses its own)."""
        return AwsError(
            response.reason or "request failed",
            service=self.service,
            operation=operation,
            code=str(response.status),
            status=response.status,
        )

    def check_response(self, response: Response) -> str | None:
        """A reason to retry a 2xx response (a corrupted body), or None."""
        del response
        return None

    def send(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        endpoint: Endpoint | None = None,
        query: Sequence[tuple[str, str]] = (),
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        region: str | None = None,
    ) -> Response:
        """Send one signed request, retrying what may be retried; a 2xx response or AwsError.

        `path` is percent-encoded, relative to the endpoint's own path.
        """
        target_endpoint = endpoint or self.endpoint
        signing_region = region or self.region
        wire_path = target_endpoint.base_path + path
        query_string = canonical_query(query)
        target = wire_path + (f"?{query_string}" if query_string else "")
        extra = [("User-Agent", USER_AGENT), *headers]
        # The body is always signed, as botocore does for requests without a checksum header
        # (S3 would accept UNSIGNED-PAYLOAD over TLS, but the kernel's bodies are small).
        payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        pool = self._pool(target_endpoint)
        refreshed = False
        attempt = 0
        failure: AwsError
        retryable: bool
        while True:
            attempt += 1
            credentials = self.credentials.get()
            signed = sign(
                method=method,
                host=target_endpoint.netloc,
                path=wire_path,
                query=query,
                headers=extra,
                payload_hash=payload_hash,
                service=self.service,
                region=signing_region,
                credentials=credentials,
            )
            connection = pool.take()
            try:
                response = connection.request(method, target, signed, body)
            except AwsError:
                connection.close()
                raise
            except OSError as exc:
                connection.close()
                failure = _connection_error(self, operation, target_endpoint, exc)
                retryable = not _is_certificate_error(exc)
            else:
                pool.give_back(connection)
                if 200 <= response.status < 300:
                    problem = self.check_response(response)
                    if problem is None:
                        return response
                    failure = AwsError(problem, service=self.service, operation=operation)
                    retryable = True
                else:
                    failure = self.error_from(operation, response)
                    if (
                        failure.code in EXPIRED_CREDENTIAL_CODES
                        and not refreshed
                        and self.credentials.refreshable
                    ):
                        refreshed = True
                        self.credentials.invalidate()
                        attempt -= 1  # a credentials refresh is not a retry of the request
                        continue
                    retryable = (
                        failure.status in RETRYABLE_STATUSES or failure.code in RETRYABLE_CODES
                    )
            if not retryable or attempt >= self.config.max_attempts:
                if retryable and attempt > 1:
                    failure.add_note(f"gave up after {attempt} attempts")
                raise failure
            delay = _backoff(attempt, self.config)
            logger.debug("%s %s: %s; retrying in %.3f s", self.service, operation, failure, delay)
            time.sleep(delay)


def _backoff(attempt: int, config: ClientConfig) -> float:
    import random

    return random.uniform(0, min(config.max_delay, config.base_delay * 2 ** (attempt - 1)))


def _is_certificate_error(exc: BaseException) -> bool:
    ssl = sys.modules.get("ssl")  # no ssl imported: no TLS was attempted
    return ssl is not None and isinstance(exc, ssl.SSLCertVerificationError)


def _connection_error(
    client: AwsClient, operation: str, endpoint: Endpoint, exc: OSError
) -> AwsConnectionError:
    where = f"{endpoint.scheme}://{endpoint.netloc}"
    if _is_certificate_error(exc):
        message = f"the TLS certificate of {where} does not verify: {exc}"
        code = "CertificateVerifyFailed"
    elif isinstance(exc, TimeoutError):
        message = f"{where} did not answer in time ({exc or 'timed out'})"
        code = "Timeout"
    else:
        message = f"cannot talk to {where}: {exc.__class__.__name__}: {exc}"
        code = "ConnectionError"
    return AwsConnectionError(message, service=client.service, operation=operation, code=code)
