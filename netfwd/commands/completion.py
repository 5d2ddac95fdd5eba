"""`netfwd completion bash|zsh|fish`: print the shell's completion script (click's protocol)."""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_NETFWD_COMPLETE"  # click's variable for the program name `netfwd`


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (commands, options, choices and spec files).

    \b
    Examples:
      eval "$(netfwd completion bash)"                              # in ~/.bashrc
      netfwd completion zsh > "${fpath[1]}/_netfwd"                 # zsh
      netfwd completion fish > ~/.config/fish/completions/netfwd.fish
    """
    from click.shell_completion import get_completion_class

    from netfwd.cli import cli

    complete = get_completion_class(shell)
    assert complete is not None  # SHELLS are the ones click knows
    click.echo(complete(cli, {}, "netfwd", COMPLETE_VAR).source(), nl=False)
