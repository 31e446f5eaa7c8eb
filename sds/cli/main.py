"""`sds`: train, register, promote, roll back and serve models, per environment.

Exit codes: 0 done (or nothing to do), 1 error, 2 usage error, 3 refused (a promotion gate
failed, a concurrent change won, a rollback's target was never served by that environment or its
Lambda version cannot serve, or a batch run's --out holds another run (of other input, say) or
other files, with --aws too); 130 when interrupted (Ctrl-C), 143 when stopped by SIGTERM
(`timeout`, systemd, `docker stop`: the same cleanup as Ctrl-C, `sds.kernel.signals`), 141
(SIGPIPE's) quietly when the reader of stdout goes away (an error still says its one line on
stderr). Errors are one line on stderr;
`--json` prints machine-readable results on stdout, and errors there as `{"error": {...}}`.

Local mode is the zero-config default. `--aws` (or `SDS_TARGET=aws`) works against the deployed
stacks instead: registries come from SSM `/sds/<env>/registry-bucket` (unless
`SDS_REGISTRY_<ENV>` names one), `rollback` switches the Lambda alias `live`, and
`train --on-fargate` runs the training task.

This module only assembles the parser from the command modules (`sds.cli.commands`), resolves
the environment names it parsed, runs the command and turns its error into an exit code: the
error's own (`SdsError.exit_code`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from sds import __version__
from sds.cli.arguments import (
    CommandParser,
    Commands,
    Parser,
    common_options,
    global_options,
    resolve_environments,
    target_region,
)
from sds.cli.commands import COMMANDS
from sds.cli.render import report_error, report_interruption
from sds.kernel import sdk
from sds.kernel.aws.errors import explain
from sds.kernel.errors import SdsError, UsageError
from sds.kernel.signals import sigterm_as_interrupt

EPILOG = """examples:
  sds generate --events 100000 --out data/events.jsonl.gz
  sds train --data data/events.jsonl.gz --reason "weekly retrain"
  sds models
  sds promote 3 --to dev --reason "better PR AUC"
  sds promote --from dev --to staging --reason "passed dev checks"
  sds status
  sds rollback --env dev --reason "false positives spiking"
  sds --aws status --env prod
  sds --aws rollback --env prod --reason "alarm on false positives"
  sds --aws train --env dev --on-fargate --reason "weekly retrain"
  sds history --env dev
  sds serve --env dev --port 8080

every command takes --json (results on stdout; errors, usage errors included, as
{"error": {...}}) and has its own --help with examples. --json, --project-dir and --aws go
before or after the command. --aws (or SDS_TARGET=aws) works against the deployed stacks.

exit codes: 0 done (or nothing to do), 1 error (or `status --check` found a disagreement),
2 usage error, 3 refused (a promotion gate failed, a concurrent change won, a rollback's target
was never served by that environment or its Lambda version cannot serve, or a batch run's --out
holds another run (of other input, say) or other files, with --aws too), 130 interrupted
(Ctrl-C), 143 stopped by SIGTERM (cleaned up as on Ctrl-C).

shell completion: eval "$(sds completion bash)"   (also zsh, fish, tcsh, powershell)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="sds",
        description="Serverless data science on AWS: train, register, promote, roll back and serve models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sds {__version__}")
    global_options(parser)
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=CommandParser
    )
    subparsers.required = True
    commands = Commands(subparsers, common_options())
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM (`timeout`, systemd, `docker stop`) stops a command as Ctrl-C does: the same
    # cleanup, then `_run` reports which one it was.
    with sigterm_as_interrupt():
        try:
            code = _run(argv)
            # Buffered output (stdout into a pipe) is written here, not at exit, so a reader
            # that has gone by now is handled below rather than by the interpreter's final flush.
            sys.stdout.flush()
            return code
        except BrokenPipeError:  # also from an error's --json document (report_error)
            return _reader_gone()


def _reader_gone() -> int:
    """The reader went away (`sds history --json | head -1`): nothing is wrong and nobody is
    left to tell. Quiet, as any Unix tool that SIGPIPE stops, with its exit status; stdout
    points at /dev/null so the interpreter's final flush does not raise again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + 13


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions: answer, then exit
        import argcomplete

        argcomplete.autocomplete(parser)
    words = list(sys.argv[1:] if argv is None else argv)
    # A usage error is reported as JSON when --json is anywhere on the line (before `--`), even
    # where the parser did not get to it.
    as_json = "--json" in words[: words.index("--") if "--" in words else len(words)]
    try:
        args = parser.parse_args(words)
    except UsageError as exc:
        return report_error(exc, as_json=as_json)
    as_json = bool(args.json)
    args.command_line = words  # as typed, for messages that say what to run instead
    try:
        resolve_environments(args)
        # Where no AWS region is configured, the targeted environment's own, from cdk.json.
        with sdk.default_region(target_region(args)):
            return int(args.func(args))
    except SdsError as exc:  # every error sds raises on purpose carries its exit code
        return report_error(exc, as_json=as_json)
    except BrokenPipeError:  # before OSError's handler: a reader gone is no error
        return _reader_gone()
    # The fallback, for errors no sds class describes, all exit 1: the operating system's
    # (OSError, e.g. an unwritable --out path) and a bad value found by Python or a library
    # (ValueError, e.g. training's checks of its arguments), whose messages name the problem.
    except (OSError, ValueError) as exc:
        return report_error(exc, as_json=as_json)
    except Exception as exc:
        # An AWS failure no command wrapped (credentials, region, a bucket that is gone): said
        # through the one mapping of AWS errors to what to do (sds.kernel.aws.errors.explain).
        explained = explain(exc)
        if explained is None:
            raise
        return report_error(explained, as_json=as_json)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM; a command may say how to resume
        return report_interruption(exc, as_json=as_json)  # (sds.cli.batch_output)


if __name__ == "__main__":
    raise SystemExit(main())
