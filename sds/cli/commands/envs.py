"""`sds envs`: the environments in cdk.json, where each one's registry is and what it pins.

With --aws the registry is found through SSM: an environment whose stacks publish nothing there is
`not deployed` (with the stack to deploy), one that could not be read is `unreachable` (with the
cause, one line on stderr, and exit 1: the listing could not say where that registry is), as is
one whose `SDS_REGISTRY_<ENV>` names no registry. A models.lock.json that cannot be read fails the
same way, as `sds status` does: every environment is listed, its pin `unreadable`, and the file's
problem is the error. `--json` is the list of environments; when something could not be read, the
error's document, with the list under "environments".
"""

from __future__ import annotations

import argparse
from typing import Any

from sds.cli.arguments import Commands, workspace
from sds.cli.render import Unreadable, print_json, table, unreachable
from sds.kernel.aws.errors import explain
from sds.kernel.lock import LockFile, LockFileError, read_lock
from sds.kernel.registry import RegistryError
from sds.ops.aws import AwsError, NotDeployed

FOUND = "found"
NOT_DEPLOYED = "not deployed"
UNREACHABLE = "unreachable"


def register(commands: Commands) -> None:
    commands.add(
        "envs",
        run,
        "list environments, their registries and pins",
        ["sds envs", "sds --aws envs --json"],
    )


def run(args: argparse.Namespace) -> int:
    ws = workspace(args)
    lock: LockFile | None = None
    lock_error: str | None = None
    try:
        lock = read_lock(ws.lock_path, model=ws.model)
    except LockFileError as exc:  # a merge conflict, say: the registries are still listed
        lock_error = str(exc)
    rows: list[dict[str, Any]] = []
    for name, env in ws.config.environments.items():
        pin = None if lock is None else lock.pins.get(name)
        registry: str | None = None
        state, problem = FOUND, None
        try:
            registry = ws.registry_uri(name)
        except NotDeployed as exc:  # with --aws, SSM answered: not deployed here (yet)
            state, problem = NOT_DEPLOYED, str(exc)
        except (AwsError, RegistryError) as exc:  # SSM could not be read (credentials,
            # network...), or SDS_REGISTRY_<ENV> names no registry
            state, problem = UNREACHABLE, str(exc)
        except Exception as exc:
            # An AWS failure before SSM answered (no region: the SDK refuses to make a client),
            # said as every AWS failure is (sds.kernel.aws.errors.explain), as status says it.
            explained = explain(exc, doing=f"reading SSM parameters /sds/{name}/*")
            if explained is None:
                raise
            state, problem = UNREACHABLE, str(explained)
        rows.append(
            {
                "env": name,
                "promote_from": env.promote_from,
                "registry": registry,
                "state": state,
                "problem": problem,
                "pin": None if pin is None else pin.to_dict(),
            }
        )
    if not args.json:
        _print_table(rows, pins_read=lock is not None)
    problems = [] if lock_error is None else [lock_error]
    problems += unreachable({r["env"]: r["problem"] for r in rows if r["state"] == UNREACHABLE})
    if problems:
        raise Unreadable("; ".join(problems), {"environments": rows})
    if args.json:
        print_json(rows)
    return 0


def _print_table(rows: list[dict[str, Any]], *, pins_read: bool) -> None:
    print(
        table(
            [
                [
                    str(r["env"]),
                    str(r["promote_from"] or "-"),
                    _pin(r, pins_read=pins_read),
                    _where(r),
                ]
                for r in rows
            ],
            ["ENV", "PROMOTED FROM", "PIN", "REGISTRY"],
        )
    )


def _pin(row: dict[str, Any], *, pins_read: bool) -> str:
    if not pins_read:
        return "unreadable"
    return "-" if row["pin"] is None else f"v{row['pin']['version']}"


def _where(row: dict[str, Any]) -> str:
    if row["state"] == NOT_DEPLOYED:
        return f"(not deployed: {row['problem']})"
    if row["state"] == UNREACHABLE:
        return "(unreachable)"
    return str(row["registry"])
