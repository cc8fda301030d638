"""Per-connection deadlines that are set again for every exchange without a timer each time.

A keep-alive connection sets the same kinds of deadline (response, keep-alive idle) over and
over, and almost every one is met. Arming and cancelling an event-loop timer for each costs
more than the rest of the bookkeeping of a small request, so a ``Deadline`` keeps one timer
pending and, when it fires, compares the clock with the deadline current *then*: met (or
cleared) deadlines cost nothing, a later one re-arms the timer, a due one runs its action.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

TIMER_RESOLUTION = 0.001       # event-loop timers fire with millisecond granularity


class Deadline:
    __slots__ = ("loop", "handle", "when", "deadline", "action", "arg")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.handle: asyncio.TimerHandle | None = None
        self.when = 0.0                   # when the pending timer fires
        self.deadline: float | None = None
        self.action: Callable[[Any], None] | None = None
        self.arg: Any = None

    @property
    def active(self) -> bool:
        return self.deadline is not None

    def start(self, timeout: float, action: Callable[[Any], None], arg: Any = None) -> None:
        """Run ``action(arg)`` ``timeout`` seconds from now unless ``stop`` comes first."""
        self.deadline = deadline = self.loop.time() + timeout
        self.action, self.arg = action, arg
        if self.handle is not None:
            if self.when <= deadline:
                return                    # fires first, then re-arms for this deadline
            self.handle.cancel()          # a shorter timeout than the pending one
        self.when = deadline
        self.handle = self.loop.call_at(deadline, self._fire)

    def stop(self) -> None:
        """The deadline was met; the pending timer, if any, will find nothing to do."""
        self.deadline = None
        self.action = self.arg = None

    def cancel(self) -> None:
        """The connection is done: stop, and leave no timer holding on to it."""
        self.stop()
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _fire(self) -> None:
        self.handle = None
        deadline = self.deadline
        if deadline is None:
            return
        if self.loop.time() >= deadline - TIMER_RESOLUTION:
            action, arg = self.action, self.arg
            self.stop()
            action(arg)
        else:
            self.when = deadline
            self.handle = self.loop.call_at(deadline, self._fire)
