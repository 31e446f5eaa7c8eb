"""`sds demo`: the whole local loop in a throwaway workspace: data, train, promote, serve, roll
back."""

from __future__ import annotations

import argparse

from sds.cli.arguments import Commands, positive_count, workspace


def register(commands: Commands) -> None:
    parser = commands.add(
        "demo",
        run,
        "the whole local loop: data, train, promote, serve, roll back",
        ["sds demo", "sds demo --events 20000 --json"],
    )
    parser.add_argument(
        "--events",
        type=positive_count,
        default=60_000,
        help="payments in the demo's synthetic history (default 60000)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the demo workspace (.sds/demo)")


def run(args: argparse.Namespace) -> int:
    from sds.ops.demo import run_demo

    return run_demo(workspace(args), events=args.events, keep=args.keep, as_json=args.json)
