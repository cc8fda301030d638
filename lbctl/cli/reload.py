"""``lbctl reload CONFIG``: validate CONFIG, then tell the serve of CONFIG to reload it."""

from __future__ import annotations

import click



@click.command()
@click.argument("config", metavar="CONFIG", type=click.Path())
@click.option("--pid-file", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="The pid file serve was started with (default: find the lbctl serve "
                   "process whose command line names CONFIG).")
def command(config: str, pid_file: str | None) -> None:
    """Check CONFIG, then send SIGHUP to the lbctl serve running it.

    Nothing is signalled when CONFIG is invalid: every problem is printed, as by
    `lbctl validate`, and the running serve keeps its configuration. The serve logs the
    outcome of the reload ("reloaded ..." or "reload rejected: ...") in its event log.

    Exit codes: 0 signalled; 2 CONFIG invalid; 1 no running serve found (no pid file,
    a dead pid, a pid that is not lbctl serve of CONFIG) or not allowed to signal it.

    \b
    Examples:
      lbctl serve --pid-file /run/lbctl/lbctl.pid /etc/lbctl/lb.toml
      lbctl reload /etc/lbctl/lb.toml --pid-file /run/lbctl/lbctl.pid
      lbctl reload lb.toml        # the lbctl serve started with lb.toml
    """
    from lbctl.cli.params import load_or_exit
    from lbctl.config.loader import summary
    from lbctl.control.signals import signal_reload
    loaded = load_or_exit(config, "nothing signalled")
    pid = signal_reload(config, pid_file)
    click.echo(f"{config}: OK ({summary(loaded)}); reload signalled to pid {pid}")
