"""`sds envs`: the environments in cdk.json, where each one's registry is and what it pins."""

from __future__ import annotations

import argparse
from typing import Any

from sds.cli.arguments import Commands, workspace
from sds.cli.render import print_json, table
from sds.kernel.lock import read_lock
from sds.ops.aws import AwsError


def register(commands: Commands) -> None:
    commands.add(
        "envs",
        run,
        "list environments, their registries and pins",
        ["sds envs", "sds --aws envs --json"],
    )


def run(args: argparse.Namespace) -> int:
    ws = workspace(args)
    lock = read_lock(ws.lock_path, model=ws.model)
    rows: list[dict[str, Any]] = []
    for name, env in ws.config.environments.items():
        pin = lock.pins.get(name)
        try:
            registry = ws.registry_uri(name)
        except AwsError as exc:  # with --aws, an environment that is not deployed (yet)
            registry = f"(not found: {exc})"
        rows.append(
            {
                "env": name,
                "promote_from": env.promote_from,
                "registry": registry,
                "pin": None if pin is None else pin.to_dict(),
            }
        )
    if args.json:
        print_json(rows)
        return 0
    print(
        table(
            [
                [
                    str(r["env"]),
                    str(r["promote_from"] or "-"),
                    "-" if r["pin"] is None else f"v{r['pin']['version']}",
                    str(r["registry"]),
                ]
                for r in rows
            ],
            ["ENV", "PROMOTED FROM", "PIN", "REGISTRY"],
        )
    )
    return 0
