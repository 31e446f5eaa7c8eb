"""Errors of the kernel's AWS request layer: each names the service, the operation and AWS's own
error code, so a log line or a 503 says what AWS said."""

from __future__ import annotations

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


class AwsConnectionError(AwsError):
    """No usable response: the endpoint was unreachable, timed out or broke the connection on
    every attempt, or its TLS certificate did not verify."""


class CredentialsError(AwsError):
    """No AWS credentials could be found, or their source answered badly."""


class ConfigurationError(AwsError):
    """The environment asks for something this client does not do (no region, a FIPS
    endpoint, a malformed endpoint URL): refused rather than silently ignored."""
