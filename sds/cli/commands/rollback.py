"""`sds rollback`: point an environment back at its previous (or a given) version.

Locally it moves the registry alias and the pin; with `--aws` it also switches the Lambda alias
`live` (no redeploy), after making sure the target Lambda version can serve (re-activating it if
Lambda reports it Inactive, with progress on stderr) and stopping an in-flight deployment.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sds.cli.arguments import Commands, env_option, version_argument, workspace
from sds.cli.render import print_json
from sds.config import EnvironmentConfig
from sds.kernel.activation import DEFAULT_TIMEOUT_S
from sds.kernel.errors import UsageError
from sds.ops.workspace import Workspace

if TYPE_CHECKING:
    from sds.ops.promotion import LockChange

ACTIVATION_HELP = (
    "with --aws: how long to wait for an Inactive or Pending target Lambda version to become "
    f"Active before refusing (seconds; default {DEFAULT_TIMEOUT_S:.0f}; 0: refuse unless it is "
    "Active now)"
)
# sds.ops.aws_rollback's LEASE_WAIT_S and LEASE_TTL_S (importing it here would load numpy on
# every start of the CLI; a test checks that the two agree)
LEASE_HELP = (
    "with --aws: how long to wait while another rollback of ENV holds its lease before refusing "
    "(seconds; default 120: a dead holder's lease expires within 60 s; 0: refuse at once if it "
    "is held)"
)
LEASE_ID_CHARS = 12  # sds.ops.aws_rollback.LEASE_ID_CHARS
BREAK_HELP = (
    "with --aws: take over the lease of a rollback known to be dead (killed, its machine gone) "
    "at once instead of waiting for it to expire; ID is the lease id the waiting line shows. "
    "Audited as a lease_broken event; refused if someone else holds the lease now"
)


def seconds(text: str) -> float:
    """A duration in seconds, 0 or more (argparse reports anything else as a usage error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text!r}")
    return value


def lease_id(text: str) -> str:
    """A lease id as the waiting line shows it (hex digits, at least its first 12)."""
    value = text.strip().lower()
    if len(value) < LEASE_ID_CHARS or any(c not in "0123456789abcdef" for c in value):
        raise argparse.ArgumentTypeError(
            f"not a lease id: {text!r} (the {LEASE_ID_CHARS} hex digits after 'lease id' in the "
            "line that names the holder)"
        )
    return value


def register(commands: Commands) -> None:
    parser = commands.add(
        "rollback",
        run,
        "point an environment back at the previous (or a given) version",
        [
            'sds rollback --env dev --reason "false positives spiking"',
            'sds rollback --env dev --to v2 --reason "back to the last good model"',
            'sds --aws rollback --env prod --reason "alarm on false positives"',
            'sds --aws rollback --env prod --to 7 --activation-timeout 900 --reason "incident 42"',
            'sds --aws rollback --env prod --break-lease 7f1b0437742b --reason "killed it, INC-42"',
        ],
    )
    env_option(parser, "--env", required=True, help="the environment whose live model to roll back")
    version_argument(parser, "--to", help="version to roll back to (default: the previous one)")
    parser.add_argument("--reason", default="", help="why (recorded in the audit trail)")
    parser.add_argument(
        "--activation-timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help=ACTIVATION_HELP,
    )
    parser.add_argument(
        "--lease-timeout", type=seconds, default=None, metavar="SECONDS", help=LEASE_HELP
    )
    parser.add_argument("--break-lease", type=lease_id, default=None, metavar="ID", help=BREAK_HELP)


