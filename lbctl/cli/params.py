"""Option types shared by the commands, so one kind of value reads the same everywhere, and
the one way a command that reads a config file reports it invalid (``load_or_exit``). The
commands that ask a running serve's admin API name it the same way (``admin_options``,
``admin_client``).

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


_ADMIN_OPTIONS = (
    click.option("--admin", "url", default=None, metavar="ADDRESS",
                 help="Admin API as host:port (like the config's [admin] address) or a URL "
                      "(default: from --config, else 127.0.0.1:9900)."),
    click.option("--config", "config_path", type=click.Path(), default=None, metavar="FILE",
                 help="Read the admin address and token from this config's [admin]."),
    click.option("--token", default=None, metavar="TOKEN",
                 help="Bearer token (default: the config's, else env LBCTL_ADMIN_TOKEN)."),
)


def admin_options(f):
    """``--admin``, ``--config`` and ``--token``: which serve's admin API a command asks."""
    for option in reversed(_ADMIN_OPTIONS):
        f = option(f)
    return f


def admin_client(url: str | None, config_path: str | None, token: str | None):
    """The admin API of the serve that ``--admin`` or the config file names."""
    from lbctl.admin.client import AdminClient, admin_url
    base, config_token = admin_url(url, config_path)
    return AdminClient(base, token or config_token)
