"""Option types shared by the commands, so one kind of value reads the same everywhere, and
the one way a command that reads a config file reports it invalid (``load_or_exit``).

``Duration`` is the config file's rule on the command line: a number is seconds, text has a
unit (``--timeout 2``, ``--timeout 2s`` and ``--timeout 150ms`` all work). Every duration
option of every command uses it; ``tests/test_cli_durations.py`` walks the command tree to
keep it so.
"""

from __future__ import annotations

import click

from lbctl.units import DURATION_EXPECTED, parse_duration


class Duration(click.ParamType):
    """Seconds as float. ``positive``: zero is refused too (a period, a run length)."""

    name = "DURATION"

    def __init__(self, *, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value            # a default already converted, or a caller's float
        try:
            seconds = parse_duration(value)
        except ValueError:
            seconds = None
        if seconds is None or (self.positive and seconds <= 0):
            expected = DURATION_EXPECTED + (", above zero" if self.positive else "")
            self.fail(f"expected {expected}, found {value!r}", param, ctx)
        return seconds


class Number(click.FloatRange):
    """A float within a range, and finite: click's ``FloatRange`` lets NaN through (every
    comparison with it is false), and a NaN rate or speed-up is nobody's intent."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if number != number or number in (float("inf"), float("-inf")):
            self.fail(f"expected a finite number, found {value!r}", param, ctx)
        return number


def load_or_exit(path: str, consequence: str = ""):
    """The config at ``path``, or every problem on stderr, then ``PATH: invalid (N problems)``
    (and ``; consequence``) and exit 2."""
    from lbctl.config import ConfigError, load_config
    from lbctl.exitcodes import Exit
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        count = len(exc.problems)
        tail = f"; {consequence}" if consequence else ""
        click.echo(f"{path}: invalid ({count} problem{'s' if count != 1 else ''}){tail}",
                   err=True)
        raise click.exceptions.Exit(Exit.USAGE) from None
