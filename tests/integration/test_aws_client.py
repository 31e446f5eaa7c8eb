"""The kernel's AWS clients (sds.kernel.aws) against real protocol servers.

moto's server answers S3 and DynamoDB as AWS does: what boto3 writes, the kernel's clients read
back (odd keys, pagination, typed items, AWS's error codes). A scripted local server
(aws_fakes.py) plays what moto will not do on demand: 5xx and throttling, dropped and idle-closed
connections, answers that never come, corrupted bodies, expired credentials, TLS with a
certificate made for the test; it also checks every request's signature as AWS would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sds.kernel.aws.client import ClientConfig, Endpoint
from sds.kernel.aws.credentials import CredentialProvider
from sds.kernel.aws.dynamodb import DynamoDBClient, from_item, to_item
from sds.kernel.aws.errors import AwsConnectionError, AwsError, CredentialsError
from sds.kernel.aws.s3 import S3Client
from sds.kernel.aws.sigv4 import EMPTY_SHA256
from sds.kernel.registry.s3_read import S3ReadStore
from sds.kernel.registry.store import NotFound
from tests.integration.aws_fakes import (
    DROP,
    HANG,
    Answer,
    Received,
    ScriptedServer,
    dynamodb_error,
    json_answer,
    s3_error,
    self_signed_tls,
    signature_is_valid,
)

ROOT = Path(__file__).resolve().parents[2]
FAST = ClientConfig(connect_timeout=2, read_timeout=2, max_attempts=5, base_delay=0.001)
KEYS = {
    "AWS_ACCESS_KEY_ID": "AKIDTEST",
    "AWS_SECRET_ACCESS_KEY": "secret-test",
    "AWS_SESSION_TOKEN": "session-test",
    "AWS_REGION": "eu-west-1",
}


def signed_ok(received: Received, service: str, port: int, region: str = "eu-west-1") -> bool:
    return signature_is_valid(
        received,
        secret_key=KEYS["AWS_SECRET_ACCESS_KEY"],
        service=service,
        region=region,
        host=f"127.0.0.1:{port}",
    )


def dynamodb(server: ScriptedServer, config: ClientConfig = FAST, **env: str) -> DynamoDBClient:
    return DynamoDBClient(
        endpoint_url=server.url, config=config, environ={**KEYS, **env}
    )  # fmt: skip


def s3(server: ScriptedServer, config: ClientConfig = FAST, **env: str) -> S3Client:
    return S3Client(endpoint_url=server.url, config=config, environ={**KEYS, **env})


@pytest.fixture
def scripted() -> Iterator[list[ScriptedServer]]:
    """Servers a test starts; all closed at the end."""
    servers: list[ScriptedServer] = []
    yield servers
    for server in servers:
        server.close()


def serve(servers: list[ScriptedServer], *script: Any, **kwargs: Any) -> ScriptedServer:
    server = ScriptedServer(list(script), **kwargs)
    servers.append(server)
    return server


# S3 on moto -----------------------------------------------------------------------------------

ODD_KEYS = [
    "models/fraud/versions/1/model.onnx",
    "a b/c+d~é%25.txt",
    "what?#[]&=;.json",
    "日本/🚀/./x",
    "trailing/",
]


def test_get_object_reads_back_what_boto3_wrote_under_odd_keys(aws: Any) -> None:
    # Given objects written by boto3, some with characters that need encoding
    bucket = aws.bucket()
    boto = aws.client("s3")
    payload = os.urandom(3 * 1024 * 1024)
    for key in ODD_KEYS:
        boto.put_object(Bucket=bucket, Key=key, Body=payload + key.encode())

    # When the kernel's client reads them (endpoint and credentials from the environment)
    client = S3Client()
    found = {key: client.get_object(bucket, key) for key in ODD_KEYS}

    # Then the bytes and etags are exactly boto3's
    for key in ODD_KEYS:
        assert found[key].data == payload + key.encode()
        assert found[key].etag == boto.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


def test_a_missing_key_is_no_such_key_and_the_registry_store_says_not_found(aws: Any) -> None:
    # Given an empty bucket
    bucket = aws.bucket()

    # When the client and the read-only store ask for a key that is not there
    with pytest.raises(AwsError) as raised:
        S3Client().get_object(bucket, "models/fraud/versions/9/manifest.json")
    with pytest.raises(NotFound, match="models/x: not found"):
        S3ReadStore(bucket).get("models/x")

    # Then the error carries S3's code and status, and names the operation
    assert raised.value.code == "NoSuchKey"
    assert raised.value.status == 404
    assert str(raised.value).startswith("s3 GetObject: NoSuchKey (HTTP 404): ")


def test_a_missing_bucket_is_an_error_naming_it_not_a_missing_key(aws: Any) -> None:
    with pytest.raises(AwsError) as raised:
        S3ReadStore("sds-no-such-bucket-here").get("k")

    assert raised.value.code == "NoSuchBucket"


def test_listing_follows_continuations_and_decodes_keys(aws: Any) -> None:
    # Given more keys than one page holds, some with odd characters, and one outside the prefix
    bucket = aws.bucket()
    boto = aws.client("s3")
    keys = [f"p/{i:02d}-{name}" for i, name in enumerate(["a", "b c", "é", "x&y", "<z>", "+"])]
    for key in [*keys, "q/other"]:
        boto.put_object(Bucket=bucket, Key=key, Body=b"x")

    # When the client lists the prefix two keys at a time
    listed = S3Client().list_objects_v2(bucket, "p/", page_size=2)

    # Then every key under it comes back once, decoded, in S3's order
    assert listed == sorted(keys)


# DynamoDB on moto ------------------------------------------------------------------------------


@pytest.fixture
def aggregates(aws: Any) -> str:
    """A table with a partition and a sort key, items written by boto3."""
    boto = aws.client("dynamodb")
    table = "aggregates"
    boto.create_table(
        TableName=table,
        KeySchema=[
            {"AttributeName": "entity", "KeyType": "HASH"},
            {"AttributeName": "bucket", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "entity", "AttributeType": "S"},
            {"AttributeName": "bucket", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    for account in ("acct-1", "acct-2"):
        for bucket in range(5):
            boto.put_item(
                TableName=table,
                Item={
                    "entity": {"S": account},
                    "bucket": {"N": str(bucket)},
                    "count": {"N": str(bucket * 10)},
                    "amount": {"N": "12.5"},
                    "tags": {"SS": ["a", "b"]},
                    "detail": {"M": {"ok": {"BOOL": True}, "none": {"NULL": True}}},
                },
            )
    return table


def test_get_item_reads_what_boto3_put(aggregates: str) -> None:
    client = DynamoDBClient()

    item = client.get_item(aggregates, {"entity": {"S": "acct-1"}, "bucket": {"N": "3"}})
    absent = client.get_item(aggregates, {"entity": {"S": "acct-9"}, "bucket": {"N": "3"}})

    assert item is not None
    assert from_item(item) == {
        "entity": "acct-1",
        "bucket": 3,
        "count": 30,
        "amount": 12.5,
        "tags": {"a", "b"},
        "detail": {"ok": True, "none": None},
    }
    assert absent is None


def test_batch_get_item_returns_every_requested_item(aggregates: str) -> None:
    keys = [to_item({"entity": f"acct-{a}", "bucket": b}) for a in (1, 2) for b in (0, 4)]

    found = DynamoDBClient().batch_get_item({aggregates: {"Keys": keys}})

    assert sorted((i["entity"]["S"], i["bucket"]["N"]) for i in found[aggregates]) == [
        ("acct-1", "0"), ("acct-1", "4"), ("acct-2", "0"), ("acct-2", "4"),
    ]  # fmt: skip


def test_query_returns_a_partitions_items_in_key_order_up_to_a_limit(aggregates: str) -> None:
    request = {
        "TableName": aggregates,
        "KeyConditionExpression": "entity = :e AND #b >= :from",
        "ExpressionAttributeNames": {"#b": "bucket"},
        "ExpressionAttributeValues": {":e": {"S": "acct-2"}, ":from": {"N": "1"}},
    }

    every = DynamoDBClient().query(request)
    limited = DynamoDBClient().query({**request, "Limit": 2, "ScanIndexForward": False})

    assert [from_item(i)["bucket"] for i in every] == [1, 2, 3, 4]
    assert [from_item(i)["bucket"] for i in limited] == [4, 3]


def test_dynamodb_errors_carry_the_aws_code(aggregates: str) -> None:
    client = DynamoDBClient()

    with pytest.raises(AwsError) as missing_table:
        client.get_item("no-such-table", {"entity": {"S": "x"}})
    with pytest.raises(AwsError) as bad_key:
        client.get_item(aggregates, {"entity": {"S": "acct-1"}})  # no sort key

    assert missing_table.value.code == "ResourceNotFoundException"
    assert missing_table.value.status == 400
    assert str(missing_table.value).startswith("dynamodb GetItem: ResourceNotFoundException")
    assert bad_key.value.code == "ValidationException"


def test_the_plain_http_path_imports_neither_the_sdk_nor_ssl_nor_http_client(aws: Any) -> None:
    # Given a registry object on moto's plain-http endpoint
    bucket = aws.bucket()
    aws.client("s3").put_object(Bucket=bucket, Key="k", Body=b"v")
    probe = (
        "import sys\n"
        "from sds.kernel.registry import open_store\n"
        f"assert open_store('s3://{bucket}', read_only=True).get('k').data == b'v'\n"
        "print(sorted(m for m in ('boto3', 'botocore', 'ssl', 'http.client', 'email')"
        " if m in sys.modules))\n"
    )

    # When a fresh interpreter reads it through the read-only store
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **aws.environment},
        timeout=60,
    )

    # Then none of those modules was loaded
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# Retries, connections and errors on the scripted server ---------------------------------------


def test_5xx_and_throttling_are_retried_each_attempt_signed(
    scripted: list[ScriptedServer],
) -> None:
    # Given a server that fails three ways before answering
    server = serve(
        scripted,
        dynamodb_error("InternalServerError", "oops", 500),
        Answer(503, b"Service Unavailable"),
        dynamodb_error("ProvisionedThroughputExceededException", "slow down"),
        json_answer({"Item": {"k": {"S": "v"}}}),
    )

    # When a GetItem is sent
    item = dynamodb(server).get_item("t", {"k": {"S": "v"}})

    # Then it succeeds on the fourth attempt, every attempt correctly signed
    assert item == {"k": {"S": "v"}}
    assert len(server.received) == 4
    assert all(signed_ok(r, "dynamodb", server.port) for r in server.received)
    assert {r.headers["x-amz-target"] for r in server.received} == {"DynamoDB_20120810.GetItem"}


def test_a_client_error_is_not_retried(scripted: list[ScriptedServer]) -> None:
    server = serve(scripted, dynamodb_error("ValidationException", "bad key"))

    with pytest.raises(AwsError) as raised:
        dynamodb(server).get_item("t", {"k": {"S": "v"}})

    assert raised.value.code == "ValidationException"
    assert len(server.received) == 1


def test_retries_are_bounded(scripted: list[ScriptedServer]) -> None:
    # Given a server that always throttles
    server = serve(scripted, dynamodb_error("ThrottlingException", "rate exceeded"))

    # When a call is made with 3 attempts allowed
    with pytest.raises(AwsError) as raised:
        dynamodb(server, ClientConfig(max_attempts=3, base_delay=0.001)).call("Query", {})

    # Then exactly 3 requests were made and the error says so
    assert len(server.received) == 3
    assert raised.value.code == "ThrottlingException"
    assert "gave up after 3 attempts" in raised.value.__notes__


def test_a_dropped_connection_is_retried_on_a_new_one(scripted: list[ScriptedServer]) -> None:
    server = serve(scripted, DROP, Answer(200, b"model bytes", {"ETag": '"e1"'}))

    found = s3(server).get_object("bucket", "k")

    assert found.data == b"model bytes" and found.etag == "e1"
    assert server.connections == 2
    assert all(signed_ok(r, "s3", server.port) for r in server.received)


def test_connections_are_kept_alive_across_calls(scripted: list[ScriptedServer]) -> None:
    server = serve(scripted, Answer(200, b"x", {"ETag": '"e"'}))
    client = s3(server)

    for _ in range(5):
        client.get_object("bucket", "k")

    assert len(server.received) == 5
    assert server.connections == 1


def test_an_idle_connection_the_server_closed_is_replaced_without_a_retry(
    scripted: list[ScriptedServer],
) -> None:
    # Given a server that closes each connection after answering, without saying so
    server = serve(scripted, Answer(200, b"x", {"ETag": '"e"'}, close_after=True))
    client = s3(server, ClientConfig(max_attempts=1))

    # When the client makes a second call on what it kept alive
    client.get_object("bucket", "a")
    time.sleep(0.1)
    client.get_object("bucket", "b")

    # Then the call succeeds on a new connection, with no attempt wasted
    assert [r.target for r in server.received] == ["/bucket/a", "/bucket/b"]
    assert server.connections == 2


def test_a_keep_alive_connection_dropped_as_the_request_goes_out_is_reconnected_once(
    scripted: list[ScriptedServer],
) -> None:
    # Given a server that answers, then drops the kept-alive connection on the next request
    ok = Answer(200, b"x", {"ETag": '"e"'})
    server = serve(scripted, ok, DROP, ok)
    client = s3(server, ClientConfig(max_attempts=1))  # no retries: only the reconnect
    client.get_object("bucket", "a")

    # When the next call meets the dropped connection
    found = client.get_object("bucket", "b")

    # Then the request went once more on a new connection and succeeded
    assert found.data == b"x"
    assert [r.connection for r in server.received] == [1, 1, 2]


def test_an_answer_that_never_comes_times_out_and_is_retried_within_bounds(
    scripted: list[ScriptedServer],
) -> None:
    server = serve(scripted, HANG)
    config = ClientConfig(read_timeout=0.3, max_attempts=2, base_delay=0.001)

    started = time.monotonic()
    with pytest.raises(AwsConnectionError) as raised:
        dynamodb(server, config).call("GetItem", {})

    assert raised.value.code == "Timeout"
    assert len(server.received) == 2
    assert time.monotonic() - started < 5


def test_an_unreachable_endpoint_is_a_connection_error_naming_it() -> None:
    client = DynamoDBClient(
        endpoint_url="http://127.0.0.1:9",
        config=ClientConfig(connect_timeout=0.5, max_attempts=2, base_delay=0.001),
        environ=KEYS,
    )

    with pytest.raises(AwsConnectionError, match=r"cannot talk to http://127\.0\.0\.1:9") as raised:
        client.call("GetItem", {})

    assert raised.value.code == "ConnectionError"


def test_a_corrupted_dynamodb_body_is_detected_by_its_crc32_and_retried(
    scripted: list[ScriptedServer],
) -> None:
    good = json_answer({"Item": {"k": {"N": "1"}}})
    corrupted = Answer(200, good.body.replace(b"1", b"2"), dict(good.headers))
    server = serve(scripted, corrupted, good)

    assert dynamodb(server).get_item("t", {"k": {"S": "v"}}) == {"k": {"N": "1"}}
    assert len(server.received) == 2


def test_chunked_answers_are_read(scripted: list[ScriptedServer]) -> None:
    body = os.urandom(100_000)
    server = serve(scripted, Answer(200, body, {"ETag": '"c"'}, chunked=True))
    client = s3(server)

    assert client.get_object("bucket", "k").data == body
    assert client.get_object("bucket", "k").data == body  # the connection survived the trailer
    assert server.connections == 1


def test_query_follows_last_evaluated_key(scripted: list[ScriptedServer]) -> None:
    last = {"entity": {"S": "a"}, "bucket": {"N": "2"}}
    server = serve(
        scripted,
        json_answer({"Items": [{"n": {"N": "1"}}, {"n": {"N": "2"}}], "LastEvaluatedKey": last}),
        json_answer({"Items": [{"n": {"N": "3"}}]}),
    )

    items = dynamodb(server).query({"TableName": "t", "KeyConditionExpression": "x"})

    assert [i["n"]["N"] for i in items] == ["1", "2", "3"]
    assert "ExclusiveStartKey" not in json.loads(server.received[0].body)
    assert json.loads(server.received[1].body)["ExclusiveStartKey"] == last


def test_batch_get_item_fetches_unprocessed_keys_again(scripted: list[ScriptedServer]) -> None:
    wanted = {"t": {"Keys": [{"k": {"S": "1"}}, {"k": {"S": "2"}}]}}
    server = serve(
        scripted,
        json_answer(
            {
                "Responses": {"t": [{"k": {"S": "1"}}]},
                "UnprocessedKeys": {"t": {"Keys": [{"k": {"S": "2"}}]}},
            }
        ),
        json_answer({"Responses": {"t": [{"k": {"S": "2"}}]}, "UnprocessedKeys": {}}),
    )

    found = dynamodb(server).batch_get_item(wanted)

    assert found == {"t": [{"k": {"S": "1"}}, {"k": {"S": "2"}}]}
    assert json.loads(server.received[1].body) == {
        "RequestItems": {"t": {"Keys": [{"k": {"S": "2"}}]}}
    }


def test_an_s3_bucket_in_another_region_is_followed_once_and_remembered(
    scripted: list[ScriptedServer],
) -> None:
    # Given S3 saying the bucket lives in us-west-2 (the client is in eu-west-1)
    server = serve(
        scripted,
        s3_error("PermanentRedirect", "wrong region", 301, **{"x-amz-bucket-region": "us-west-2"}),
        Answer(200, b"x", {"ETag": '"e"'}),
    )
    client = s3(server)
    aws_like = Endpoint("http", "127.0.0.1", server.port, custom=False)
    client.endpoint = aws_like
    client.default_endpoint = lambda region: aws_like  # type: ignore[method-assign]

    # When an object of a (path-style) bucket is read twice
    client.get_object("my.bucket", "k")
    client.get_object("my.bucket", "k")

    # Then the retry and the next call are signed for the bucket's region
    scopes = [r.headers["authorization"].split("/")[2] for r in server.received]
    assert scopes == ["eu-west-1", "us-west-2", "us-west-2"]
    assert signed_ok(server.received[1], "s3", server.port, region="us-west-2")


# Credentials and TLS ---------------------------------------------------------------------------


def test_container_credentials_are_fetched_with_the_token_cached_and_refreshed_when_expired(
    scripted: list[ScriptedServer], tmp_path: Path
) -> None:
    # Given a container credentials endpoint (as on a SnapStart Lambda) and a token file
    issued = iter(range(1, 100))

    def credentials(received: Received) -> Answer:
        assert received.headers.get("authorization") == "container-token"
        n = next(issued)
        return json_answer(
            {
                "AccessKeyId": f"ASIA{n}",
                "SecretAccessKey": "secret-test",
                "Token": f"token-{n}",
                "Expiration": "2099-01-01T00:00:00Z",
            }
        )

    endpoint = serve(scripted, credentials)
    token_file = tmp_path / "token"
    token_file.write_text("container-token\n")
    # and a service that says the first credentials expired
    service = serve(
        scripted,
        s3_error("ExpiredToken", "The provided token has expired.", 400),
        Answer(200, b"x", {"ETag": '"e"'}),
    )
    environ = {
        "AWS_REGION": "eu-west-1",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{endpoint.url}/2021-04-23/credentials",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
    }
    client = S3Client(endpoint_url=service.url, config=FAST, environ=environ)

    # When two objects are read
    client.get_object("bucket", "a")
    client.get_object("bucket", "b")

    # Then credentials were fetched once, fetched again after the expiry, and then cached
    assert [r.target for r in endpoint.received] == ["/2021-04-23/credentials"] * 2
    tokens = [r.headers["x-amz-security-token"] for r in service.received]
    assert tokens == ["token-1", "token-2", "token-2"]
    assert all(signed_ok(r, "s3", service.port) for r in service.received)


def test_no_credentials_is_a_clear_error() -> None:
    with pytest.raises(CredentialsError, match="no AWS credentials: set AWS_ACCESS_KEY_ID"):
        CredentialProvider({"AWS_REGION": "eu-west-1"}).get()


def test_https_with_a_trusted_certificate_works_and_an_untrusted_one_is_refused_at_once(
    scripted: list[ScriptedServer], tmp_path: Path
) -> None:
    # Given a TLS server with a certificate made for this test
    context, ca_file = self_signed_tls(tmp_path)
    server = serve(scripted, Answer(200, b"secret model", {"ETag": '"e"'}), tls=context)

    # When the client trusts it through AWS_CA_BUNDLE, and when it does not
    trusted = s3(server, AWS_CA_BUNDLE=str(ca_file)).get_object("bucket", "k")
    with pytest.raises(AwsConnectionError) as refused:
        s3(server).get_object("bucket", "k")

    # Then the trusted read works, signed (the empty body's hash included, as botocore does)...
    assert trusted.data == b"secret model"
    assert server.received[0].headers["x-amz-content-sha256"] == EMPTY_SHA256
    assert signed_ok(server.received[0], "s3", server.port)
    # ...and the untrusted certificate fails at once, never retried, never read
    assert refused.value.code == "CertificateVerifyFailed"
    assert len(server.received) == 1
    assert server.connections == 2


def test_a_certificate_outside_the_first_trust_store_is_verified_against_the_next(
    scripted: list[ScriptedServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import ssl

    from sds.kernel.aws.transport import Connection

    # Given a server whose CA is only in the second of two trust stores (as for an AWS host
    # whose certificate would not chain to the Amazon roots but does to the system store)
    context, ca_file = self_signed_tls(tmp_path)
    server = serve(scripted, Answer(200, b"ok"), tls=context)
    first = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    second = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    second.load_verify_locations(cafile=ca_file)
    connection = Connection(
        "https", "127.0.0.1", server.port, connect_timeout=2, read_timeout=2,
        tls=lambda host: [first, second],
    )  # fmt: skip

    # When a request goes out
    with caplog.at_level("WARNING", logger="sds.aws"):
        response = connection.request("GET", "/", [("Host", f"127.0.0.1:{server.port}")])

    # Then the handshake failed against the first store, succeeded against the second, and
    # the fallback is logged
    assert response.status == 200 and response.body == b"ok"
    assert server.connections == 2
    assert "did not chain to the first trust store" in caplog.text
    connection.close()


def test_a_connection_idle_for_too_long_is_not_reused(scripted: list[ScriptedServer]) -> None:
    # Given a client that reuses connections idle for at most 0.2 s (as after a Lambda freeze)
    server = serve(scripted, Answer(200, b"x", {"ETag": '"e"'}))
    client = s3(server, ClientConfig(max_idle=0.2, max_attempts=1))

    # When calls come quickly, then after a longer pause
    client.get_object("bucket", "a")
    client.get_object("bucket", "b")
    time.sleep(0.4)
    client.get_object("bucket", "c")

    # Then the quick calls shared a connection and the late one opened a new one
    assert [r.connection for r in server.received] == [1, 1, 2]
