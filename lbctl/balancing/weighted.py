"""``weighted``: smooth weighted round-robin, as NGINX does it.

Each pick adds every backend's weight to its running ``current``; the largest current wins
and gives back the total. Weights 5, 1, 1 give ``a a b a c a a``: the heavy backend's
turns are interleaved, never a burst of five.
"""

from __future__ import annotations

from typing import Hashable, Iterator, Sequence

from lbctl.balancing.backend import Backend
from lbctl.balancing.base import Algorithm, weights_differ
from lbctl.balancing.round_robin import RoundRobin


class Weighted(Algorithm):
    name = "weighted"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._current: list[float] = []
        self._total = 0.0
        self._offered = 0
        # With equal weights smooth WRR *is* a rotation: skip the O(n) pass per pick.
        self._rotation = RoundRobin(*args, **kwargs)
        self._uniform = False

    def rebuild(self, active: Sequence[Backend]) -> None:
        # Keep running values of backends that stay, so a flip elsewhere does not reset the cycle.
        old = {id(b): c for b, c in zip(self.active, self._current)}
        self.active = list(active)
        self._uniform = not weights_differ(self.active)
        self._rotation.rebuild(self.active)
        self._current = [0.0 if self._uniform else old.get(id(b), 0.0) for b in self.active]
        self._total = sum(b.effective_weight for b in self.active)

    def candidates(self, key: Hashable | None = None) -> Iterator[Backend]:
        if self._uniform:
            return self._rotation.candidates(key)
        return self._smooth_candidates()

    def _smooth_candidates(self) -> Iterator[Backend]:
        active, current = self.active, self._current
        if not active:
            return
        best = 0
        for i, b in enumerate(active):
            current[i] += b.effective_weight
            if current[i] > current[best]:
                best = i
        self._offered = best
        yield active[best]
        # Refused (a retry's exclusion): offer the others by descending current value.
        order = sorted((i for i in range(len(active)) if i != best), key=lambda i: -current[i])
        for i in order:
            self._offered = i
            yield active[i]

    def chosen(self, backend: Backend) -> None:
        if self._uniform:
            self._rotation.chosen(backend)
        else:
            self._current[self._offered] -= self._total
