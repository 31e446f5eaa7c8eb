"""The CLI's surface: every command documents itself with examples that actually parse."""

from __future__ import annotations

import argparse
import shlex

import pytest

from sds.cli.main import build_parser
from sds.kernel.errors import UsageError
from tests.unit.cli_run import sds


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (group,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(group.choices)


def examples(help_text: str) -> list[str]:
    block = help_text.split("examples:\n", 1)[1]
    lines = []
    for line in block.splitlines():
        if not line.startswith("  "):
            break
        lines.append(line.strip())
    return lines


def runnable(example: str) -> list[str]:
    """The sds arguments of an example, without shell around them (eval, $( ), comments, >)."""
    if example.startswith('eval "$('):
        example = example[len('eval "$(') :].split(')"', 1)[0]
    words = shlex.split(example, comments=True)
    if ">" in words:
        words = words[: words.index(">")]
    assert words[0] == "sds", example
    return words[1:]


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_given_any_command_then_its_help_shows_examples_that_parse(name: str) -> None:
    help_text = subcommands()[name].format_help()
    found = examples(help_text)
    assert found, f"sds {name} --help has no examples"
    for example in found:
        words = runnable(example)
        assert name in words, example
        args = build_parser().parse_args(words)  # a usage error would raise UsageError here
        assert args.command == name


def test_given_the_top_level_help_then_every_example_parses_and_exit_codes_are_listed() -> None:
    help_text = build_parser().format_help()
    for example in examples(help_text):
        build_parser().parse_args(runnable(example))
    assert "exit codes: 0 done" in help_text and "3 refused" in help_text
    assert 'eval "$(sds completion bash)"' in help_text


def test_given_any_command_that_reports_then_it_takes_json() -> None:
    without = {name for name, p in subcommands().items() if "--json" not in p.format_help()}
    assert without == set()


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_given_any_command_then_it_takes_the_global_options_after_its_name_too(name: str) -> None:
    # As the README says: --json, --project-dir and --aws go before or after the command
    taken = {option for action in subcommands()[name]._actions for option in action.option_strings}
    assert {"--json", "--project-dir", "--aws"} <= taken


@pytest.mark.parametrize(
    "argv",
    [
        ["completion", "bash", "--project-dir", "."],
        ["completion", "--aws", "bash"],
        ["--aws", "--project-dir", ".", "completion", "bash", "--json"],
    ],
    ids=" ".join,
)
def test_given_the_global_options_then_completion_takes_them_where_they_are(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    ended = sds(capsys, *argv)
    assert (ended.code, ended.err) == (0, "")
    assert "complete -o nospace" in ended.out  # the script, needing no project to print


@pytest.mark.parametrize("name", ["train", "models", "show", "promote", "rollback", "status"])
def test_given_an_environment_option_then_it_completes_environment_names(name: str) -> None:
    parser = subcommands()[name]
    env_actions = [
        a for a in parser._actions if a.dest in ("env", "to", "from_env") and a.option_strings
    ]
    if name == "rollback":
        env_actions = [a for a in env_actions if a.dest == "env"]  # its --to is a version
    assert env_actions
    assert all(callable(getattr(a, "completer", None)) for a in env_actions)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_given_any_command_then_its_arguments_and_run_live_in_its_own_module(name: str) -> None:
    parser = subcommands()[name]
    assert parser.get_default("func").__module__ == f"sds.cli.commands.{name}"


def test_given_on_fargate_then_the_command_works_against_aws() -> None:
    # The task, its network and its registry are the deployed environment's
    assert build_parser().parse_args(["train", "--on-fargate"]).aws is True
    assert build_parser().parse_args(["train", "--local"]).aws is False
    assert build_parser().parse_args(["--aws", "train"]).aws is True
    with pytest.raises(UsageError):  # still one or the other
        build_parser().parse_args(["train", "--on-fargate", "--local"])


def test_given_any_version_argument_then_it_is_the_one_version_number_type() -> None:
    from sds.cli.arguments import complete_version, version_number

    versions = {
        (name, action.dest): action
        for name, parser in subcommands().items()
        for action in parser._actions
        if "version" in action.dest or getattr(action, "completer", None) is complete_version
    }
    # Every argument that takes a model version (a --to of rollback included) ...
    assert set(versions) == {
        ("promote", "version"),
        ("rollback", "to"),
        ("score", "version"),
        ("shadow", "version"),
        ("show", "version"),
    }
    # ... parses it with the one shared type and completes it from the registry
    for action in versions.values():
        assert action.type is version_number
        assert getattr(action, "completer", None) is complete_version


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "{v}"],
        ["promote", "{v}", "--to", "dev"],
        ["shadow", "{v}", "--env", "dev"],
        ["rollback", "--env", "dev", "--to", "{v}"],
        ["score", "--version", "{v}", "--data", "in.jsonl", "--out", "out"],
    ],
    ids=lambda argv: argv[0],
)
@pytest.mark.parametrize("value", ["3", "v3", "03", "v03"])
def test_given_a_version_as_status_prints_it_or_bare_then_it_is_the_number(
    argv: list[str], value: str
) -> None:
    args = build_parser().parse_args([w.format(v=value) for w in argv])
    assert (args.to if argv[0] == "rollback" else args.version) == 3


def _flag_or_argument(action: argparse.Action) -> str:
    return "/".join(action.option_strings) or action.dest


def _says_its_default(action: argparse.Action, default_first: set[str]) -> bool:
    """Whether an argument has a default its help should state: a value argparse fills in (not
    a flag's False, an unset None, or an empty --reason), or the first environment."""
    if action.dest in default_first:
        return True
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return False
    return action.default not in (None, False, "", argparse.SUPPRESS)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_given_any_command_then_its_help_says_what_each_argument_does_and_its_default(
    name: str,
) -> None:
    parser = subcommands()[name]
    formatter = parser._get_formatter()
    default_first = {
        option.dest
        for option in parser.get_default("environment_options") or ()
        if option.default_first
    }
    missing, no_default = [], []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        # As `--help` shows it (argparse expands `%(default)s` and its friends).
        shown = formatter._expand_help(action) if action.help else ""
        if not shown.strip() or action.help == argparse.SUPPRESS:
            missing.append(_flag_or_argument(action))
        elif _says_its_default(action, default_first) and "default" not in shown:
            no_default.append(f"{_flag_or_argument(action)} (default {action.default!r})")
    assert not missing, f"sds {name} --help: no help text for {', '.join(missing)}"
    assert not no_default, f"sds {name} --help: the default is not said for {', '.join(no_default)}"
