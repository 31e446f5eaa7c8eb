"""The batch function's settings and the state machine's input: contracts between the stacks,
the CLI and the batch Lambda, each written by one function and read by one parser here.

The function's environment (`batch_environment`, read by `BatchFunctionSettings.from_environ`) says
which registry models are read from and which bucket and prefix runs may use; the state
machine's input (`run_input`, read by the `plan` step) says what one run does. The model is in
the input, not the environment: a run scores with the version the operator chose (the pin, or
`--version`), and a promotion does not redeploy the batch function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sds.kernel.errors import UsageError

MODEL_NAME = "MODEL_NAME"
REGISTRY_URI = "REGISTRY_URI"
ENVIRONMENT = "ENVIRONMENT"
DATA_BUCKET = "DATA_BUCKET"
OUTPUT_PREFIX = "OUTPUT_PREFIX"


class BatchSettingsError(UsageError):
    """The batch function's environment or a run's input is invalid; the message names it."""


@dataclass(frozen=True)
class BatchFunctionSettings:
    model_name: str
    registry_uri: str
    environment: str
    data_bucket: str
    output_prefix: str  # runs write only under s3://<data_bucket>/<output_prefix>

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> BatchFunctionSettings:
        missing = [
            name
            for name in (MODEL_NAME, REGISTRY_URI, ENVIRONMENT, DATA_BUCKET, OUTPUT_PREFIX)
            if not environ.get(name, "").strip()
        ]
        if missing:
            raise BatchSettingsError(f"the batch function's {', '.join(missing)} must be set")
        return cls(
            model_name=environ[MODEL_NAME].strip(),
            registry_uri=environ[REGISTRY_URI].strip(),
            environment=environ[ENVIRONMENT].strip(),
            data_bucket=environ[DATA_BUCKET].strip(),
            output_prefix=environ[OUTPUT_PREFIX].strip(),
        )

    def check_locations(self, input_uri: str, output_uri: str) -> None:
        """Input anywhere in the data bucket, output under the output prefix (what the
        function's role allows: said here first, clearly)."""
        bucket = f"s3://{self.data_bucket}/"
        if not input_uri.startswith(bucket):
            raise BatchSettingsError(
                f"the input must be in the environment's data bucket ({bucket}...), got {input_uri}"
            )
        if not output_uri.startswith(bucket + self.output_prefix) or output_uri.rstrip("/") == (
            bucket + self.output_prefix
        ).rstrip("/"):
            raise BatchSettingsError(
                f"the output must be a location under {bucket}{self.output_prefix}, got "
                f"{output_uri}"
            )


def batch_environment(
    *, model_name: str, registry_uri: str, environment: str, data_bucket: str, output_prefix: str
) -> dict[str, str]:
    """The batch function's environment variables."""
    return {
        MODEL_NAME: model_name,
        REGISTRY_URI: registry_uri,
        ENVIRONMENT: environment,
        DATA_BUCKET: data_bucket,
        OUTPUT_PREFIX: output_prefix,
    }


def run_input(
    *,
    job: str,
    input_uri: str,
    output_uri: str,
    model: Mapping[str, Any] | None,
    partitions: int | None,
) -> dict[str, Any]:
    """The state machine's input for one run (the model: {"version", "sha256"} or None)."""
    return {
        "job": job,
        "input": input_uri,
        "output": output_uri,
        "model": None
        if model is None
        else {"version": model["version"], "sha256": model["sha256"]},
        "partitions": partitions,
    }
