"""The live ``lbctl stats`` loop: poll the admin API, redraw, quit on ``q`` or Ctrl-C.

Drawing is ``render.dashboard`` (pure); this module only owns the terminal: rich ``Live``
and, when stdin is a terminal, cbreak mode so a single ``q`` quits without Enter (the
terminal settings are restored however the loop ends).
"""

from __future__ import annotations

import contextlib
import select
import sys

from rich.console import Console
from rich.live import Live

from lbctl.observe.render import dashboard


@contextlib.contextmanager
def _keys(stream):
    """Yield a function waiting up to ``timeout`` for a key (None when none came)."""
    try:
        import termios
        import tty
        fd = stream.fileno()
        interactive = stream.isatty()
    except (ImportError, AttributeError, ValueError, OSError):
        interactive = False
    if not interactive:
        import time

        def wait(timeout: float) -> str | None:
            time.sleep(timeout)
            return None
        yield wait
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)

        def wait(timeout: float) -> str | None:
            ready, _, _ = select.select([fd], [], [], timeout)
            if ready:
                import os
                return os.read(fd, 1).decode(errors="replace")
            return None
        yield wait
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def watch(client, console: Console, interval: float, stdin=None) -> None:
    """Redraw every ``interval`` seconds until ``q``/``Q``, Ctrl-C or EOF on the terminal."""
    stats = client.stats()                     # unreachable: AdminError before any drawing
    try:
        with _keys(stdin or sys.stdin) as wait_key, \
                Live(dashboard(stats), console=console, auto_refresh=False,
                     screen=False, transient=False) as live:
            live.refresh()
            while True:
                key = wait_key(interval)
                if key in ("q", "Q", "\x04"):
                    return
                live.update(dashboard(client.stats()), refresh=True)
    except KeyboardInterrupt:
        return
