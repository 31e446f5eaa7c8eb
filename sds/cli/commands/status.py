"""`sds status`: what each environment serves (pin, registry alias and, with --aws, the Lambda
alias and any deployment in progress), with a warning wherever they disagree. An environment in
another account than the caller's credentials shows its pin and registry alias, and a line saying
whose credentials read its Lambda alias and deployments (`other account: ...`).

The report (table or detail, its warnings included) is on stdout. What could not be read is an
error: an environment unreachable, the lock file that cannot be read or a registry alias that is
corrupt, said in one line on stderr (`sds: error: ENV is unreachable: ...`, the lock file's
problem once, the registry's words for the alias) with exit code 1, with or without --check, so
a script never takes "could not look" for "all fine". `--check` also fails (exit 1) when
anything disagrees, naming where. `--json` carries the whole report, and when the command fails,
the error as every command reports one, in the same document.
"""

from __future__ import annotations

import argparse

from sds.cli.arguments import Commands, env_option, workspace
from sds.cli.render import FailedResult, Unreadable, listing, print_json, table, unreachable
from sds.config import EnvironmentConfig
from sds.ops.status import EnvironmentStatus, moved
from sds.ops.workspace import Workspace


class OutOfSync(FailedResult):
    """`status --check` found a disagreement (or a version nothing could load): the report's
    warnings say what and what to do."""


def register(commands: Commands) -> None:
    parser = commands.add(
        "status",
        run,
        "what each environment serves: pin, registry alias and (with --aws) the Lambda alias "
        "and any deployment in progress; warns when they disagree",
        [
            "sds status",
            "sds status --env dev --json",
            "sds --aws status --env prod",
            "sds --aws status --check",
        ],
    )
    env_option(parser, "--env", help="one environment, in detail (default: all, as a table)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when anything disagrees (for scripts and CI); an environment that cannot "
        "be read exits 1 with or without it",
    )


def run(args: argparse.Namespace) -> int:
    from sds.ops.status import status

    ws = workspace(args)
    env: EnvironmentConfig | None = args.env
    results = status(ws, None if env is None else [env.name])
    ok = all(r.ok for r in results)
    document = {
        "target": ws.target,
        "lock_file": str(ws.lock_path),
        "ok": ok,
        "read": all(r.read for r in results),
        "environments": [r.to_dict() for r in results],
    }
    if not args.json:  # with --json, one document at the end: the report, or the error in it
        _print_report(results, env, ws)
    # The lock file's problem once, not once per environment; then each environment's own.
    problems = list(dict.fromkeys(r.lock_error for r in results if r.lock_error is not None))
    problems += unreachable({r.env: r.error for r in results if r.error is not None})
    problems += [r.alias_error for r in results if r.alias_error is not None]
    if problems:
        raise Unreadable("; ".join(problems), document)
    if args.check and not ok:
        names = [r.env for r in results if not r.ok]
        raise OutOfSync(
            f"{listing(names)} {'is' if len(names) == 1 else 'are'} out of sync (the report's "
            "warnings say what disagrees and what to do)",
            document,
        )
    if args.json:
        print_json(document)
    return 0


def _print_report(
    results: list[EnvironmentStatus], env: EnvironmentConfig | None, ws: Workspace
) -> None:
    if env is not None:
        print(_detail(results[0], ws))
        return
    print(_table(results, aws=ws.on_aws))
    for r in results:
        if r.not_deployed is not None:
            print(f"{r.env}: not deployed: {r.not_deployed}")
        if r.other_account is not None:
            print(f"{r.env}: other account: {r.other_account}")
        for line in _warnings(r):
            print(f"warning: {r.env}: {line}")
    if not ws.on_aws:
        print("(local target: the API follows the pin; add --aws for the deployed Lambda)")


def _version(version: int | None) -> str:
    return "-" if version is None else f"v{version}"


