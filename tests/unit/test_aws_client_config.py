"""How the kernel's AWS clients read their configuration, the way the SDK does: region, endpoint
(`AWS_ENDPOINT_URL_<SERVICE>` before `AWS_ENDPOINT_URL`), S3 addressing, credentials sources,
TLS roots, and DynamoDB's typed values (boto3's serializer is the oracle). Nothing here opens a
connection."""

from __future__ import annotations

import datetime as dt
import re
import ssl
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

import certifi
import pytest
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import NoRegionError
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from sds.kernel.aws import trust
from sds.kernel.aws.client import Endpoint
from sds.kernel.aws.credentials import CredentialProvider
from sds.kernel.aws.dynamodb import DynamoDBClient, from_attribute, to_attribute
from sds.kernel.aws.errors import ConfigurationError, CredentialsError
from sds.kernel.aws.s3 import S3Client
from sds.kernel.aws.transport import _serialize

KEYS = {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"}


def test_the_region_comes_from_aws_region_then_aws_default_region() -> None:
    assert S3Client(environ={**KEYS, "AWS_REGION": "eu-west-1"}).region == "eu-west-1"
    assert S3Client(environ={**KEYS, "AWS_DEFAULT_REGION": "ap-south-1"}).region == "ap-south-1"
    with pytest.raises(ConfigurationError, match="no AWS region: set AWS_REGION"):
        S3Client(environ=KEYS)


@pytest.mark.parametrize(
    ("variables", "profile_region", "expected"),
    [
        ({"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "ap-south-1"}, "ca-central-1",
         "eu-west-1"),
        ({"AWS_DEFAULT_REGION": "ap-south-1"}, "ca-central-1", "ap-south-1"),
        ({}, "ca-central-1", "ca-central-1"),
        ({}, None, "us-west-2"),  # nothing configured: the default a command set (cdk.json's)
    ],
)  # fmt: skip
def test_the_sdk_clients_region_is_aws_region_then_the_sdk_s_own_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    variables: dict[str, str],
    profile_region: str | None,
    expected: str,
) -> None:
    import boto3

    from sds.kernel import sdk

    config = tmp_path / "config"
    config.write_text(f"[default]\nregion = {profile_region}\n" if profile_region else "")
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**KEYS, **variables, "AWS_CONFIG_FILE": str(config)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)

    with sdk.default_region("us-west-2"):
        assert sdk.client("ssm").meta.region_name == expected
    if not variables and not profile_region:  # and once the command is done, none again
        with pytest.raises(NoRegionError):
            sdk.client("ssm")


def test_the_service_endpoint_variable_wins_over_the_global_one() -> None:
    env = {
        **KEYS,
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://localhost:4566",
        "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:8000/",
    }

    assert DynamoDBClient(environ=env).endpoint == Endpoint("http", "127.0.0.1", 8000, "", True)
    assert S3Client(environ=env).endpoint == Endpoint("http", "localhost", 4566, "", True)


def test_configured_endpoints_can_be_ignored_as_the_sdk_allows() -> None:
    env = {
        **KEYS,
        "AWS_REGION": "cn-north-1",
        "AWS_ENDPOINT_URL": "http://localhost:4566",
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true",
    }

    assert DynamoDBClient(environ=env).endpoint.host == "dynamodb.cn-north-1.amazonaws.com.cn"


@pytest.mark.parametrize(
    "url", ["localhost:4566", "ftp://host", "http://", "http://host:notaport", "http://h/?q=1"]
)
def test_a_malformed_endpoint_url_is_refused_naming_the_variable(url: str) -> None:
    env = {**KEYS, "AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL_S3": url}

    with pytest.raises(ConfigurationError, match="AWS_ENDPOINT_URL_S3="):
        S3Client(environ=env)


def test_fips_and_dual_stack_are_refused_rather_than_silently_ignored() -> None:
    for flag in ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT"):
        with pytest.raises(ConfigurationError, match=f"{flag}=true is not supported"):
            S3Client(environ={**KEYS, "AWS_REGION": "us-east-1", flag: "true"})


@pytest.mark.parametrize(
    ("bucket", "key", "host", "path"),
    [
        ("sds-registry-dev", "models/a b.json", "sds-registry-dev.s3.eu-west-1.amazonaws.com",
         "/models/a%20b.json"),
        ("my.dotted.bucket", "k~1", "s3.eu-west-1.amazonaws.com", "/my.dotted.bucket/k~1"),
        ("sds-registry-dev", "", "sds-registry-dev.s3.eu-west-1.amazonaws.com", "/"),
        ("my.dotted.bucket", "", "s3.eu-west-1.amazonaws.com", "/my.dotted.bucket"),
    ],
)  # fmt: skip
def test_s3_addressing_is_virtual_hosted_where_the_certificate_allows_it(
    bucket: str, key: str, host: str, path: str
) -> None:
    client = S3Client(environ={**KEYS, "AWS_REGION": "eu-west-1"})

    endpoint, wire_path = client._address(bucket, key, "eu-west-1")

    assert (endpoint.scheme, endpoint.host, endpoint.port, wire_path) == ("https", host, 443, path)


def test_s3_on_a_custom_endpoint_is_path_style() -> None:
    client = S3Client(environ={**KEYS, "AWS_REGION": "eu-west-1",
                               "AWS_ENDPOINT_URL": "http://127.0.0.1:5000/base"})  # fmt: skip

    endpoint, wire_path = client._address("sds-registry-dev", "k", "eu-west-1")

    assert endpoint.netloc == "127.0.0.1:5000"
    assert endpoint.base_path + wire_path == "/base/sds-registry-dev/k"


