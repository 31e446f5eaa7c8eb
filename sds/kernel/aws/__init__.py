"""The kernel's AWS request layer: S3 reads and DynamoDB's JSON API without the AWS SDK.

The Lambda's serving path uses it so that a cold start pays neither boto3's import nor its client
creation (about 220 ms of a 450-600 ms start, issue 13); the CLI and training keep boto3
(`sds.kernel.sdk`). Modules, each imported only when used:

- `sigv4`: Signature Version 4 (tested against botocore's signer on generated requests);
- `credentials`: the environment's credentials, or the container endpoint's (SnapStart);
- `transport`: a small HTTP/1.1 client with kept-alive connections (no `http.client`);
- `trust`: TLS roots (Amazon Trust Services for AWS endpoints; no `ssl` for plain http);
- `client`: region, endpoint (`AWS_ENDPOINT_URL[_<SERVICE>]`), signing, bounded retries;
- `s3`: `S3Client.get_object`, `list_objects_v2`, `first_key`; `is_missing` (a 403 or a missing key);
- `dynamodb`: `DynamoDBClient.call` and the wrapped reads `get_item`, `batch_get_item`, `query`.
"""

from __future__ import annotations

from sds.kernel.aws.errors import AwsConnectionError, AwsError, ConfigurationError, CredentialsError

__all__ = ["AwsConnectionError", "AwsError", "ConfigurationError", "CredentialsError"]
