"""The kernel: virtual time and the event heap, nothing else.

Events are plain tuples ``(time, seq, kind, ...)`` in a binary heap; ``seq`` comes from
``itertools.count()``, so events at the same time pop in the order they were scheduled, the
same in every run (SimPy's ``core.py`` does the same). A sentinel at infinity keeps the heap
non-empty, so the driver's loop compares the heap's top with the next arrival without a
length check.

The clock is a one-element list read through a C-level callable (``operator.getitem``
bound by ``functools.partial``): the balancers read the clock several times per request,
and a Python function there would show in the simulator's speed. The driver moves time by
writing ``box[0]``; the pool, the algorithms and the outlier detector read ``clock()``.

The kernel knows nothing about backends or requests: the model (``model.py``) and the
driver (``driver.py``) give the events their meaning. The driver binds ``heap`` and
``heapq.heappush`` to locals on its hot path rather than calling methods here.
"""

from __future__ import annotations

import heapq
import itertools
import math
import operator
from functools import partial

INF = math.inf
# The kind of the sentinel event; drivers number their own kinds below it.
END = 255


class Kernel:
    __slots__ = ("heap", "box", "clock", "seq")

    def __init__(self) -> None:
        self.box = [0.0]
        self.clock = partial(operator.getitem, self.box, 0)
        self.seq = itertools.count().__next__
        self.heap: list[tuple] = [(INF, INF, END, None)]

    @property
    def now(self) -> float:
        return self.box[0]

    def schedule(self, at: float, kind: int, *payload) -> None:
        """Add an event (off the hot path; the driver pushes its own tuples there)."""
        heapq.heappush(self.heap, (at, self.seq(), kind, *payload))
