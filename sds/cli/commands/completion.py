"""`sds completion SHELL`: the shell completion script (commands, options, environment names
from cdk.json, version numbers from the local registry)."""

from __future__ import annotations

import argparse

from sds.cli.arguments import Commands
from sds.cli.render import print_json


def register(commands: Commands) -> None:
    parser = commands.add(
        "completion",
        run,
        "print the shell completion script (commands, options, environments, versions)",
        [
            'eval "$(sds completion bash)"     # add to ~/.bashrc',
            'eval "$(sds completion zsh)"      # add to ~/.zshrc',
            "sds completion fish > ~/.config/fish/completions/sds.fish",
            "sds completion bash --json        # the script as a JSON string",
        ],
    )
    parser.add_argument(
        "shell",
        choices=["bash", "zsh", "fish", "tcsh", "powershell"],
        help="the shell to complete in: %(choices)s",
    )


def run(args: argparse.Namespace) -> int:
    from argcomplete.shell_integration import shellcode

    script = shellcode(["sds"], shell=args.shell)  # type: ignore[no-untyped-call]
    if args.json:
        print_json({"shell": args.shell, "script": script})
    else:
        print(script, end="")
    return 0
