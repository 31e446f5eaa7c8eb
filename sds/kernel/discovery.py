"""The discovery contract: what each environment's stacks publish in SSM for tools to find.

One table, read by both sides: the CDK stacks publish every key of their stack under
`/sds/<env>/<key>` (a test checks that each stack publishes exactly its keys), and the operator
application reads them back (`sds.ops.aws.Discovery`), naming the stack to deploy when one is
missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

REGISTRY_STACK = "Registry"
INFERENCE_STACK = "Inference"
FEATURES_STACK = "Features"
TRAINING_STACK = "Training"
BATCH_STACK = "Batch"

# key -> the stack (under the environment's stage) that publishes it
PARAMETERS: Mapping[str, str] = MappingProxyType(
    {
        "registry-bucket": REGISTRY_STACK,
        "training-data-bucket": REGISTRY_STACK,
        "feature-table": REGISTRY_STACK,
        "captures-bucket": REGISTRY_STACK,
        "function-name": INFERENCE_STACK,
        "alias-name": INFERENCE_STACK,
        "api-url": INFERENCE_STACK,
        "deployment-group": INFERENCE_STACK,
        "codedeploy-application": INFERENCE_STACK,
        "event-bus": FEATURES_STACK,
        "event-archive": FEATURES_STACK,
        "feature-rule": FEATURES_STACK,
        "training-cluster": TRAINING_STACK,
        "training-task-definition": TRAINING_STACK,
        "training-subnets": TRAINING_STACK,
        "training-security-group": TRAINING_STACK,
        "training-state-machine": TRAINING_STACK,
        "batch-state-machine": BATCH_STACK,
    }
)


# Keys a stack publishes only in some configurations: the training run's state machine exists
# only where the interface endpoints are leased per run (`infra.network.endpoints: during_runs`).
OPTIONAL: frozenset[str] = frozenset({"training-state-machine"})


def parameter_name(env: str, key: str) -> str:
    """The SSM parameter that holds `key` for environment `env`."""
    if key not in PARAMETERS:
        raise KeyError(f"unknown discovery key {key!r}; known: {', '.join(PARAMETERS)}")
    return f"/sds/{env}/{key}"


def keys_of(stack: str) -> tuple[str, ...]:
    """The keys `stack` publishes, in table order."""
    return tuple(key for key, owner in PARAMETERS.items() if owner == stack)
