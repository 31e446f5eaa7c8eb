"""`sds completion SHELL`: the shell completion script (commands, options, environment names
from cdk.json, version numbers from the local registry)."""

from __future__ import annotations

import argparse

from sds.cli.arguments import Commands


def register(commands: Commands) -> None:
    parser = commands.add(
        "completion",
        run,
        "print the shell completion script (commands, options, environments, versions)",
        [
            'eval "$(sds completion bash)"     # add to ~/.bashrc',
            'eval "$(sds completion zsh)"      # add to ~/.zshrc',
            "sds completion fish > ~/.config/fish/completions/sds.fish",
        ],
        options=False,  # a shell script, not a result: no --json, no project needed
    )
    parser.add_argument("shell", choices=["bash", "zsh", "fish", "tcsh", "powershell"])


def run(args: argparse.Namespace) -> int:
    from argcomplete.shell_integration import shellcode

    print(shellcode(["sds"], shell=args.shell), end="")  # type: ignore[no-untyped-call]
    return 0
