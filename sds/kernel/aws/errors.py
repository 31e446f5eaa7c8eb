"""Errors of the kernel's AWS request layer: each names the service, the operation and AWS's own
error code, so a log line or a 503 says what AWS said.

`explain` is the one mapping from an AWS failure (the kernel's own, or the SDK's) to what a person
reads: one line that names what failed and the fix (`AwsFailure`). `one_line` fits any message
on one line of stderr, cutting raw XML or HTML bodies.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator

from sds.kernel.errors import SdsError


class AwsError(SdsError):
    """An AWS API call failed. `code` is AWS's error code (`NoSuchKey`, `AccessDenied`,
    `ResourceNotFoundException`, ...), `status` the HTTP status (None if no response came)."""

    def __init__(
        self,
        message: str,
        *,
        service: str = "",
        operation: str = "",
        code: str = "",
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        self.service = service
        self.operation = operation
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id
        where = " ".join(part for part in (service, operation) if part)
        status_text = f" (HTTP {status})" if status is not None else ""
        prefix = f"{where}: " if where else ""
        code_text = f"{code}{status_text}: " if code else ""
        request_text = f" [request id {request_id}]" if request_id else ""
        super().__init__(f"{prefix}{code_text}{message}{request_text}")


def error_code(exc: BaseException) -> str:
    """AWS's error code of a failed call, made with the kernel's client (`AwsError.code`) or the
    SDK's (`ClientError.response`); "" for anything else."""
    if isinstance(exc, AwsError):
        return exc.code
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        return str(response["Error"].get("Code", ""))
    return ""


def error_status(exc: BaseException) -> int | None:
    """The HTTP status of a failed call's answer, made with the kernel's client (`AwsError.status`)
    or the SDK's (`ClientError.response`); None without one."""
    if isinstance(exc, AwsError):
        return exc.status
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
    return None


class AwsConnectionError(AwsError):
    """No usable response: the endpoint was unreachable, timed out or broke the connection on
    every attempt, or its TLS certificate did not verify."""


class CredentialsError(AwsError):
    """No AWS credentials could be found, or their source answered badly."""


class ConfigurationError(AwsError):
    """The environment asks for something this client does not do (no region, a FIPS
    endpoint, a malformed endpoint URL): refused rather than silently ignored."""


class AwsFailure(AwsError):
    """An AWS failure as `explain` says it to a person: one line naming what failed and the fix.
    AWS's own code, service, operation and status stay on the attributes."""

    def __init__(
        self,
        text: str,
        *,
        service: str = "",
        operation: str = "",
        code: str = "",
        status: int | None = None,
    ) -> None:
        super().__init__(text)
        self.service, self.operation, self.code, self.status = service, operation, code, status


# What AWS answers, grouped by what the person at the keyboard does about it. The one mapping of
# AWS error codes to messages: the CLI's catch-all, discovery, the registry's S3 stores and the
# status report all say AWS failures through `explain`.
_NO_CREDENTIALS = frozenset({"NoCredentials"})
_NO_REGION = frozenset({"NoRegion"})
_REJECTED_CREDENTIALS = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "InvalidToken",
        "TokenRefreshRequired",
        "RequestExpired",
        "SSOTokenExpired",
    }
)
_ACCESS_DENIED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "AuthorizationError",
        "Forbidden",
    }
)
_THROTTLED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "ProvisionedThroughputExceededException",
    }
)
_UNUSABLE_CREDENTIALS = frozenset(
    {
        "PartialCredentials",
        "ProfileNotFound",
        "CredentialsEndpointError",
        "InvalidCredentialsEndpoint",
    }
)
_CONNECTION = frozenset({"ConnectionError", "ConnectTimeout", "ReadTimeout", "TLSError"})
_GENERIC_DENIAL = frozenset({"", "access denied", "forbidden", "access denied."})

CREDENTIALS_FIX = "aws configure, AWS_PROFILE, aws sso login"
OPERATOR_POLICIES = (
    "the caller's IAM policy does not allow it (an operator's comes from the environment's stack "
    "outputs: PromoterPolicyArn to promote and roll back, TrainingOperatorPolicyArn to train, "
    "BatchOperatorPolicyArn to score and backfill on AWS; docs/infrastructure.md, Permissions)"
)

# botocore's errors that are not an AWS answer, by what they mean (looked up only when botocore
# is already loaded: the kernel never imports the SDK to explain an error).
_SDK_ERRORS = (
    ("NoCredentialsError", "NoCredentials"),
    ("PartialCredentialsError", "PartialCredentials"),
    ("ProfileNotFound", "ProfileNotFound"),
    ("SSOTokenLoadError", "SSOTokenExpired"),
    ("UnauthorizedSSOTokenError", "SSOTokenExpired"),
    ("TokenRetrievalError", "SSOTokenExpired"),
    ("CredentialRetrievalError", "CredentialsEndpointError"),
    ("NoRegionError", "NoRegion"),
    ("ConnectTimeoutError", "ConnectTimeout"),
    ("ReadTimeoutError", "ReadTimeout"),
    ("EndpointConnectionError", "ConnectionError"),
    ("SSLError", "TLSError"),
)

_RAW_BODY = re.compile(r"<\?xml|<!doctype|<html|<\w+Response\b|<Error\b", re.I)


