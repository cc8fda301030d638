"""``lbctl demo``."""

from __future__ import annotations

import asyncio
import sys

import click

from lbctl.cli.params import Duration, Number

# The demo's traffic is gentle by design: a number for watching the dashboard, not a load
# test (infinity would be a busy loop).
MAX_LOAD = 1000.0


@click.command()
@click.option("--config", "config_path", type=click.Path(), default=None,
              metavar="FILE",
              help="Config to serve (default: the packaged sample.toml).")
@click.option("--load", default=20.0, show_default=True, metavar="RATE",
              type=Number(min=0, max=MAX_LOAD),
              help=f"Built-in traffic in requests per second, at most {MAX_LOAD:g}; 0 for "
                   "none.")
@click.option("--duration", default=None, type=Duration(),
              help='Stop after this long, e.g. 30 or "2m"; 0 (the default) runs until Ctrl-C.')
def command(config_path: str | None, load: float, duration: float | None) -> None:
    """Start demo backends, serve the sample config in front of them, and show live stats.

    The demo backends listen on the loopback ports the config names: one fast, one
    slower, one that fails now and then (and fails its health checks for 12 s every
    minute, from 10 s in). Everything stays on this machine. With the packaged sample, a
    port that is taken is replaced by a free one; with --config, it is an error naming it.

    \b
    Example:
      lbctl demo --duration 30
      lbctl demo --load 100          # busier; Ctrl-C to stop
    """
    from rich.console import Console

    from lbctl.demo.run import packaged_config, run_demo
    from lbctl.serve.loop import install_fast_loop
    install_fast_loop()
    sys.exit(asyncio.run(run_demo(config_path or packaged_config(), load=load,
                                  duration=duration, console=Console(),
                                  free_ports=config_path is None)))
