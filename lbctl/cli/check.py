"""``lbctl check CONFIG``: probe every backend once and report like a monitoring plugin.

Its exit code and first line are its interface (cron, Nagios/Icinga, Sensu): 0 OK,
1 WARNING, 2 CRITICAL, 3 UNKNOWN, and ``LBCTL <STATUS> - <summary> | <perfdata>``. Anything
that stops the check from judging (unreadable or invalid config, a bad option, an unwritable
output file, a bug) is UNKNOWN with a one-line reason, never a traceback and never click's
usual exit 2, which a monitor would read as CRITICAL.
"""

from __future__ import annotations

import json
import sys

import click

from lbctl.cli.params import Duration
from lbctl.config.loader import ConfigError, load_config
from lbctl.errors import UserError
from lbctl.exitcodes import CheckExit
from lbctl.health import report as lib
from lbctl.health.render import render_table


class _MinHealthy(click.ParamType):
    name = "N|N%"

    def convert(self, value, param, ctx):
        if isinstance(value, lib.Thresholds):
            return value
        try:
            return lib.parse_min_healthy(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _CheckCommand(click.Command):
    """Bad usage is UNKNOWN (3) for a monitoring plugin, and still gets a status line."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            click.echo(lib.unknown_line(f"usage: {exc.format_message()}"))
            exc.exit_code = CheckExit.UNKNOWN
            raise


@click.command(cls=_CheckCommand)
@click.argument("config", metavar="CONFIG", type=click.Path())
@click.option("--pool", "pools", metavar="NAME", multiple=True,
              help="Check only this pool (repeatable). Default: every pool.")
@click.option("--timeout", type=Duration(), default=None,
              help="Probe timeout for every backend, overriding each pool's health.timeout.")
@click.option("--min-healthy", type=_MinHealthy(), default=None,
              help="Backends that must be up per pool, as a number or a percentage; below it "
                   "is CRITICAL. Default 1: a pool with none up is CRITICAL.")
@click.option("--warn-latency", type=Duration(), default=None,
              help="WARNING when a successful probe takes longer than this.")
@click.option("--crit-latency", type=Duration(), default=None,
              help="CRITICAL when a successful probe takes longer than this.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (see the README) and nothing else on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the status line.")
@click.option("--prometheus-textfile", metavar="PATH", default=None,
              help="Also write the results in Prometheus text format to PATH, atomically "
                   "(for node_exporter's textfile collector; name it *.prom).")
@click.option("--state-file", metavar="PATH", default=None,
              help="Keep rise/fall counters in PATH (JSON) across runs, so a backend is down "
                   "only after `fall` failed runs and up again after `rise` good ones.")
@click.option("--concurrency", type=click.IntRange(min=1), default=lib.DEFAULT_CONCURRENCY,
              show_default=True, help="Probes in flight at once.")
def command(config: str, pools: tuple[str, ...], timeout: float | None,
            min_healthy: lib.Thresholds | None, warn_latency: float | None,
            crit_latency: float | None, as_json: bool, quiet: bool,
            prometheus_textfile: str | None, state_file: str | None, concurrency: int) -> None:
    """Probe every backend of CONFIG once, with each pool's [health] settings, and report.

    Exit status (monitoring-plugin convention): 0 OK, 1 WARNING (a backend down, or slower
    than --warn-latency), 2 CRITICAL (a pool below --min-healthy, by default none up, or
    slower than --crit-latency), 3 UNKNOWN (unreadable or invalid config, bad option,
    internal error). The first line is always the status line, e.g.

    \b
      LBCTL WARNING - api 1/2 up, web 3/3 up | api_up=1;;;0;2 api_latency=0.004s

    A pool without [health] is checked with a TCP connect.

    \b
    Examples:
      lbctl check lb.toml
      lbctl check lb.toml --pool api --min-healthy 50% --warn-latency 200ms -q
      */1 * * * *  lbctl check /etc/lbctl.toml -q --state-file /var/lib/lbctl/check.json \\
                     --prometheus-textfile /var/lib/node_exporter/lbctl.prom
    """
    thresholds = lib.Thresholds(
        min_healthy=min_healthy.min_healthy if min_healthy else None,
        min_healthy_percent=min_healthy.min_healthy_percent if min_healthy else None,
        warn_latency=warn_latency, crit_latency=crit_latency)
    try:
        code = _check(config, pools, timeout, thresholds, as_json, quiet, prometheus_textfile,
                      state_file, concurrency)
    except Exception as exc:  # noqa: BLE001 - a monitor must get UNKNOWN, not a traceback
        _unknown(f"internal error: {type(exc).__name__}: {exc}", as_json, prometheus_textfile)
        code = CheckExit.UNKNOWN
    raise click.exceptions.Exit(int(code))


def _check(config_path, pools, timeout, thresholds, as_json, quiet, textfile, state_file,
           concurrency) -> CheckExit:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        problems = exc.problems
        message = str(problems[0]) if len(problems) == 1 else \
            f"{config_path}: invalid config ({len(problems)} problems)"
        _unknown(message, as_json, textfile, details=[str(p) for p in problems])
        return CheckExit.UNKNOWN

    state = None
    if state_file is not None:
        state, warning = lib.load_state(state_file)
        if warning:
            click.echo(f"lbctl: {warning}", err=True)
    try:
        report = lib.run_check(config, pools=pools, timeout=timeout, concurrency=concurrency,
                               thresholds=thresholds, state=state,
                               store=_store(config.store, timeout))
    except UserError as exc:            # e.g. --pool names a pool that does not exist
        _unknown(str(exc), as_json, textfile)
        return CheckExit.UNKNOWN

    # Files first: if one cannot be written, the run is UNKNOWN and says so in its line.
    outputs = []
    if state_file is not None and report.state is not None:
        outputs.append(("state file", state_file, lambda: lib.save_state(state_file, report.state)))
    if textfile is not None:
        outputs.append(("textfile", textfile,
                        lambda: lib.write_atomic(textfile, lib.prometheus_text(report))))
    for what, path, write in outputs:
        try:
            write()
        except OSError as exc:
            reason = f"cannot write {what} {path}: {exc.strerror or exc}; "
            if as_json:
                click.echo(json.dumps({**lib.to_json(report), "status": CheckExit.UNKNOWN.name,
                                       "error": reason.rstrip("; ")}))
            else:
                click.echo(lib.status_line(report, CheckExit.UNKNOWN, reason))
            return CheckExit.UNKNOWN

    if as_json:
        click.echo(json.dumps(lib.to_json(report)))
        return report.status
    click.echo(lib.status_line(report))
    if not quiet:
        tty = sys.stdout.isatty()
        from rich.console import Console    # only when a table is drawn: cron runs stay light
        console = Console(file=sys.stdout, no_color=not tty, highlight=False,
                          width=None if tty else 120)
        console.print(render_table(report, ascii_only=not tty))
        for pool in report.pools:
            for reason in pool.reasons:
                click.echo(f"{pool.status.name}: {pool.name}: {reason}")
        if report.store is not None:
            click.echo(report.store.line())
    return report.status


def _store(config, timeout: float | None):
    """The shared store to try, if there is one. A fresh connection takes several round
    trips (connect, AUTH, SELECT, the script), so it gets --timeout, or at least 1s."""
    if config.backend != "redis":
        return None
    from dataclasses import replace

    from lbctl.gateway.store import open_store
    return open_store(replace(config, timeout=timeout or max(config.timeout, 1.0)))


def _unknown(message: str, as_json: bool, textfile: str | None, details=()) -> None:
    if as_json:
        click.echo(json.dumps(lib.unknown_json(message)))
    else:
        click.echo(lib.unknown_line(message))
    for line in details:
        click.echo(line, err=True)
    if textfile is not None:
        # Dashboards should see that the check could not run, not the last good result.
        try:
            lib.write_atomic(textfile, lib.prometheus_text(None))
        except OSError as exc:
            click.echo(f"lbctl: cannot write {textfile}: {exc.strerror or exc}", err=True)
