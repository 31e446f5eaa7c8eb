"""`sds generate`: write synthetic account activity (logins and labelled payments) to train on."""

from __future__ import annotations

import argparse
from pathlib import Path

from sds.cli.arguments import Commands
from sds.cli.render import print_json


def register(commands: Commands) -> None:
    parser = commands.add(
        "generate",
        run,
        "write synthetic account activity: labelled card payments and the logins around them "
        "(JSON Lines)",
        [
            "sds generate --events 100000 --out data/events.jsonl.gz",
            "sds generate --events 1000 --seed 3 --out data/small.jsonl --json",
        ],
    )
    parser.add_argument("--events", type=int, default=100_000, help="payments to generate")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", required=True, help="output path (.jsonl or .jsonl.gz)")


def run(args: argparse.Namespace) -> int:
    from training.data import write_jsonl
    from training.synthetic import LABEL, generate_activity

    events = generate_activity(args.events, seed=args.seed)
    path = write_jsonl(events, Path(args.out))
    payments = [e for e in events if e["type"] == "payment"]
    fraud = sum(e[LABEL] for e in payments)
    logins = len(events) - len(payments)
    if args.json:
        print_json(
            {
                "path": str(path),
                "events": len(events),
                "payments": len(payments),
                "logins": logins,
                "fraud": fraud,
            }
        )
    else:
        print(
            f"wrote {len(payments)} payments ({fraud} fraud, {fraud / len(payments):.1%}) and "
            f"{logins} logins to {path}"
        )
    return 0