def run(args: argparse.Namespace) -> int:
    from sds.ops.promotion import rollback

    ws = workspace(args)
    env: EnvironmentConfig = args.env
    if ws.on_aws:
        return _run_live(ws, env.name, args)
    if args.activation_timeout is not None:
        raise UsageError(
            "--activation-timeout applies to rollbacks on AWS only (sds --aws rollback ...): "
            "a local rollback switches no Lambda version"
        )
    for given, option in (
        (args.lease_timeout, "--lease-timeout"),
        (args.break_lease, "--break-lease"),
    ):
        if given is not None:
            raise UsageError(
                f"{option} applies to rollbacks on AWS only (sds --aws rollback ...): a local "
                "rollback takes no lease (its registry alias moves by compare-and-swap)"
            )
    change = rollback(ws, env=env.name, to_version=args.to, reason=args.reason)
    lock = change.lock
    if args.json:
        print_json(change.to_dict())
    elif not change.changed:
        if lock is None or not lock.changed:
            print(f"{env.name} already serves version {change.version}; nothing to do")
        else:  # the alias was there, the lock file behind it: say what the re-run rewrote
            print(f"{env.name} already serves version {change.version}")
            _print_lock_change(lock, ws.lock_path)
    else:
        print(
            f"{env.name}: version {change.previous} -> version {change.version} "
            f"(rolled back in {change.duration_ms:.0f} ms; pin updated in {ws.lock_path})"
        )
        shadow = None if lock is None else lock.shadow_phrase()
        if shadow is not None:
            print(f"  {shadow}")
    return 0


def _run_live(ws: Workspace, env: str, args: argparse.Namespace) -> int:
    from sds.ops.aws_rollback import LEASE_WAIT_S, rollback_live

    if args.break_lease is not None and not args.reason.strip():
        raise UsageError(
            "--break-lease needs --reason: breaking another operator's lease is audited, "
            "say why you know its rollback is dead (e.g. --reason 'killed it, INC-42')"
        )

    def say(line: str) -> None:  # the lease and activation waits, on stderr; --json: quiet
        if not args.json:
            print(line, file=sys.stderr, flush=True)

    timeout = DEFAULT_TIMEOUT_S if args.activation_timeout is None else args.activation_timeout
    done = rollback_live(
        ws,
        env=env,
        to_version=args.to,
        reason=args.reason,
        activation_timeout_s=timeout,
        lease_timeout_s=LEASE_WAIT_S if args.lease_timeout is None else args.lease_timeout,
        break_lease=args.break_lease,
        say=say,
    )
    if args.json:
        print_json(done.to_dict())
        return 0
    lock = done.lock
    if not done.changed:
        serves = (
            f"{env} already serves model version {done.version} "
            f"(Lambda {done.function}:{done.alias} -> version {done.lambda_to})"
        )
        if lock is None or not lock.changed:
            print(f"{serves}; nothing to do")
            _say_broken(done.broken_lease)
            return 0
        print(serves)  # the alias was there, the lock file behind it: say what was rewritten
        _say_broken(done.broken_lease)
        _print_lock_change(lock, ws.lock_path)
        return 0
    if done.lambda_from == done.lambda_to:
        switched = f"already on Lambda version {done.lambda_to}, which serves it"
    else:
        switched = f"Lambda version {done.lambda_from} -> {done.lambda_to}"
    print(
        f"{env}: model version {done.previous} -> {done.version}; "
        f"alias {done.alias} of {done.function}: {switched} (no routing weights)"
    )
    if done.target_state and done.target_state != "Active":
        print(
            f"  Lambda version {done.lambda_to} was {done.target_state}: Active after "
            f"{done.activation_ms / 1000:.0f} s, then switched"
        )
    _say_broken(done.broken_lease)
    for deployment in done.stopped_deployments:
        print(f"  stopped CodeDeploy deployment {deployment} first (without its own rollback)")
    shadow = None if lock is None else lock.shadow_phrase()
    if shadow is not None:
        print(f"  {shadow}")
    print(
        f"  registry alias moved and audited; pin rewritten in {ws.lock_path}: commit it "
        "so the next deploy keeps the rollback"
    )
    print(f"  done in {done.duration_ms:.0f} ms")
    return 0


def _print_lock_change(lock: LockChange, lock_file: Path) -> None:
    """What a rollback that moved no alias still changed in `lock_file`."""
    shadow = lock.shadow_phrase()
    if shadow is not None:
        print(f"  {shadow}")
    if lock.pin_rewritten:
        print(
            f"  pin rewritten in {lock_file} to follow the alias ({lock.was_phrase()}): commit it"
        )


def _say_broken(broken: dict[str, Any] | None) -> None:
    if broken is not None:
        print(
            f"  broke the lease of {broken['holder']} (lease id {broken['lease_id']}) first: "
            "audited as lease_broken"
        )
