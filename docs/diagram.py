"""Draw docs/architecture.png from the project's own configuration: `make diagram`.

The environments, their order (promote_from), deployment strategies, API auth, training
schedules and sources, batch concurrency and output prefix come from cdk.json through
`sds.config` (the loader the CDK app uses), so adding an environment or changing a canary shows
up the next time the picture is drawn. Uses the `diagrams` package (pinned in
requirements-dev.txt) and Graphviz `dot` (the Makefile installs it when missing).

Seven paths, one colour each: requests (blue), activity events (purple: the bus, queue, feature
updater and feature table that keep the account aggregates), training (green), promotion and
deployment (orange), rollback (red), the loop (brown): what each function served, captured as
a log line and shipped by a log subscription through Firehose to the environment's captures
bucket, the label events the bus sends next to it, and the training from capture that reads both,
and batch runs (teal): `sds --aws score` and `sds --aws backfill` start the environment's state
machine (the Batch stack), whose two distributed maps call the batch function (the inference
bundle) on the input ranges, then on the partitions; it reads history from the training-data
bucket and, to score, the version the run names from the registry, and writes scores or
aggregates under the batch output prefix of that bucket (a backfill never writes the feature
table).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diagrams import Cluster, Diagram, Edge, Node
from diagrams.aws.analytics import KinesisDataFirehose
from diagrams.aws.compute import Fargate, Lambda
from diagrams.aws.database import Dynamodb
from diagrams.aws.devtools import Codedeploy
from diagrams.aws.integration import SQS, Eventbridge, StepFunctions
from diagrams.aws.management import CloudwatchAlarm, CloudwatchEventTimeBased, CloudwatchLogs
from diagrams.aws.network import APIGateway
from diagrams.aws.storage import S3
from diagrams.onprem.ci import GithubActions
from diagrams.onprem.client import Client, User
from diagrams.onprem.vcs import Git

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sds.config import EnvironmentConfig, load_project  # noqa: E402

REQUEST = "#1f6fd1"
ACTIVITY = "#7b3fa0"
TRAINING = "#2e8b3e"
PROMOTION = "#d97a00"
ROLLBACK = "#c62828"
CAPTURE = "#8d5524"
BATCH = "#00897b"

STRATEGY_LABELS = {
    "all_at_once": "all at once",
    "canary_10_percent_5_minutes": "canary 10 % for 5 min",
    "canary_10_percent_10_minutes": "canary 10 % for 10 min",
    "canary_10_percent_15_minutes": "canary 10 % for 15 min",
    "canary_10_percent_30_minutes": "canary 10 % for 30 min",
    "linear_10_percent_every_1_minute": "linear 10 % / min",
    "linear_10_percent_every_2_minutes": "linear 10 % / 2 min",
    "linear_10_percent_every_3_minutes": "linear 10 % / 3 min",
    "linear_10_percent_every_10_minutes": "linear 10 % / 10 min",
}


def promotion_order(environments: dict[str, EnvironmentConfig]) -> list[str]:
    """Environments from the bottom of the promotion chain (dev) to the top (prod)."""
    ordered: list[str] = []
    remaining = dict(environments)
    while remaining:
        ready = [
            n for n, e in remaining.items() if e.promote_from is None or e.promote_from in ordered
        ]
        ordered.extend(ready)
        for name in ready:
            del remaining[name]
        if not ready:  # a cycle: sds.config rejects it, but never loop forever
            ordered.extend(remaining)
            break
    return ordered


def draw(out: Path, *, cdk_json: Path = ROOT / "cdk.json") -> Path:
    project = load_project(cdk_json)
    environments = dict(project.environments)
    order = promotion_order(environments)
    graph_attr = {
        "fontsize": "22",
        "fontname": "Helvetica",
        "pad": "0.4",
        "nodesep": "0.7",
        "ranksep": "0.9",
        "splines": "spline",
        "labelloc": "t",
        # Little crossing minimization: keeps the environments in definition (promotion) order,
        # left to right, instead of reshuffling them to shorten a few edges.
        "mclimit": "0.01",
    }
    title = (
        f"sds: model '{project.model_name}' in {len(order)} environments "
        "(blue: requests, purple: activity events, green: training, orange: promote + deploy, "
        "red: rollback, brown: capture + labels, teal: batch score + backfill)"
    )
    with Diagram(
        title,
        filename=str(out.with_suffix("")),
        outformat="png",
        show=False,
        direction="TB",
        graph_attr=graph_attr,
        node_attr={"fontname": "Helvetica", "fontsize": "12"},
        edge_attr={"fontname": "Helvetica", "fontsize": "11"},
    ):
        # Edges that only explain (not flow top to bottom) must not move nodes between rows.
        side = {"constraint": "false"}
        with Cluster("operators and CI"):
            people = User(
                "data scientist / on-call\nsds train · promote · rollback\nsds score · backfill"
            )
            lock = Git("models.lock.json in git\n(pin: version + sha256)")
            ci = GithubActions(
                "CI (GitHub Actions)\nPR: make test + cdk diff\nmain: cdk deploy, approvals"
            )
            (
                people
                >> Edge(color=PROMOTION, label="sds promote / rollback\nwrite the pin", **side)
                >> lock
            )
            lock >> Edge(color=PROMOTION, label="push", **side) >> ci
        clients = Client("API clients\n(SigV4 or API key)")
        producers = Client("activity producers\n(logins; payments after scoring)")

        registries: dict[str, Node] = {}
        functions: dict[str, Node] = {}
        deploys: dict[str, Node] = {}
        for name in order:
            env = environments[name]
            infra = env.infra
            strategy = STRATEGY_LABELS.get(infra.deployment.strategy, infra.deployment.strategy)
            source = (
                f"promoted from {env.promote_from}"
                if env.promote_from
                else "new versions start here"
            )
            with Cluster(f"{name}  ({source})"):
                with Cluster(f"{name}/Inference"):
                    api = APIGateway(f"REST API ({infra.api.auth.replace('_', ' ').upper()})")
                    deploy = Codedeploy(f"CodeDeploy\n{strategy}")
                    function = Lambda("Lambda alias live\n-> version N (code + model)")
                    alarms = CloudwatchAlarm("alarms\nerrors, p99, 5xx")
                    logs = CloudwatchLogs("function log group\n(capture lines)")
                    firehose = KinesisDataFirehose("Firehose\n(gzip, data key)")
                with Cluster(f"{name}/Features"):
                    bus = Eventbridge("activity bus\n+ archive (sds --aws replay)")
                    queue = SQS("queue\n+ dead-letter queue (alarmed)")
                    updater = Lambda("feature updater\n(batches, partial failures)")
                    labels = KinesisDataFirehose("Firehose\n(label events)")
                training = None
                if env.has_training:
                    with Cluster(f"{name}/Training"):
                        training = Fargate(f"training task\n(Fargate, no NAT, {name}'s data)")
                        if infra.training.schedule:
                            schedule = CloudwatchEventTimeBased(
                                f"schedule\n{infra.training.schedule}"
                            )
                            schedule >> Edge(color=TRAINING) >> training
                with Cluster(f"{name}/Batch"):
                    machine = StepFunctions(
                        "state machine (Step Functions)\nshuffle map, then parts map\n"
                        f"max {infra.batch.max_concurrency} at once"
                    )
                    batch = Lambda("batch function\n(inference bundle)")
                with Cluster(f"{name}/Registry"):
                    registry = S3(f"registry (S3)\nalias {name}")
                    data = S3(f"training data (S3)\nhistory, {infra.batch.output_prefix} results")
                    table = Dynamodb("feature table\n(account aggregates)")
                    rate = env.capture.sample_rate
                    captures = S3(
                        f"captures (S3)\ncaptures/ labels/\ndt=YYYY-MM-DD\n"
                        f"sampled {rate:g}, kept {env.capture.retention_days} days"
                    )

            clients >> Edge(color=REQUEST, label="POST /predict") >> api
            api >> Edge(color=REQUEST) >> function
            (
                function
                >> Edge(color=REQUEST, style="dashed", label="load pinned model\n(sha256-verified)")
                >> registry
            )
            producers >> Edge(color=ACTIVITY, label="PutEvents") >> bus
            bus >> Edge(color=ACTIVITY) >> queue
            queue >> Edge(color=ACTIVITY) >> updater
            updater >> Edge(color=ACTIVITY, label="fold (once per event id)") >> table
            (
                function
                >> Edge(color=REQUEST, style="dashed", label="read aggregates\n(one round trip)")
                >> table
            )
            function >> Edge(color=CAPTURE, label="one line per\nscored payment") >> logs
            logs >> Edge(color=CAPTURE, label="subscription") >> firehose
            firehose >> Edge(color=CAPTURE, label="captures/") >> captures
            bus >> Edge(color=CAPTURE, label="label events") >> labels
            labels >> Edge(color=CAPTURE, label="labels/") >> captures
            if training is not None and infra.training.source == "capture":
                captures >> Edge(color=TRAINING, label="train from capture", **side) >> training
            if training is not None and infra.training.source == "history":
                history = f"train from history\n({infra.training.data_prefix})"
                data >> Edge(color=TRAINING, label=history, **side) >> training
            (
                people
                >> Edge(color=BATCH, label=f"sds --aws score / backfill --env {name}")
                >> machine
            )
            (
                machine
                >> Edge(color=BATCH, label="distributed maps\n(input ranges, then partitions)")
                >> batch
            )
            batch >> Edge(color=BATCH, style="dashed", label="read history") >> data
            (
                batch
                >> Edge(color=BATCH, label=f"write {infra.batch.output_prefix}\n(parts, manifest)")
                >> data
            )
            (
                batch
                >> Edge(
                    color=BATCH,
                    style="dashed",
                    label="load chosen version\n(sha256-verified; score)",
                )
                >> registry
            )
            registries[name] = registry
            if training is not None:
                # Versions are allocated where the chain starts: every task registers there.
                start = env.chain_start
                label = "register version" if start == name else f"register version\n(in {start})"
                training >> Edge(color=TRAINING, label=label) >> registries[start]
            ci >> Edge(color=PROMOTION, label=f"cdk deploy '{name}/*'") >> deploy
            deploy >> Edge(color=PROMOTION, label="shift live") >> function
            function >> Edge(color=ROLLBACK, style="dotted") >> alarms
            alarms >> Edge(color=ROLLBACK, label="auto rollback", **side) >> deploy
            registries[name] = registry
            functions[name] = function
            deploys[name] = deploy

        for name in order:
            source = environments[name].promote_from
            if source in registries:
                (
                    registries[source]
                    >> Edge(color=PROMOTION, label="sds promote\n(gates, verified copy)", **side)
                    >> registries[name]
                )

        people >> Edge(color=TRAINING, label="sds train") >> registries[order[0]]
        (
            people
            >> Edge(
                color=ROLLBACK, label="sds rollback --aws --env ENV\n(live -> previous version)"
            )
            >> functions[order[-1]]
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "architecture.png")
    args = parser.parse_args(argv)
    print(draw(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
