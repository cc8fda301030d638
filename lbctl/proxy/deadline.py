"""Per-connection deadlines, kept in slots of one shared timer rather than a loop timer each.

A keep-alive connection sets the same kinds of deadline (response, keep-alive idle) over and
over, and almost every one is met; a short connection sets two and closes. An event-loop
timer for each costs more than the rest of the bookkeeping of a small request (arming and
cancelling one is about 5 us under uvloop), so deadlines live in ``Timers``: sets of
``Deadline`` objects in ``TICK``-wide slots (a dict of sets, a heap of the slots' times), and
one loop timer set for the earliest slot. Starting a deadline puts it in a slot, or leaves it
in the one it is already in when that slot comes first; stopping one only forgets the
deadline; when a slot's time comes each deadline in it compares the clock with the deadline
current *then*: met (or cleared) deadlines cost nothing more, a later one goes to a later
slot, a due one runs its action. A closed connection takes its deadlines out of their slots
(``cancel``), so nothing holds on to it.

Deadlines fire up to one ``TICK`` late, never early.
"""

from __future__ import annotations

import asyncio
from heapq import heappop, heappush
from typing import Any, Callable

TICK = 0.01                    # seconds per slot: how late a deadline may fire
TICKS = 1 / TICK
TIMER_RESOLUTION = 0.001       # event-loop timers fire with millisecond granularity


class Timers:
    """The deadlines of one process's connections, on one event-loop timer."""

    __slots__ = ("loop", "slots", "keys", "handle", "armed")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots: dict[int, set[Deadline]] = {}   # slot -> deadlines waiting in it
        self.keys: list[int] = []         # heap of the slots in ``slots``
        self.handle: asyncio.TimerHandle | None = None
        self.armed = 0                    # the slot the loop timer is set for (0: none)

    def __len__(self) -> int:
        """Deadlines waiting in a slot now."""
        return sum(map(len, self.slots.values()))

    def _add(self, d: Deadline, when: float) -> None:
        key = int(when * TICKS) + 1       # the first slot whose time is not before ``when``
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = set()
            heappush(self.keys, key)
            if not self.armed or key < self.armed:
                if self.handle is not None:
                    self.handle.cancel()
                self.armed = key
                self.handle = self.loop.call_at(key * TICK, self._fire)
        slot.add(d)
        d.key = key

    def _remove(self, d: Deadline) -> None:
        slot = self.slots.get(d.key)
        if slot is not None:
            slot.discard(d)
        d.key = 0

    def _fire(self) -> None:
        self.handle = None
        self.armed = 0
        now = self.loop.time()
        due = (now + TIMER_RESOLUTION) * TICKS
        keys, slots = self.keys, self.slots
        while keys and keys[0] <= due:
            key = heappop(keys)
            slot = slots.pop(key, None)
            if not slot:
                continue
            for d in slot:
                if d.key == key:            # not moved to another slot meanwhile
                    d.key = 0
                    try:
                        d._due(now)
                    except Exception as exc:    # one action failing must not stop the rest
                        self.loop.call_exception_handler({
                            "message": "deadline action failed", "exception": exc})
        if keys:
            self.armed = keys[0]
            self.handle = self.loop.call_at(keys[0] * TICK, self._fire)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.armed = 0
        self.slots.clear()
        self.keys.clear()


class Deadline:
    """One deadline of a connection (keep-alive idle, a response...), re-set at will."""

    __slots__ = ("timers", "time", "key", "deadline", "action", "arg")

    def __init__(self, timers: Timers) -> None:
        self.timers = timers
        self.time = timers.loop.time
        self.key = 0                      # the slot it waits in (0: none)
        self.deadline: float | None = None
        self.action: Callable[[Any], None] | None = None
        self.arg: Any = None

    @property
    def active(self) -> bool:
        return self.deadline is not None

    def start(self, timeout: float, action: Callable[[Any], None], arg: Any = None) -> None:
        """Run ``action(arg)`` ``timeout`` seconds from now unless ``stop`` comes first."""
        self.deadline = deadline = self.time() + timeout
        self.action, self.arg = action, arg
        key = self.key
        if key:
            if key <= deadline * TICKS + 1:
                return                    # its slot comes first, then it moves on
            self.timers._remove(self)     # a shorter timeout than the pending one
        self.timers._add(self, deadline)

    def stop(self) -> None:
        """The deadline was met; its slot, if any, will find nothing to do."""
        self.deadline = None
        self.action = self.arg = None

    def cancel(self) -> None:
        """The connection is done: stop, and leave no slot holding on to it."""
        self.deadline = None
        self.action = self.arg = None
        if self.key:
            self.timers._remove(self)

    def _due(self, now: float) -> None:
        deadline = self.deadline
        if deadline is None:
            return
        if now >= deadline - TIMER_RESOLUTION:
            action, arg = self.action, self.arg
            self.deadline = None
            self.action = self.arg = None
            action(arg)
        else:
            self.timers._add(self, deadline)
