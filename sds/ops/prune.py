"""`sds --aws prune`: delete the deployed function's published versions nothing can need.

The same rule and the same code as the pruner Lambda that runs daily and after each deployment
(`sds.kernel.retention`, `lambdas.pruner.pruning`), run with the operator's credentials: what to
prune is found through SSM `/sds/<env>/` (function, CodeDeploy application and group), the
registry alias through the workspace, the count in cdk.json (`infra.lambda.versions_to_keep`).
`dry_run` reads everything and deletes nothing.
"""

from __future__ import annotations

from lambdas.pruner.pruning import PruneReport, prune
from sds.kernel.errors import UsageError
from sds.kernel.registry import RegistryError
from sds.kernel.retention import PruneTarget
from sds.ops.aws import AwsError, Clients
from sds.ops.workspace import Workspace


def prune_target(ws: Workspace, env: str) -> PruneTarget:
    """What pruning `env` works on: discovered in SSM, with the count from cdk.json."""
    return PruneTarget(
        function=ws.discovery.get(env, "function-name"),
        environment=env,
        model=ws.model,
        registry_uri=ws.registry_uri(env),
        application=ws.discovery.get(env, "codedeploy-application"),
        deployment_group=ws.discovery.get(env, "deployment-group"),
        versions_to_keep=ws.config.env(env).infra.lambda_.versions_to_keep,
    )


def prune_versions(
    ws: Workspace, *, env: str, dry_run: bool = False, clients: Clients | None = None
) -> PruneReport:
    if not ws.on_aws:
        raise UsageError(
            "prune deletes published Lambda versions of a deployed environment: add --aws "
            "(locally there is nothing to prune)"
        )
    clients = clients or ws.discovery.clients
    target = prune_target(ws, env)
    try:
        return prune(
            target,
            lambda_client=clients["lambda"],
            codedeploy=clients["codedeploy"],
            registry=ws.registry(env),
            dry_run=dry_run,
        )
    except RegistryError:
        raise
    except Exception as exc:
        if not type(exc).__module__.startswith(("botocore", "boto3")):
            raise
        raise AwsError(
            f"{env}: reading what pruning needs failed ({exc}); nothing was deleted"
        ) from exc
