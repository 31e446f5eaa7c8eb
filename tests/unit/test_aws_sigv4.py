"""The kernel's SigV4 signer (sds.kernel.aws.sigv4) signs exactly as botocore does.

botocore's `SigV4Auth` (DynamoDB and most services) and `S3SigV4Auth` (S3) are the oracle: on
many generated requests (methods, paths with odd characters, dot segments and double slashes,
query strings with repeated and empty keys and values, repeated and oddly spaced headers,
binary payloads, session tokens, signed and unsigned payloads) both must produce the same
Authorization header and the same X-Amz-* headers. Two requests from AWS's own documentation
pin the algorithm independently of botocore.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sds.kernel.aws import sigv4
from sds.kernel.aws.sigv4 import UNSIGNED_PAYLOAD, Credentials, canonical_query, sign

SIGV4_HEADERS = ("authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256")


def botocore_sign(
    monkeypatch: pytest.MonkeyPatch,
    *,
    method: str,
    url: str,
    query: list[tuple[str, str]],
    headers: list[tuple[str, str]],
    body: bytes,
    service: str,
    region: str,
    credentials: Credentials,
    when: dt.datetime,
    unsigned: bool,
) -> dict[str, list[str]]:
    """The headers botocore's signer sets on the same request (lowercase name -> values)."""
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda *a, **k: when)
    request = AWSRequest(method=method, url=url, data=body, params=query or None)
    for name, value in headers:
        request.headers[name] = value  # botocore's HTTPHeaders keeps repeated names
    boto_credentials = BotoCredentials(
        credentials.access_key, credentials.secret_key, credentials.token
    )
    if service == "s3":
        request.context["client_config"] = Config(s3={"payload_signing_enabled": not unsigned})
        S3SigV4Auth(boto_credentials, service, region).add_auth(request)
    else:
        request.context["payload_signing_enabled"] = not unsigned
        SigV4Auth(boto_credentials, service, region).add_auth(request)
    out: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        out.setdefault(name.lower(), []).append(value)
    return out


def ours(signed: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in signed:
        out.setdefault(name.lower(), []).append(value)
    return out


# Strategies ------------------------------------------------------------------------------------

ODD_TEXT = st.text(
    alphabet=st.sampled_from(
        [*"abcXYZ019 -_.~!$&'()*+,;=:@/%?#[]\"<>^`{|}\\", "é", "ü", "日", "🚀", "\t"]
    ),
    max_size=12,
)
SEGMENT = st.one_of(ODD_TEXT, st.sampled_from(["", ".", "..", "a b", "%2F", "~user"]))
SAFE_SETS = st.sampled_from(["", "~", "~!$'()*+,;=:@"])
TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
RESERVED = {"authorization", "date", "host", *SIGV4_HEADERS}
HEADER_NAME = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=12).filter(
    lambda n: n.lower() not in RESERVED and not n.startswith("-")
)
# Header values as HTTP carries them: visible ASCII with spaces and tabs (runs collapse).
HEADER_VALUE = st.lists(
    st.sampled_from([*"abcXYZ019-_=;,:/\"'", " ", "  ", "   ", "\t", " \t "]), max_size=12
).map("".join)


@st.composite
def wire_paths(draw: st.DrawFn) -> str:
    segments = draw(st.lists(SEGMENT, max_size=5))
    safe = draw(SAFE_SETS)
    path = "/" + "/".join(quote(s, safe=safe) for s in segments)
    return path if draw(st.booleans()) else path + "/"


@st.composite
def queries(draw: st.DrawFn) -> list[tuple[str, str]]:
    keys = draw(st.lists(ODD_TEXT, min_size=1, max_size=3))  # a small pool: keys repeat
    return draw(
        st.lists(st.tuples(st.sampled_from(keys), st.one_of(st.just(""), ODD_TEXT)), max_size=6)
    )


@st.composite
def headers(draw: st.DrawFn) -> list[tuple[str, str]]:
    names = draw(st.lists(HEADER_NAME, max_size=4))
    pairs = [(n, draw(HEADER_VALUE)) for n in names]
    if names and draw(st.booleans()):  # the same name again, in another case
        pairs.append((draw(st.sampled_from(names)).upper(), draw(HEADER_VALUE)))
    for name in ("User-Agent", "X-Amzn-Trace-Id", "Connection"):  # never signed
        if draw(st.booleans()):
            pairs.append((name, draw(HEADER_VALUE)))
    return pairs