def one_line(text: str) -> str:
    """`text` fit for one line of stderr: whitespace (newlines included) collapsed, and a raw
    XML or HTML body an SDK could not parse (a proxy's page, a 403 it does not model) cut, keeping
    the `<Code>` and `<Message>` it carries. What `report_error` and `sds status` print."""
    flat = " ".join(text.split())
    raw = _RAW_BODY.search(flat)
    if raw is not None:
        body = flat[raw.start() :]
        head = flat[: raw.start()].rstrip(" :")
        code, message = _tag(body, "Code"), _tag(body, "Message")
        said = ": ".join(part for part in (code, message) if part) or (
            "an HTML page, not an AWS answer (a proxy in the way?)"
            if re.match(r"<!doctype|<html", body, re.I)
            else "an answer that is not AWS's"
        )
        flat = f"{head}: {said}" if head else said
    return flat


def _tag(document: str, tag: str) -> str:
    match = re.search(rf"<{tag}>\s*(.*?)\s*</{tag}>", document, re.S)
    return " ".join(match.group(1).split()) if match else ""


def _parts(exc: BaseException) -> tuple[str, str, str, str, int | None] | None:
    """(code, message, service, operation, status) of an AWS failure: the kernel's own, an SDK
    `ClientError`, or one of the SDK's errors without an answer; None for anything else."""
    if isinstance(exc, AwsFailure):
        return exc.code, str(exc), exc.service, exc.operation, exc.status
    if isinstance(exc, AwsError):
        return exc.code, exc.message, exc.service, exc.operation, exc.status
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        error = response["Error"]
        return (
            str(error.get("Code", "")),
            str(error.get("Message", "")),
            "",
            str(getattr(exc, "operation_name", "")),
            error_status(exc),
        )
    sdk = sys.modules.get("botocore.exceptions")
    if sdk is not None:
        for name, code in _SDK_ERRORS:
            kind = getattr(sdk, name, None)
            if isinstance(kind, type) and isinstance(exc, kind):
                return code, str(exc), "", "", None
    if type(exc).__module__.split(".")[0] in ("botocore", "boto3"):  # any other of the SDK's
        return type(exc).__name__, str(exc), "", "", None
    return None


def explain(
    exc: BaseException,
    *,
    doing: str = "",
    resource: str = "",
    source: str = "",
    stack: str = "",
) -> AwsFailure | None:
    """`exc` said for the person who ran the command, as one line: what failed and what to do.
    None if `exc` is not an AWS failure.

    `doing` says what was being done ("reading SSM parameters /sds/dev/*"), `resource` what it
    was done to ("registry bucket sds-registry-1a2b"), `source` where its name came from
    ("/sds/dev/registry-bucket", "SDS_REGISTRY_DEV"), `stack` the stack that creates it
    ("dev/Registry"). Problems of the caller's setup (no credentials, no region, credentials AWS
    rejects, no network) name the fix without the resource: they are not about it.
    """
    if isinstance(exc, AwsFailure):
        return exc
    parts = _parts(exc)
    if parts is None:
        return None
    code, message, service, operation, status = parts
    # An answer the SDK could not parse has the HTTP status for a code; the body may still carry
    # AWS's own (moto and AWS both send XML errors to some JSON-protocol callers).
    raw_code = _tag(" ".join(message.split()), "Code")
    if raw_code and (not code or code.isdigit()):
        code = raw_code
    message = one_line(message)
    text = _message(code, message, doing, resource, source, stack, service, operation)
    return AwsFailure(text, service=service, operation=operation, code=code, status=status)


def _message(
    code: str,
    message: str,
    doing: str,
    resource: str,
    source: str,
    stack: str,
    service: str,
    operation: str,
) -> str:
    context = f"{doing}: " if doing else ""
    if code in _NO_CREDENTIALS:
        return f"no AWS credentials: configure them ({CREDENTIALS_FIX})"
    if code in _NO_REGION:
        return "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region)"
    if code in _REJECTED_CREDENTIALS:
        return f"AWS rejected the credentials ({code}): refresh them ({CREDENTIALS_FIX})"
    if code in _UNUSABLE_CREDENTIALS:
        return f"unusable AWS credentials ({message}): fix them ({CREDENTIALS_FIX})"
    if code in _CONNECTION:
        return f"{context}cannot reach AWS ({message}): check the network and AWS_ENDPOINT_URL"
    if code == "NoSuchBucket":
        # Named, the bucket is the whole story: what was being read in it is not.
        bucket = resource or "the S3 bucket"
        origin = f" (from {source})" if source else ""
        fix = f"is {stack} deployed?" if stack else f"check {source or 'its name'}"
        return f"{'' if resource else context}{bucket}{origin} does not exist: {fix}"
    if code in _ACCESS_DENIED:
        action = f"{service}:{operation}" if service and operation else operation
        target = " on ".join(part for part in (action, resource) if part)
        said = "" if message.lower() in _GENERIC_DENIAL else f" ({message})"
        what = f" to {target}" if target else ""
        return f"{context}access denied{what}{said}: {OPERATOR_POLICIES}"
    if code in _THROTTLED:
        return f"{context}AWS throttled the request ({code}) after retries: try again shortly"
    where = " ".join(part for part in (service, operation) if part)
    said = f"{code}: {message}" if code and message else (code or message or "request failed")
    if where:
        return f"{context}{where}: {said}"
    return f"{context}{said}" if context else f"AWS: {said}"


@contextlib.contextmanager
def explained(
    *, doing: str = "", resource: str = "", source: str = "", stack: str = ""
) -> Iterator[None]:
    """Raise an AWS failure inside the block as `explain` says it (the original as its cause);
    anything else passes unchanged."""
    try:
        yield
    except Exception as exc:
        failure = explain(exc, doing=doing, resource=resource, source=source, stack=stack)
        if failure is None or failure is exc:
            raise
        raise failure from exc
