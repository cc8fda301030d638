"""The live ``lbctl stats`` loop: poll the admin API, redraw, quit on ``q`` or Ctrl-C.

Drawing is ``render.dashboard`` (pure); this module only owns the terminal: rich ``Live``
and, when stdin is a terminal, cbreak mode so a single ``q`` quits without Enter (the
terminal settings are restored however the loop ends).

Once it has drawn, the loop outlives the server: when the admin API stops answering (serve
restarting, a reload that changed the token) it keeps the last figures on screen under a
line that says what failed, since when, and that it is retrying; the next answer replaces
that line with a note that it reconnected (and whether serve's pid changed).
"""

from __future__ import annotations

import contextlib
import select
import sys
import time

from rich.console import Console
from rich.live import Live
from rich.text import Text

from lbctl.errors import UserError
from lbctl.exitcodes import Exit
from lbctl.observe.render import dashboard, unreadable


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


NOTE_SECONDS = 10          # how long "reconnected" stays on screen


def _clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


class Connection:
    """What the status line says: nothing while all is well, the failure while retrying,
    then for a while that it reconnected."""

    def __init__(self, interval: float, clock=time.time) -> None:
        self.interval, self.clock = interval, clock
        self.down_since: float | None = None
        self.error = ""
        self.note: tuple[float, str] | None = None

    def failed(self, error: str) -> None:
        if self.down_since is None:
            self.down_since = self.clock()
        self.error = error

    def answered(self, before: dict, now: dict) -> None:
        if self.down_since is not None:
            restarted = before.get("pid") != now.get("pid")
            self.note = (self.clock(), f"reconnected at {_clock(self.clock())}" +
                         (f"; serve restarted (pid {before.get('pid')} -> {now.get('pid')})"
                          if restarted else ""))
        self.down_since = None

    def status(self) -> Text | None:
        if self.down_since is not None:
            return Text(f"{self.error}; retrying every {self.interval:g}s since "
                        f"{_clock(self.down_since)} (figures below are from then)",
                        style="bold red")
        if self.note is not None and self.clock() - self.note[0] < NOTE_SECONDS:
            return Text(self.note[1], style="green")
        return None


def fetch(client) -> dict:
    """``client.stats()``, checked to be a document ``dashboard`` can draw; a ``UserError``
    (exit 1) saying why not."""
    stats = client.stats()
    why = unreadable(stats)
    if why is not None:
        raise UserError(f"admin API at {getattr(client, 'url', '?')}: its /stats cannot be "
                        f"shown ({why}); is it lbctl's admin API, of this version?",
                        exit_code=Exit.RUNTIME)
    return stats


def watch(client, console: Console, interval: float, stdin=None) -> None:
    """Redraw every ``interval`` seconds until ``q``/``Q``, Ctrl-C or EOF on the terminal."""
    stats = fetch(client)                      # unreachable: AdminError before any drawing
    link = Connection(interval)
    try:
        with _keys(stdin or sys.stdin) as wait_key, \
                Live(dashboard(stats), console=console, auto_refresh=False,
                     screen=False, transient=False) as live:
            live.refresh()
            while True:
                key = wait_key(interval)
                if key in ("q", "Q", "\x04"):
                    return
                try:
                    fresh = fetch(client)
                except UserError as exc:       # the admin client's one-line errors
                    link.failed(str(exc))
                else:
                    link.answered(stats, fresh)
                    stats = fresh
                live.update(dashboard(stats, status=link.status()), refresh=True)
    except KeyboardInterrupt:
        return
