"""AWS SDK clients for the kernel's data-plane calls (registry writes and the CLI's reads on S3).

The Lambda's serving path does not use them: it reads through `sds.kernel.aws`, without the SDK
(docs/decisions.md, "No AWS SDK on the serving path").

One configuration for every client the project makes: the SDK's standard retry mode
(exponential backoff with jitter for throttling, 5xx and connection errors; conditional-write
conflicts, 412, are answers and are not retried) and short timeouts. Region and endpoint come
from the environment the way the SDK reads them (`AWS_ENDPOINT_URL` included), so the same code
runs against AWS and against a local protocol server. The operator application's clients
(`sds.ops.aws`) are made here too.
"""

from __future__ import annotations

import threading
from typing import Any

RETRY_MAX_ATTEMPTS = 5
_CLIENT_LOCK = threading.Lock()


def sdk_config() -> Any:
    from botocore.config import Config

    return Config(
        retries={"mode": "standard", "max_attempts": RETRY_MAX_ATTEMPTS},
        connect_timeout=5,
        read_timeout=60,
    )


def client(service: str) -> Any:
    """A boto3 client for `service` with standard retries (region and endpoint from the env)."""
    import boto3

    # boto3's default session is not thread-safe while it creates clients: concurrent creation
    # can lose configuration (the endpoint among it). Clients themselves are thread-safe.
    with _CLIENT_LOCK:
        return boto3.client(service, config=sdk_config())
