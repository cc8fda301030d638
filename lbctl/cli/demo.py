"""``lbctl demo``."""

from __future__ import annotations

import asyncio
import sys

import click


@click.command()
@click.option("--config", "config_path", default=None, metavar="FILE",
              help="Config to serve (default: the packaged sample.toml).")
@click.option("--load", default=20.0, show_default=True, metavar="RATE",
              help="Built-in traffic in requests per second; 0 for none.")
@click.option("--duration", default=None, type=float, metavar="SECONDS",
              help="Stop after this long (default: until Ctrl-C).")
def command(config_path: str | None, load: float, duration: float | None) -> None:
    """Start demo backends, serve the sample config in front of them, and show live stats.

    The demo backends listen on the loopback ports the config names: one fast, one
    slower, one that fails now and then. Everything stays on this machine.

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
                                  duration=duration, console=Console())))
