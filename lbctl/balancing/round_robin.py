"""``round_robin``: strict rotation over the active backends. Ignores weights (use ``weighted``)."""

from __future__ import annotations

from typing import Hashable, Iterator, Sequence

from lbctl.balancing.backend import Backend
from lbctl.balancing.base import Algorithm


class RoundRobin(Algorithm):
    name = "round_robin"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._next = 0
        self._offered = 0
        self._last: int | None = None     # pool position (Backend.index) of the last one served

    def rebuild(self, active: Sequence[Backend]) -> None:
        # Keep the rotation's position when the set changes, so a flip does not restart it.
        # The position is "after the backend served last, in pool order", not a list offset:
        # an offset would skip a turn when a backend before it leaves, and repeat one when
        # a backend before it returns.
        self.active = list(active)
        self._next = 0
        if self._last is not None:
            for i, b in enumerate(self.active):
                if b.index > self._last:
                    self._next = i
                    break

    def candidates(self, key: Hashable | None = None) -> Iterator[Backend]:
        active = self.active
        n = len(active)
        start = self._next
        for k in range(n):
            self._offered = (start + k) % n
            yield active[self._offered]

    def chosen(self, backend: Backend) -> None:
        # Continue after the one taken, so a refused candidate keeps its turn next time.
        self._next = (self._offered + 1) % len(self.active)
        self._last = backend.index