def _sha(sha256: str | None) -> str:
    return "-" if not sha256 else f"{sha256[:12]}..."


def _table(results: list[EnvironmentStatus], *, aws: bool) -> str:
    headers = ["ENV", "PIN", "SHADOW", "REGISTRY"]
    headers += (["LAMBDA", "DEPLOYMENT"] if aws else []) + ["STATE"]
    rows = []
    for r in results:
        row = [
            r.env,
            _version(None if r.pin is None else r.pin.version),
            # The challenger pinned beside the model (`sds shadow`); --env shows what AWS loads.
            _version(None if r.shadow is None else r.shadow.version),
            _version(None if r.alias is None else r.alias.version),
        ]
        if aws:
            live = "-"
            if r.live is not None:
                live = _version(r.live.primary.model_version)
                live += "".join(
                    f" +{s.weight:.0%} {_version(s.model_version)}" for s in r.live.served[1:]
                )
            deploying = ", ".join(f"{d.id} {d.status}" for d in r.deployments) or "-"
            row += [live, deploying]
        rows.append([*row, r.state])
    return table(rows, headers)


def _detail(r: EnvironmentStatus, ws: Workspace) -> str:
    lines = [f"{r.env} ({r.target}): {r.state}"]

    def line(label: str, value: str) -> None:
        lines.append(f"  {label:<11}{value}")

    pin = r.pin
    line(
        "pin",
        f"{_version(None if pin is None else pin.version)}  sha256 {_sha(None if pin is None else pin.sha256)}  ({ws.lock_path.name})",
    )
    if r.shadow is not None:
        line(
            "shadow",
            f"v{r.shadow.version}  sha256 {_sha(r.shadow.sha256)}  (scores beside the pin, "
            f"decides nothing: {ws.command(f'compare --env {r.env}')})",
        )
    alias = r.alias
    how = "" if alias is None else f", {moved(alias)}"
    line(
        "registry",
        f"{_version(None if alias is None else alias.version)}  sha256 {_sha(None if alias is None else alias.sha256)}  "
        f"({r.registry_uri or ('not deployed' if r.not_deployed else 'not read')}{how})",
    )
    if r.live is not None:
        first = r.live.primary
        line(
            "lambda",
            f"{_version(first.model_version)}  sha256 {_sha(first.sha256)}  "
            f"({r.live.function}:{r.live.alias} -> Lambda version {first.function_version})",
        )
        if first.shadow is not None:
            line("", f"+ shadow v{first.shadow.version}  sha256 {_sha(first.shadow.sha256)}")
        for s in r.live.served[1:]:
            line(
                "",
                f"+ {s.weight:.0%} of requests to Lambda version {s.function_version} "
                f"({_version(s.model_version)}, sha256 {_sha(s.sha256)})",
            )
    elif r.not_deployed is not None:
        line("lambda", "-  (not deployed)")
    elif r.other_account is not None:
        line("lambda", "-  (not read: another account)")
    elif r.target == "local" and r.error is None:
        line("lambda", "not checked locally (the local API follows the pin); add --aws")
    for d in r.deployments:
        moving = f", Lambda version {d.from_version} -> {d.to_version}" if d.to_version else ""
        line("deployment", f"{d.id} {d.status} since {d.created[:19].replace('T', ' ')}{moving}")
    unread = r.error is not None or r.not_deployed is not None or r.other_account is not None
    if r.target == "aws" and not r.deployments and not unread:
        line("deployment", "none in progress")
    if r.not_deployed is not None:
        lines.append(f"not deployed: {r.not_deployed}")
    if r.other_account is not None:
        lines.append(f"other account: {r.other_account}")
    for message in _warnings(r):
        lines.append(f"warning: {message}")
    return "\n".join(lines)


def _warnings(r: EnvironmentStatus) -> list[str]:
    """The report's warnings; a lock file or an alias that cannot be read is an error, on
    stderr."""
    return [w for w in r.warnings if w not in r.unread]
