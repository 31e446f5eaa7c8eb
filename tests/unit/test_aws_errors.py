"""AWS answers moto does not give, as `sds --aws` says them: credentials AWS rejects, access
denied, a body the SDK cannot parse (XML to a JSON-protocol caller, a proxy's HTML page).

A stand-in endpoint (`AWS_ENDPOINT_URL`) answers every request with what the test sets, so the
real SDK clients, the kernel's own S3 client and the CLI's rendering all run as against AWS. Each
error is one line on stderr that names what failed and the fix (`sds.kernel.aws.errors`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError, ProfileNotFound

from sds.cli.render import report_error
from sds.kernel.aws.errors import AwsError, AwsFailure, error_code, error_status, explain, one_line
from sds.kernel.aws.s3 import S3Client
from sds.kernel.registry.s3_read import S3ReadStore
from tests.unit.cli_run import sds

ROOT = Path(__file__).resolve().parents[2]
REFRESH = "refresh them (aws configure, AWS_PROFILE, aws sso login)"
# What moto (and AWS's query-protocol services) answer a JSON-protocol call with a bad token.
TOKEN_REJECTED = (
    '<?xml version="1.0" encoding="utf-8"?>\n<ErrorResponse><Errors><Error>'
    "<Code>InvalidClientTokenId</Code><Message>The security token included in the request is "
    "invalid.</Message><Type>Sender</Type></Error></Errors></ErrorResponse>"
)
PROXY_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>\n<body>\n"
    "<h1>Blocked by the corporate proxy</h1>\n</body></html>\n"
)


def s3_error(code: str, message: str) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>R1</RequestId></Error>"
    )


@dataclass
class StandIn:
    """An endpoint answering every request with `status`, `body`, `content_type`."""

    endpoint: str
    status: int = 403
    body: str = ""
    content_type: str = "text/xml"

    def answer(self, status: int, body: str, content_type: str = "text/xml") -> None:
        self.status, self.body, self.content_type = status, body, content_type


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    answers: list[StandIn] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            answer = answers[0]
            data = answer.body.encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_HEAD = _answer

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    answers.append(StandIn(endpoint=f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name, value in {
        "AWS_ENDPOINT_URL": answers[0].endpoint,
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "SDS_PROJECT_DIR": str(ROOT),
        "SDS_HOME": str(tmp_path / "state"),
        "SDS_LOCK_FILE": str(tmp_path / "models.lock.json"),
        "SDS_TARGET": "aws",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "SDS_REGISTRY_DEV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    try:
        yield answers[0]
    finally:
        server.shutdown()
        server.server_close()


def test_credentials_ssm_rejects_in_a_body_the_sdk_cannot_parse_are_one_line(
    stand_in: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given SSM answers 403 with an XML body (the SDK expects JSON: it keeps the raw body)
    stand_in.answer(403, TOKEN_REJECTED)

    # When any --aws command reads its discovery parameters
    ended = sds(capsys, "--aws", "rollback", "--env", "dev", "--reason", "r")

    # Then stderr is one line: AWS's own code, found in the body, and how to refresh
    assert (ended.code, ended.err) == (
        1,
        f"sds: error: AWS rejected the credentials (InvalidClientTokenId): {REFRESH}\n",
    )


def test_an_access_key_s3_does_not_know_is_rejected_credentials(
    stand_in: StandIn, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given dev's registry named by SDS_REGISTRY_DEV, and S3 does not know the access key
    monkeypatch.setenv("SDS_REGISTRY_DEV", "s3://sds-registry-x")
    stand_in.answer(403, s3_error("InvalidAccessKeyId", "does not exist in our records."))

    # When listing dev's models
    ended = sds(capsys, "--aws", "models", "--env", "dev")

    # Then one line says AWS rejected the credentials, and how to refresh them
    assert (ended.code, ended.err) == (
        1,
        f"sds: error: AWS rejected the credentials (InvalidAccessKeyId): {REFRESH}\n",
    )


def test_access_denied_names_the_action_the_bucket_and_the_operator_policy(
    stand_in: StandIn, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given S3 denies the caller dev's registry bucket
    monkeypatch.setenv("SDS_REGISTRY_DEV", "s3://sds-registry-x")
    stand_in.answer(403, s3_error("AccessDenied", "Access Denied"))

    # When listing dev's models
    ended = sds(capsys, "--aws", "models", "--env", "dev")

    # Then one line names the call, the bucket, and the policy that grants it
    line = ended.error_line
    assert ended.code == 1 and ended.err == line + "\n"
    assert line.startswith("sds: error: listing s3://sds-registry-x/")
    assert "access denied to ListObjectsV2 on registry bucket sds-registry-x" in line
    assert "PromoterPolicyArn" in line and "docs/infrastructure.md" in line


@pytest.mark.parametrize("as_json", [False, True], ids=["stderr", "json"])
def test_a_proxys_html_page_is_cut_to_one_line(
    stand_in: StandIn, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    # Given a proxy answers SSM's calls with an HTML page
    stand_in.answer(403, PROXY_PAGE, "text/html")

    # When a command reads its discovery parameters
    ended = sds(capsys, "--aws", *(["--json"] if as_json else []), "models", "--env", "dev")

    # Then the error is one line without the page, saying what came back
    said = "reading SSM parameters /sds/dev/*: GetParameters: 403: an HTML page, not an AWS answer"
    assert ended.code == 1
    assert ended.err.startswith(f"sds: error: {said}") and ended.err.count("\n") == 1
    assert "<" not in ended.err
    if as_json:
        assert ended.json()["error"]["message"] == ended.err.removeprefix("sds: error: ").strip()


def test_the_kernel_s3_client_names_the_bucket_that_is_gone_and_where_its_name_came_from(
    stand_in: StandIn,
) -> None:
    # Given the Lambda's read path (no SDK) and a bucket S3 does not have
    stand_in.answer(404, s3_error("NoSuchBucket", "The specified bucket does not exist"))
    store = S3ReadStore("sds-registry-gone", client=S3Client(), source="REGISTRY_URI")

    # When reading from it
    with pytest.raises(AwsFailure) as raised:
        store.get("models/fraud/aliases/dev.json")

    # Then the error names the bucket and where its name came from; AWS's code is kept
    assert str(raised.value) == (
        "registry bucket sds-registry-gone (from REGISTRY_URI) does not exist: check REGISTRY_URI"
    )
    assert raised.value.code == "NoSuchBucket" and raised.value.status == 404


@pytest.mark.parametrize(
    "code",
    ["ExpiredToken", "InvalidClientTokenId", "InvalidAccessKeyId", "SignatureDoesNotMatch"],
)
def test_every_kind_of_rejected_credentials_says_refresh_them(code: str) -> None:
    # Given AWS rejected the credentials, however it spells it
    error = ClientError({"Error": {"Code": code, "Message": "..."}}, "GetObject")

    # When explained, Then it says so, with AWS's code, and how to refresh them
    failure = explain(error, doing="reading s3://b/k", resource="registry bucket b")
    assert str(failure) == f"AWS rejected the credentials ({code}): {REFRESH}"


def test_the_sdks_own_failures_and_anything_else() -> None:
    # Given the SDK's errors without an AWS answer, the kernel's own, and a non-AWS error
    # When explained, Then each says what to do; a non-AWS error is not explained
    assert str(explain(NoCredentialsError())).startswith("no AWS credentials: configure them")
    assert str(explain(NoRegionError())).startswith("no AWS region: set AWS_REGION")
    kernel = AwsError("no AWS region: set AWS_REGION", code="NoRegion")
    assert str(explain(kernel)).startswith("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION")
    throttled = ClientError({"Error": {"Code": "ThrottlingException"}}, "GetParameters")
    assert "throttled" in str(explain(throttled, doing="reading SSM parameters /sds/dev/*"))
    assert str(explain(ProfileNotFound(profile="nope"))) == (
        "unusable AWS credentials (The config profile (nope) could not be found): "
        "fix them (aws configure, AWS_PROFILE, aws sso login)"
    )
    assert str(explain(S3UploadFailedError("Failed to upload x"))).endswith("Failed to upload x")
    assert explain(ValueError("not AWS")) is None


def test_one_line_collapses_lines_and_keeps_what_a_raw_body_says() -> None:
    # Given messages with line breaks, and raw XML bodies with and without AWS's code
    # When fit on one line
    # Then whitespace is collapsed and a body is cut to its code and message
    assert one_line("first\n  second\tthird\n") == "first second third"
    assert one_line(f"GetParameters: 403: {TOKEN_REJECTED}") == (
        "GetParameters: 403: InvalidClientTokenId: "
        "The security token included in the request is invalid."
    )
    assert one_line(PROXY_PAGE) == "an HTML page, not an AWS answer (a proxy in the way?)"


def test_report_error_prints_any_error_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # Given an error whose message spans lines (a library's, not sds's)
    error = OSError("cannot write out.json:\n  disk full")

    # When reported, with and without --json
    code = report_error(error, as_json=True)

    # Then stderr and the JSON document carry the same single line
    out, err = capsys.readouterr()
    assert (code, err) == (1, "sds: error: cannot write out.json: disk full\n")
    assert '"message": "cannot write out.json: disk full"' in out


def test_a_denied_batch_run_names_the_batch_operator_policy() -> None:
    # Given Step Functions refusing to start an execution of the batch state machine
    denied = ClientError(
        {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}},
        "StartExecution",
    )
    # When explained, Then the line names the policy that grants it, with the others
    said = str(explain(denied, doing="starting dev's batch state machine"))
    assert "access denied to StartExecution" in said
    assert "BatchOperatorPolicyArn to score and backfill on AWS" in said
    assert "PromoterPolicyArn" in said and "TrainingOperatorPolicyArn" in said


def test_a_failures_code_and_status_are_read_alike_from_the_kernels_and_the_sdks_errors() -> None:
    # Given the same 412 as the kernel's client raises it and as the SDK raises it
    ours = AwsFailure(
        "At least one of the preconditions failed",
        service="s3",
        operation="PutObject",
        code="PreconditionFailed",
        status=412,
    )
    theirs = ClientError(
        {
            "Error": {
                "Code": "PreconditionFailed",
                "Message": "At least one of the preconditions failed",
            },
            "ResponseMetadata": {"HTTPStatusCode": 412},
        },
        "PutObject",
    )
    # Then both give their code and status; an error without an answer gives neither
    assert [(error_code(e), error_status(e)) for e in (ours, theirs)] == [
        ("PreconditionFailed", 412)
    ] * 2
    assert (error_code(ValueError("x")), error_status(ValueError("x"))) == ("", None)
