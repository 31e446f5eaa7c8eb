"""`sds generate`: write synthetic card-payment events (JSON Lines) to train on."""

from __future__ import annotations

import argparse
from pathlib import Path

from sds.cli.arguments import Commands
from sds.cli.render import print_json


def register(commands: Commands) -> None:
    parser = commands.add(
        "generate",
        run,
        "write synthetic card-payment events (JSON Lines)",
        [
            "sds generate --events 100000 --out data/events.jsonl.gz",
            "sds generate --events 1000 --seed 3 --out data/small.jsonl --json",
        ],
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", required=True, help="output path (.jsonl or .jsonl.gz)")


def run(args: argparse.Namespace) -> int:
    from training.data import generate_events, write_jsonl

    events = generate_events(args.events, seed=args.seed)
    path = write_jsonl(events, Path(args.out))
    fraud = sum(e["is_fraud"] for e in events)
    if args.json:
        print_json({"path": str(path), "events": len(events), "fraud": fraud})
    else:
        print(f"wrote {len(events)} events ({fraud} fraud, {fraud / len(events):.1%}) to {path}")
    return 0
