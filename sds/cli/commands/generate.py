"""`sds generate`: write synthetic account activity (logins and labelled payments) to train on."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sds.cli.arguments import Commands, positive_count
from sds.cli.render import print_json
from sds.kernel.errors import UsageError
from training.params import Bounds


def register(commands: Commands) -> None:
    parser = commands.add(
        "generate",
        run,
        "write synthetic account activity: labelled card payments and the logins around them "
        "(JSON Lines)",
        [
            "sds generate --events 100000 --out data/events.jsonl.gz",
            "sds generate --events 1000 --seed 3 --out data/small.jsonl --json",
            "sds generate --events 100000 --out data/events.jsonl.gz --force   # replace it",
        ],
    )
    parser.add_argument(
        "--events",
        type=positive_count,
        default=100_000,
        help="payments to generate (1 or more; default 100000)",
    )
    # numpy's default_rng takes any whole number from 0 up: the same argparse check as the
    # training parameters', so a negative seed is a usage error naming --seed.
    seed = Bounds(int, 0)
    parser.add_argument(
        "--seed",
        type=seed.parse,
        default=7,
        help=f"the same seed writes the same file ({seed}; default 7)",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output path (.jsonl or .jsonl.gz); it appears only once complete, and an existing "
        "file is refused unless --force",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the file at --out if there is one (it stays as it was until the new one "
        "is complete)",
    )


def run(args: argparse.Namespace) -> int:
    from training.data import write_jsonl
    from training.synthetic import LABEL, activity_chunks

    out = Path(args.out)
    if out.is_dir():
        raise UsageError(
            f"--out {args.out} is a folder: name the file to write, e.g. {out / 'events.jsonl.gz'}"
        )
    # Hours of a generated history (or a file that is not one) are not replaced unasked.
    if out.exists() and not args.force:
        raise UsageError(
            f"--out {args.out} exists: choose another path, or pass --force to replace it"
        )
    # The folders of --out are made as needed; a file where one must be is named here (mkdir
    # would say "[Errno 17] File exists").
    found = next((folder for folder in out.parents if folder.exists()), None)
    if found is not None and not found.is_dir():
        raise UsageError(f"--out {args.out}: {found} is a file, not a folder")
    counts = {"events": 0, "payments": 0, "fraud": 0}

    def counted() -> Iterator[dict[str, Any]]:
        # Streamed: a chunk of records at a time, counted on the way to the file.
        for chunk in activity_chunks(args.events, seed=args.seed):
            for event in chunk:
                counts["events"] += 1
                if event["type"] == "payment":
                    counts["payments"] += 1
                    counts["fraud"] += event[LABEL]
                yield event

    path = write_jsonl(counted(), out)
    payments, fraud = counts["payments"], counts["fraud"]
    logins = counts["events"] - payments
    if args.json:
        print_json(
            {
                "path": str(path),
                "events": counts["events"],
                "payments": payments,
                "logins": logins,
                "fraud": fraud,
            }
        )
    else:
        print(
            f"wrote {payments} payments ({fraud} fraud, {fraud / payments:.1%}) and "
            f"{logins} logins to {path}"
        )
    return 0
