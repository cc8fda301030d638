"""``round_robin``: strict rotation over the active backends. Ignores weights (use ``weighted``)."""

from __future__ import annotations

from typing import Hashable, Iterator, Sequence

from lbctl.balancing.backend import Backend
from lbctl.balancing.base import Algorithm


class RoundRobin(Algorithm):
    name = "round_robin"
    uses_weights = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._next = 0
        self._offered = 0

    def rebuild(self, active: Sequence[Backend]) -> None:
        # Keep the rotation's position when the set changes, so a flip does not restart it.
        self.active = list(active)
        if self.active:
            self._next %= len(self.active)

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
