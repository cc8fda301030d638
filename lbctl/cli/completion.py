"""``lbctl completion bash|zsh|fish``: print the shell completion script.

The script is click's own: the shell calls ``lbctl`` back with ``_LBCTL_COMPLETE`` set, and
click completes commands, options and choices from the same command tree ``--help`` shows,
so completion never falls behind the commands. Config arguments complete as file names.
"""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def command(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash 4.4+, zsh or fish).

    \b
    Examples:
      # bash: for this shell, then for every new one
      eval "$(lbctl completion bash)"
      lbctl completion bash > ~/.local/share/bash-completion/completions/lbctl
    \b
      # zsh: write it once, then source it from ~/.zshrc
      lbctl completion zsh > ~/.lbctl-complete.zsh
      echo '. ~/.lbctl-complete.zsh' >> ~/.zshrc
    \b
      # fish
      lbctl completion fish > ~/.config/fish/completions/lbctl.fish
    """
    from click.shell_completion import get_completion_class
    root = ctx.find_root()
    complete = get_completion_class(shell)(root.command, {}, "lbctl", "_LBCTL_COMPLETE")
    click.echo(complete.source())
