"""AWS SDK clients for the kernel's data-plane calls (registry writes and the CLI's reads on S3).

The Lambda's serving path does not use them: it reads through `sds.kernel.aws`, without the SDK
(docs/decisions.md, "No AWS SDK on the serving path").

One configuration for every client the project makes: the SDK's standard retry mode
(exponential backoff with jitter for throttling, 5xx and connection errors; conditional-write
conflicts, 412, are answers and are not retried) and short timeouts. The endpoint comes from
the environment the way the SDK reads it (`AWS_ENDPOINT_URL` included), so the same code runs
against AWS and against a local protocol server. The region is `region()`'s: `AWS_REGION` first,
as the AWS CLI v2 and the kernel's own client (`sds.kernel.aws.client`) read it, which boto3
alone does not. The operator application's clients (`sds.ops.aws`) are made here too.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

RETRY_MAX_ATTEMPTS = 5
_CLIENT_LOCK = threading.Lock()
# The region to call when none is configured, set by `default_region` (the CLI's: the region
# cdk.json gives the environment a command targets).
_default_region: str | None = None


def sdk_config() -> Any:
    from botocore.config import Config

    return Config(
        retries={"mode": "standard", "max_attempts": RETRY_MAX_ATTEMPTS},
        connect_timeout=5,
        read_timeout=60,
    )


@contextlib.contextmanager
def default_region(region: str | None) -> Iterator[None]:
    """Within: clients call `region` where no region is configured (see `region`)."""
    global _default_region
    previous, _default_region = _default_region, region
    try:
        yield
    finally:
        _default_region = previous


def region() -> str | None:
    """The region clients call, most explicit first: `AWS_REGION`, else what the SDK reads
    (`AWS_DEFAULT_REGION`, else the profile's `region`), else the `default_region` in effect.
    None when there is none: the SDK then raises NoRegionError, which
    `sds.kernel.aws.errors.explain` says with the variables that set one."""
    import boto3

    explicit = os.environ.get("AWS_REGION", "").strip()
    if explicit:
        return explicit
    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    assert boto3.DEFAULT_SESSION is not None
    configured: str | None = boto3.DEFAULT_SESSION.region_name
    return configured or _default_region


def client(service: str) -> Any:
    """A boto3 client for `service` with standard retries, calling `region()` (the endpoint
    from the environment)."""
    import boto3

    # boto3's default session is not thread-safe while it creates clients: concurrent creation
    # can lose configuration (the endpoint among it). Clients themselves are thread-safe.
    with _CLIENT_LOCK:
        return boto3.client(service, config=sdk_config(), region_name=region())