def test_partial_static_credentials_are_refused_naming_the_missing_variable() -> None:
    with pytest.raises(CredentialsError, match="AWS_SECRET_ACCESS_KEY is not set"):
        CredentialProvider({"AWS_ACCESS_KEY_ID": "AKID"}).get()


def test_static_credentials_come_from_the_environment_with_the_session_token() -> None:
    got = CredentialProvider({**KEYS, "AWS_SESSION_TOKEN": "tok"}).get()

    assert (got.access_key, got.secret_key, got.token) == ("AKID", "secret", "tok")


@pytest.mark.parametrize(
    "uri", ["http://10.0.0.5/creds", "http://example.com/creds", "http://169.254.169.254/x"]
)
def test_a_plain_http_credentials_endpoint_off_the_host_is_refused(uri: str) -> None:
    provider = CredentialProvider({"AWS_CONTAINER_CREDENTIALS_FULL_URI": uri})

    with pytest.raises(CredentialsError, match="plain http is allowed only to a loopback"):
        provider.get()


def test_a_header_with_a_line_break_is_never_sent() -> None:
    with pytest.raises(ValueError, match="contains a line break"):
        _serialize("GET", "/", [("X-Evil", "a\r\nInjected: yes")], b"")


# TLS roots --------------------------------------------------------------------------------------


def _certificates(pem: str) -> list[x509.Certificate]:
    with warnings.catch_warnings():
        # Starfield Services Root CA G2 has serial number 0, which RFC 5280 disallows and
        # cryptography warns about; Mozilla and every TLS stack accept it.
        warnings.simplefilter("ignore")
        return x509.load_pem_x509_certificates(pem.encode())


def test_the_shipped_amazon_roots_are_mozillas_own_and_valid_for_years() -> None:
    # Given the roots in the kernel and Mozilla's bundle (certifi)
    shipped = _certificates(trust.AMAZON_ROOTS_PEM)
    mozilla = Path(certifi.where()).read_text()
    names = sorted(c.subject.rfc4514_string() for c in shipped)

    # Then they are the five Amazon Trust Services roots, byte for byte as Mozilla ships them
    assert names == [
        "CN=Amazon Root CA 1,O=Amazon,C=US",
        "CN=Amazon Root CA 2,O=Amazon,C=US",
        "CN=Amazon Root CA 3,O=Amazon,C=US",
        "CN=Amazon Root CA 4,O=Amazon,C=US",
        "CN=Starfield Services Root Certificate Authority - G2,O=Starfield Technologies\\, "
        "Inc.,L=Scottsdale,ST=Arizona,C=US",
    ]
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                        trust.AMAZON_ROOTS_PEM, re.S)  # fmt: skip
    assert len(blocks) == 5 and all(block in mozilla for block in blocks)
    for cert in shipped:
        # and none expires within five years (the earliest, Starfield's, runs to 2037)
        assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=5 * 365)


def test_aws_hosts_try_the_amazon_roots_first_and_others_the_system_store() -> None:
    aws = trust.contexts_for("sds-registry.s3.eu-west-1.amazonaws.com", {})
    china = trust.contexts_for("dynamodb.cn-north-1.amazonaws.com.cn", {})
    other = trust.contexts_for("minio.example.com", {})

    assert len(aws) == 2 and aws[0].cert_store_stats()["x509_ca"] == 5
    assert china[0] is aws[0]
    assert len(other) == 1 and other[0] is aws[1]
    for context in (*aws, *other):
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_aws_ca_bundle_replaces_every_trust_store(tmp_path: Any) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text(trust.AMAZON_ROOTS_PEM.split("# Amazon Root CA 2")[0])

    (only,) = trust.contexts_for("s3.amazonaws.com", {"AWS_CA_BUNDLE": str(bundle)})
    assert only.cert_store_stats()["x509_ca"] == 1
    with pytest.raises(ConfigurationError, match="AWS_CA_BUNDLE=/nonexistent"):
        trust.contexts_for("s3.amazonaws.com", {"AWS_CA_BUNDLE": "/nonexistent"})


# DynamoDB typed values, against boto3's serializer ----------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.text(max_size=10),
    st.binary(max_size=10),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(VALUES)
def test_typed_values_match_boto3s_serializer_and_round_trip(value: Any) -> None:
    ours = to_attribute(value)
    expected = TypeSerializer().serialize(value)

    assert _normalize(ours) == _normalize(expected)
    assert from_attribute(ours) == _plain(TypeDeserializer().deserialize(expected))


def _normalize(attribute: Any) -> Any:
    """An attribute value in its wire form (boto3 keeps binary values as bytes, the wire and the
    kernel have base64)."""
    import base64

    ((kind, value),) = attribute.items()
    if kind == "B" and not isinstance(value, str):
        return {"B": base64.b64encode(bytes(value)).decode()}
    if kind == "M":
        return {"M": {name: _normalize(v) for name, v in value.items()}}
    if kind == "L":
        return {"L": [_normalize(v) for v in value]}
    return attribute


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "value"):  # boto3's Binary
        return bytes(value.value)
    return value


def test_numbers_that_are_not_finite_are_refused() -> None:
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            to_attribute(bad)
    assert to_attribute(0.1) == {"N": "0.1"}
    assert from_attribute({"N": "1e3"}) == 1000.0
