"""``lbctl validate CONFIG``: check a config file without starting anything.

Prints a one-line summary and exits 0, or prints every problem (one per line, on stderr)
and exits 2. ``--effective`` prints the config as TOML with every default filled in.
"""

from __future__ import annotations

import click

from lbctl.cli.params import load_or_exit
from lbctl.config.effective import effective_toml
from lbctl.config.loader import summary


@click.command()
@click.argument("config", metavar="CONFIG", type=click.Path())
@click.option("--effective", is_flag=True,
              help="Print the config as TOML with every default filled in (durations as \"2s\", "
                   "sizes as \"1MiB\"), instead of the summary.")
def command(config: str, effective: bool) -> None:
    """Check CONFIG (a TOML file) and report every problem in it.

    Exit status: 0 valid, 2 invalid. Each problem names the file, the key path and what
    was expected, e.g.

    \b
      lb.toml: pools.api.backends[1].weight: expected a number > 0, found 0

    \b
    Examples:
      lbctl validate sample.toml
      lbctl validate --effective sample.toml > effective.toml
    """
    loaded = load_or_exit(config)
    line = f"{config}: OK ({summary(loaded)})"
    if effective:
        click.echo(effective_toml(loaded, header=f"{line}\nevery default filled in by lbctl validate --effective"), nl=False)
    else:
        click.echo(line)
