"""What the command modules share on the argument side: how a command is added, the options
every command takes, environment and version arguments (with shell completion), and the
workspace the parsed arguments name.

Environment names are resolved once, here, right after parsing (`resolve_environments`): each
`--env`, `--to` or `--from` declared with `env_option` becomes that environment's config from
cdk.json (an unknown name is a ConfigError that lists the known ones), so the commands and the
operations below them never re-validate a name.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from sds.config import ConfigError
from sds.kernel.errors import UsageError
from sds.kernel.registry import RegistryError
from sds.ops.workspace import Workspace

Run = Callable[[argparse.Namespace], int]

AWS_HELP = "work against the deployed stacks, found through SSM /sds/<env>/ (or SDS_TARGET=aws)"


JSON_HELP = "machine-readable output on stdout (errors too, usage errors included)"
PROJECT_DIR_HELP = "the directory holding cdk.json (default: $SDS_PROJECT_DIR, else search upward)"


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are `UsageError`s: `main` reports them as it reports
    every error (one line on stderr, exit 2, and the JSON document with --json), instead of
    argparse's usage text and `sys.exit(2)`. Subcommand parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see: {self.prog} --help)")


class CommandParser(Parser):
    """A command's parser (`sds show`): words after the command that it does not know are its
    usage error (`see: sds show --help`). argparse would hand them up to the top-level parser,
    whose error points at `sds --help`; nothing there could take them."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def global_options(parser: argparse.ArgumentParser) -> None:
    """The options accepted before the command (`sds --json --project-dir DIR models`); each
    command accepts them after its name too (`common_options`)."""
    parser.add_argument("--json", action="store_true", default=False, help=JSON_HELP)
    parser.add_argument("--project-dir", default=None, help=PROJECT_DIR_HELP)
    parser.add_argument("--aws", action="store_true", default=False, help=AWS_HELP)


def common_options() -> CommandParser:
    """The options every command takes after its name (a parent parser): the global ones, so
    that `sds CMD --json` is `sds --json CMD`, for a command that needs no project too."""
    common = CommandParser(add_help=False)
    # Also accepted before the command: SUPPRESS keeps a top-level `sds --json CMD` in effect.
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
    common.add_argument("--project-dir", default=argparse.SUPPRESS, help=PROJECT_DIR_HELP)
    common.add_argument("--aws", action="store_true", default=argparse.SUPPRESS, help=AWS_HELP)
    return common


