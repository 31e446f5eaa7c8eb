"""AWS Signature Version 4: what the kernel's own AWS requests are signed with.

The algorithm as AWS documents it and botocore implements it (botocore's `SigV4Auth` and
`S3SigV4Auth` are the oracle in tests/unit/test_aws_sigv4.py, on many generated requests):

- canonical URI: the path as sent on the wire for S3; for every other service the wire path with
  dot segments and empty segments removed, percent-encoded once more (`/~` kept);
- canonical query: each key and value percent-encoded (unreserved characters kept), sorted by
  key, then value, `key=value` joined by `&` (an empty value keeps its `=`);
- canonical headers: every header but the hop-by-hop and tracing ones botocore leaves out,
  names lowercased, values trimmed with inner runs of spaces collapsed, repeats joined by `,`;
- payload: the body's sha256, or `UNSIGNED-PAYLOAD` where S3 allows it (over HTTPS); S3 requests
  also carry it as `x-amz-content-sha256`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# botocore's SIGNED_HEADERS_BLACKLIST: headers a proxy or tracer may add or change in flight.
UNSIGNED_HEADERS = frozenset(
    {
        "baggage",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)
Headers = Sequence[tuple[str, str]]


# NamedTuple, not a dataclass, here and in the rest of this package: these modules are imported
# at every cold start, and a frozen dataclass costs 0.5-1.7 ms to define, a NamedTuple a fifth.
class Credentials(NamedTuple):
    """An access key, its secret and (for temporary credentials) the session token."""

    access_key: str
    secret_key: str = ""
    token: str | None = None
    # Epoch seconds after which the credentials stop working (None: they do not expire).
    expires_at: float | None = None

    def __repr__(self) -> str:  # never print the secret or the token
        return f"Credentials(access_key={self.access_key!r}, expires_at={self.expires_at!r})"


def amz_date(now: float | None = None) -> str:
    """`YYYYMMDDTHHMMSSZ` in UTC, the timestamp format of SigV4."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    """The query string in canonical form (also a valid query string to send as is)."""
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in params)
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_uri(path: str, service: str) -> str:
    """The canonical URI of a wire path (already percent-encoded, as sent)."""
    if service == "s3":
        return path  # S3 signs the path exactly as sent: no normalization, no second encoding
    return quote(_remove_dot_segments(path) if path else "/", safe="/~")


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 5.2.4, and empty segments go too (AWS services other than S3 require it).
    out: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if out:
                out.pop()
        elif segment and segment != ".":
            out.append(segment)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and out else ""
    return first + "/".join(out) + last


def _canonical_headers(headers: Headers) -> tuple[str, str]:
    """(canonical headers block, signed headers list)."""
    values: dict[str, list[str]] = {}
    for name, value in headers:
        lname = name.lower()
        if lname not in UNSIGNED_HEADERS:
            values.setdefault(lname, []).append(" ".join(value.split()))
    names = sorted(values)
    block = "".join(f"{n}:{','.join(values[n])}\n" for n in names)
    return block, ";".join(names)


_KEYS: dict[tuple[str, str, str, str], bytes] = {}


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    cache_key = (secret, date, region, service)
    key = _KEYS.get(cache_key)
    if key is None:
        key = f"AWS4{secret}".encode()
        for part in (date, region, service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        if len(_KEYS) > 32:  # one key per day, region and service: a handful per process
            _KEYS.clear()
        _KEYS[cache_key] = key
    return key


def sign(
    *,
    method: str,
    host: str,
    path: str,
    query: Iterable[tuple[str, str]] = (),
    headers: Headers = (),
    payload_hash: str,
    service: str,
    region: str,
    credentials: Credentials,
    timestamp: str | None = None,
) -> list[tuple[str, str]]:
    """The request's headers with the SigV4 ones added: `X-Amz-Date`, `X-Amz-Security-Token`
    (temporary credentials), `X-Amz-Content-SHA256` (S3, or an unsigned payload) and
    `Authorization`.

    `host` is the Host header (with the port when it is not the scheme's default); `path` is the
    percent-encoded path as sent; `query` the decoded key/value pairs (send them as
    `canonical_query(query)`); `payload_hash` the body's sha256 hex or `UNSIGNED_PAYLOAD`.
    """
    stamp = timestamp or amz_date()
    replaced = {"authorization", "x-amz-date", "x-amz-security-token"}
    if service == "s3" or payload_hash == UNSIGNED_PAYLOAD:
        replaced.add("x-amz-content-sha256")
    signed = [(n, v) for n, v in headers if n.lower() not in replaced]
    if not any(n.lower() == "host" for n, _ in signed):
        signed.append(("Host", host))
    signed.append(("X-Amz-Date", stamp))
    if credentials.token:
        signed.append(("X-Amz-Security-Token", credentials.token))
    if "x-amz-content-sha256" in replaced:
        signed.append(("X-Amz-Content-SHA256", payload_hash))
    else:
        # A caller-supplied x-amz-content-sha256 is what the service checks: sign that value.
        payload_hash = next(
            (v for n, v in signed if n.lower() == "x-amz-content-sha256"), payload_hash
        )
    block, signed_names = _canonical_headers(signed)
    canonical = "\n".join(
        (
            method.upper(),
            canonical_uri(path, service),
            canonical_query(query),
            block,
            signed_names,
            payload_hash,
        )
    )
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        (ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest())
    )
    key = _signing_key(credentials.secret_key, stamp[:8], region, service)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    signed.append(
        (
            "Authorization",
            f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}",
        )
    )
    return signed
