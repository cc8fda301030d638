"""``lbctl stats``."""

from __future__ import annotations

import json
import sys

import click

from lbctl.cli.params import Duration, admin_client, admin_options


@click.command()
@admin_options
@click.option("--interval", type=Duration(positive=True), default="1s", show_default=True,
              help="Refresh period of the live view.")
@click.option("--once", is_flag=True, help="Print the tables once and exit (scripts, non-terminals).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the /stats JSON document once and nothing else on stdout.")
def command(url: str | None, config_path: str | None, token: str | None, interval: float,
            once: bool, as_json: bool) -> None:
    """Live per-pool, per-backend view of a running `lbctl serve`, through its admin API.

    State in colour, weight (effective/configured), in-flight, req/s, p50/p99 latency,
    error rate and sparklines of req/s and p99 over the last minute (the sparklines give
    way first in a narrow terminal). Press q or Ctrl-C to quit. When serve restarts, the
    live view says so and keeps retrying; the admin API must answer the first time.
    The same figures, with controls, are on the web dashboard at the admin address.

    Exit codes: 0; 1 cannot reach the admin API; 2 bad usage.

    \b
    Example:
      lbctl stats                          # http://127.0.0.1:9900
      lbctl stats --admin 127.0.0.1:9900 --interval 500ms
      lbctl stats --config lb.toml --once
      lbctl stats --json | jq '.pools[].backends[] | {name, state, inflight}'
    """
    from rich.console import Console

    client = admin_client(url, config_path, token)
    if as_json:
        click.echo(json.dumps(client.stats(), indent=2))
        return
    from lbctl.observe.dashboard import fetch, watch
    from lbctl.observe.render import dashboard
    # Not a terminal: rich would assume 80 columns and squeeze the names; a file can be wide.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    if once or not sys.stdout.isatty():
        console.print(dashboard(fetch(client)))
        return
    watch(client, console, interval)