def positive_count(text: str) -> int:
    """A count of things, 1 or more: 0 or less is a usage error (never "the default")."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number, 1 or more")
    return value


def workers_option(parser: argparse._ActionsContainer, help_text: str) -> None:
    """`--workers N`: worker processes, 1 or more (0 or less is a usage error, never a default)."""
    parser.add_argument("--workers", type=positive_count, default=None, help=help_text)


def _moment(text: str) -> str:
    from training.capture_data import parse_moment
    from training.data import DataError

    try:
        parse_moment(text, what="")
    except DataError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a date (2026-03-01) or an ISO 8601 time with a time zone "
            "(2026-03-01T12:00:00Z)"
        ) from None
    return text


def moment_option(parser: argparse._ActionsContainer, flag: str, help_text: str) -> None:
    """A `--since`/`--until`/`--as-of` time, checked as the arguments are parsed (a usage error,
    exit 2, for every command alike); the command receives the text as typed."""
    parser.add_argument(flag, type=_moment, default=None, help=help_text)


def port_number(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is a number from 0 to 65535")
    return value


@dataclass(frozen=True)
class Commands:
    """The `sds` subcommands; each command module's `register` adds its own through `add`."""

    subparsers: argparse._SubParsersAction[CommandParser]
    common: CommandParser

    def add(
        self, name: str, run: Run, help_text: str, examples: Sequence[str]
    ) -> argparse.ArgumentParser:
        """Add command `name`, run by `run`; its --help shows `help_text` and `examples`, and it
        takes the global options after its name too (`common_options`)."""
        parser = self.subparsers.add_parser(
            name,
            parents=[self.common],
            help=help_text,
            description=textwrap.fill(help_text, 88),
            epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(func=run)
        return parser


# Workspace ------------------------------------------------------------------------------------


def workspace(args: argparse.Namespace) -> Workspace:
    """The project the arguments name (--project-dir, --aws), discovered once per command."""
    found: Workspace | None = getattr(args, "_workspace", None)
    if found is None:
        found = Workspace.discover(
            project_dir=Path(args.project_dir) if args.project_dir else None,
            target="aws" if getattr(args, "aws", False) else None,
        )
        args._workspace = found
    return found


# Environments ---------------------------------------------------------------------------------

# The namespace attributes listing a command's environment options, and those of them given on
# the command line (not left to their default).
_ENVIRONMENT_OPTIONS = "environment_options"
_GIVEN_ENVIRONMENTS = "environments_given"
ENV_HELP = "the environment (a name from cdk.json)"
ENV_FIRST_HELP = (
    "the environment (a name from cdk.json; default: the first, where versions are registered)"
)


@dataclass(frozen=True)
class _EnvironmentOption:
    dest: str
    default_first: bool


def env_option(
    parser: argparse.ArgumentParser, *flags: str, default_first: bool = False, **kwargs: Any
) -> None:
    """An option naming an environment: it completes names from cdk.json and, once parsed, holds
    that environment's config (`resolve_environments`). With `default_first`, leaving it out
    means the first environment of the promotion chain (where new versions are registered).
    Without a `help`, its help says that it takes an environment's name (and that default)."""
    kwargs.setdefault("help", ENV_FIRST_HELP if default_first else ENV_HELP)
    action = completed(parser.add_argument(*flags, **kwargs), complete_env)
    declared = parser.get_default(_ENVIRONMENT_OPTIONS) or ()
    option = _EnvironmentOption(action.dest, default_first)
    parser.set_defaults(**{_ENVIRONMENT_OPTIONS: (*declared, option)})


def resolve_environments(args: argparse.Namespace) -> None:
    """Replace each environment option's name with its config (or the first environment's,
    where that is the default); an unknown name raises ConfigError naming the known ones.
    Which ones were given, not defaulted, is kept for `environment_given`.

    Commands without environment options need no project, and are left alone.
    """
    options: tuple[_EnvironmentOption, ...] = getattr(args, _ENVIRONMENT_OPTIONS, ())
    if not options:
        return
    config = workspace(args).config
    given: set[str] = set()
    for option in options:
        name = getattr(args, option.dest)
        if name is not None:
            given.add(option.dest)
        elif option.default_first:
            name = config.first_environment
        setattr(args, option.dest, None if name is None else config.env(name))
    setattr(args, _GIVEN_ENVIRONMENTS, frozenset(given))


def environment_given(args: argparse.Namespace, dest: str) -> bool:
    """Whether environment option `dest` was on the command line, not left to its default: what
    a command checks to refuse one that means nothing where it runs."""
    given: frozenset[str] = getattr(args, _GIVEN_ENVIRONMENTS, frozenset())
    return dest in given


def target_region(args: argparse.Namespace) -> str | None:
    """The region cdk.json gives the environments the command targets (`--env`, `--to`,
    `--from`, resolved), when they share one: what AWS clients call where no region is
    configured (`sds.kernel.sdk.region`). None for a command that targets no environment
    (`status` of all, `envs`) or environments in different regions: nothing says which."""
    options: tuple[_EnvironmentOption, ...] = getattr(args, _ENVIRONMENT_OPTIONS, ())
    regions = {
        env.infra.region
        for env in (getattr(args, option.dest) for option in options)
        if env is not None
    }
    return regions.pop() if len(regions) == 1 else None


# Completion -----------------------------------------------------------------------------------


def completed(action: argparse.Action, completer: Callable[..., list[str]]) -> argparse.Action:
    action.completer = completer  # type: ignore[attr-defined]  # argcomplete's protocol
    return action


VERSION_HELP = "the model version (3, or v3 as the status report prints it)"


def version_number(text: str) -> int:
    """A model version as typed: `3`, or `v3` as `sds status` prints it (and users copy it from
    there). 1 or more; anything else (`vx`, `0`, `-1`, `3.5`) is a usage error naming it."""
    digits = text.removeprefix("v")
    # isascii: int() would take other scripts' digits, spaces and a sign too.
    if not (digits.isascii() and digits.isdigit()) or int(digits) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a model version is a whole number, 1 or more, as in 3 or v3"
        )
    return int(digits)


def version_argument(parser: argparse.ArgumentParser, *flags: str, **kwargs: Any) -> None:
    """A model version number (`version_number`: `3` or `v3`), completed from the environment's
    local registry. Without a `help`, its help says what it takes."""
    kwargs.setdefault("help", VERSION_HELP)
    completed(parser.add_argument(*flags, type=version_number, **kwargs), complete_version)


def _completion_workspace(parsed_args: argparse.Namespace) -> Workspace:
    project_dir = getattr(parsed_args, "project_dir", None)
    return Workspace.discover(project_dir=Path(project_dir) if project_dir else None)


def complete_env(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Environment names from cdk.json, for --env, --to and --from."""
    try:
        ws = _completion_workspace(parsed_args)
    except (ConfigError, OSError):
        return []
    return [name for name in ws.config.environments if name.startswith(prefix)]


def complete_version(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Version numbers in the environment's local registry (no network calls while typing), as
    the prefix has them begun: `3` or `v3`."""
    try:
        ws = _completion_workspace(parsed_args)
        if ws.on_aws or getattr(parsed_args, "aws", False):
            return []
        # While typing, names are as typed (nothing is resolved yet): complete known ones only.
        env = (
            getattr(parsed_args, "from_env", None)
            or getattr(parsed_args, "env", None)
            or ws.config.first_environment
        )
        if env not in ws.config.environments:
            return []
        versions = ws.registry(env).list_versions()
    except (ConfigError, RegistryError, OSError, ValueError):
        return []
    # Completed as begun: `v` then tab offers v1, v2, ...; a digit offers bare numbers.
    shown = "v" if prefix.startswith("v") else ""
    return [f"{shown}{v}" for v in versions if f"{shown}{v}".startswith(prefix)]