SERVICES = st.sampled_from(["s3", "dynamodb", "sqs", "execute-api"])
REGIONS = st.sampled_from(["us-east-1", "eu-central-1", "ap-southeast-2", "cn-north-1"])
HOSTS = st.sampled_from(
    ["s3.us-east-1.amazonaws.com", "bucket.s3.eu-central-1.amazonaws.com",
     "dynamodb.us-east-1.amazonaws.com", "127.0.0.1:5000", "localhost:4566"]
)  # fmt: skip
WHEN = st.datetimes(min_value=dt.datetime(2015, 1, 1), max_value=dt.datetime(2099, 12, 31))
CREDENTIALS = st.builds(
    Credentials,
    access_key=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=16, max_size=20),
    secret_key=st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/",
        min_size=40,
        max_size=40,
    ),
    token=st.one_of(st.none(), st.text(alphabet=TOKEN_CHARS + "+/=", min_size=1, max_size=60)),
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"]),
    scheme=st.sampled_from(["https", "http"]),
    host=HOSTS,
    path=wire_paths(),
    query=queries(),
    extra=headers(),
    body=st.binary(max_size=64),
    service=SERVICES,
    region=REGIONS,
    credentials=CREDENTIALS,
    when=WHEN,
    unsigned=st.booleans(),
)
def test_the_signature_matches_botocores_on_generated_requests(
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    scheme: str,
    host: str,
    path: str,
    query: list[tuple[str, str]],
    extra: list[tuple[str, str]],
    body: bytes,
    service: str,
    region: str,
    credentials: Credentials,
    when: dt.datetime,
    unsigned: bool,
) -> None:
    # botocore signs the body over plain http whatever the setting (except S3's explicit one)
    unsigned = unsigned and (scheme == "https" or service == "s3")
    payload_hash = UNSIGNED_PAYLOAD if unsigned else sigv4.hashlib.sha256(body).hexdigest()

    # Given the same request signed by botocore and by the kernel at the same instant
    expected = botocore_sign(
        monkeypatch,
        method=method,
        url=f"{scheme}://{host}{path}",
        query=query,
        headers=extra,
        body=body,
        service=service,
        region=region,
        credentials=credentials,
        when=when,
        unsigned=unsigned,
    )
    actual = ours(
        sign(
            method=method,
            host=host,
            path=path,
            query=query,
            headers=extra,
            payload_hash=payload_hash,
            service=service,
            region=region,
            credentials=credentials,
            timestamp=when.strftime("%Y%m%dT%H%M%SZ"),
        )
    )

    # Then the signature and every SigV4 header agree, and the caller's headers are kept as given
    for name in SIGV4_HEADERS:
        assert actual.get(name) == expected.get(name), name
    for name, value in extra:
        assert value in actual[name.lower()]


def test_repeated_query_keys_are_sorted_by_value_and_empty_values_keep_their_equals_sign() -> None:
    assert canonical_query([("b", "2"), ("a", ""), ("b", "1"), ("", "x")]) == "=x&a=&b=1&b=2"
    assert canonical_query([("k", "a b/ü~")]) == "k=a%20b%2F%C3%BC~"


def test_an_aws_documentation_example_get_vanilla() -> None:
    # AWS's SigV4 test suite, "get-vanilla": GET / on example.amazonaws.com
    signed = dict(
        sign(
            method="GET",
            host="example.amazonaws.com",
            path="/",
            payload_hash=sigv4.EMPTY_SHA256,
            service="service",
            region="us-east-1",
            credentials=Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            timestamp="20150830T123600Z",
        )
    )

    assert signed["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )


def test_an_s3_documentation_example_get_object_with_a_range() -> None:
    # The S3 API reference's "GET Object" example for header-based SigV4 authentication
    signed = dict(
        sign(
            method="GET",
            host="examplebucket.s3.amazonaws.com",
            path="/test.txt",
            headers=[("Range", "bytes=0-9")],
            payload_hash=sigv4.EMPTY_SHA256,
            service="s3",
            region="us-east-1",
            credentials=Credentials(
                "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
            ),
            timestamp="20130524T000000Z",
        )
    )

    assert signed["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_credentials_never_show_their_secret_or_token() -> None:
    text = repr(Credentials("AKID", "very-secret", "session-token"))

    assert "AKID" in text
    assert "very-secret" not in text and "session-token" not in text


def test_a_caller_cannot_smuggle_its_own_authorization_or_date() -> None:
    # Given headers that already carry stale SigV4 values (a retried request)
    signed = sign(
        method="GET",
        host="h",
        path="/",
        headers=[("Authorization", "old"), ("X-Amz-Date", "19990101T000000Z")],
        payload_hash=sigv4.EMPTY_SHA256,
        service="dynamodb",
        region="us-east-1",
        credentials=Credentials("AKID", "secret"),
        timestamp="20240102T030405Z",
    )
    # Then each appears once, fresh
    names = [n.lower() for n, _ in signed]
    assert names.count("authorization") == 1 and names.count("x-amz-date") == 1
    assert dict(signed)["X-Amz-Date"] == "20240102T030405Z"
