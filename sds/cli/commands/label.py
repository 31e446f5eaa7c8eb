"""`sds label`: store label events (chargebacks, review verdicts) for an environment, locally."""

from __future__ import annotations

import argparse

from sds.cli.arguments import Commands, env_option, workspace
from sds.cli.render import print_json
from sds.config import EnvironmentConfig


def register(commands: Commands) -> None:
    parser = commands.add(
        "label",
        run,
        "store label events (what scored payments turned out to be) in an environment's local "
        "labels, for training from capture; labels already stored with the same content are "
        "counted as already there, not stored again; nothing is stored if any label is invalid "
        "or dated more than 5 minutes ahead of this machine's clock",
        [
            "sds label chargebacks.jsonl --env dev",
            "sds label reviews/ --env prod --json",
        ],
    )
    parser.add_argument(
        "data",
        help='labels: .jsonl[.gz] file, directory or s3://bucket/prefix; one {"type": "label", '
        '"event_id", "is_fraud", "labelled_at", "source"} per line',
    )
    env_option(parser, "--env", default_first=True, help="whose labels (default: the first)")


def run(args: argparse.Namespace) -> int:
    from sds.ops.labels import ingest_labels

    ws = workspace(args)
    env: EnvironmentConfig = args.env
    result = ingest_labels(ws, env.name, args.data)
    if args.json:
        print_json(result.to_dict())
        return 0
    again = f", {result.duplicates} repeated lines skipped" if result.duplicates else ""
    there = f", {result.already_there} already there" if result.already_there else ""
    if result.path is None:
        print(f"{env.name}: no new labels ({result.already_there} already there{again})")
        return 0
    print(
        f"{env.name}: {result.stored} labels stored ({result.fraud} fraud, "
        f"{result.stored - result.fraud} legitimate{there}{again}) in {result.path}"
    )
    return 0
