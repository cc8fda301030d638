"""Errors that are the user's to fix: they print as one clear message, never a traceback.

Also what the operator must fix rather than a backend: the process running out of a local
resource (file descriptors, memory, local ports). Such a failure is never held against a
backend (no failed probe, no ejection, no failure count); it is logged once per burst.
"""

from __future__ import annotations

import errno
import math
from typing import Callable

from lbctl.exitcodes import Exit


class UserError(Exception):
    """A problem the user can fix (bad file, bad option, port in use). ``str()`` is the message."""

    exit_code: int = Exit.USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


# The process's own limits, whatever the peer: too many open files (process, then system),
# no buffer space or memory, no local port left for a new connection (EADDRNOTAVAIL on
# connect).
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM,
                          errno.EADDRNOTAVAIL})


def local_resource_error(exc: BaseException | None) -> OSError | None:
    """The ``OSError`` behind ``exc`` (itself, or what it wraps, as aiohttp's connector errors
    do) when it is the process running out of something of its own; otherwise None."""
    seen = 0
    while exc is not None and seen < 4:
        if isinstance(exc, OSError) and exc.errno in LOCAL_ERRNOS:
            return exc
        exc = getattr(exc, "os_error", None) or exc.__cause__
        seen += 1
    return None


class Burst:
    """Says when an event starts a new burst: the first time, and again after ``quiet``
    seconds without one. A condition that lasts (out of descriptors under a flood) is logged
    once, not once per connection; ``count`` is how many events the current burst has had."""

    __slots__ = ("clock", "quiet", "last", "count")

    def __init__(self, clock: Callable[[], float], quiet: float = 10.0) -> None:
        self.clock = clock
        self.quiet = quiet
        self.last = -math.inf
        self.count = 0

    def new(self) -> bool:
        now = self.clock()
        fresh = now - self.last > self.quiet
        self.last = now
        self.count = 1 if fresh else self.count + 1
        return fresh
