"""``lbctl serve CONFIG``."""

from __future__ import annotations

import logging
import sys

import click


def setup_logging(fmt: str = "text") -> None:
    """The event log goes to stderr (state changes, reloads, errors), never stdout
    (stdout may carry the access log)."""
    from lbctl.observe.events import JsonFormatter
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("lbctl")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


@click.command()
@click.argument("config", metavar="CONFIG", type=click.Path())
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Event log on stderr: human-readable text or JSON lines.")
@click.option("--pid-file", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Write the pid to PATH once listening (for lbctl reload, logrotate, "
                   "systemd's PIDFile=); removed on exit. Refused while a live process holds "
                   "it; a stale one is taken over.")
def command(config: str, log_format: str, pid_file: str | None) -> None:
    """Run the proxy described by CONFIG until SIGTERM or SIGINT.

    SIGTERM/SIGINT stop accepting, let requests in flight finish (up to
    limits.drain_timeout) and exit 0. SIGHUP re-reads CONFIG: a valid file is swapped
    in atomically, an invalid one is logged and the old config keeps serving. SIGUSR1
    reopens the access log file (after logrotate moved it). Under systemd (Type=notify)
    it reports READY, RELOADING and STOPPING to $NOTIFY_SOCKET itself.

    Exit codes: 0 clean stop, 2 bad config, 1 runtime failure (e.g. port in use, or
    --pid-file held by a running lbctl).

    \b
    Example:
      lbctl serve lb.toml
      lbctl serve --log-format json lb.toml 2>events.jsonl
      lbctl serve --pid-file /run/lbctl/lbctl.pid lb.toml
      lbctl reload lb.toml                         # validate, then SIGHUP that serve
      kill -USR1 "$(cat /run/lbctl/lbctl.pid)"     # reopen the access log
    """
    from lbctl.serve.main import serve
    setup_logging(log_format)
    sys.exit(serve(config, pid_file))
