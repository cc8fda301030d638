"""``p2c``: power of two choices.

Two *distinct* backends are drawn at random (weight-proportionally when weights differ);
the one with fewer requests in flight wins, ties at random. Weights act through the draw
only, so they are not counted twice. O(1) per pick and
nearly as good as a full least-connections scan, without its herd behaviour when many
balancers share stale load information.
"""

from __future__ import annotations

from typing import Hashable, Iterator, Sequence

from lbctl.balancing.backend import Backend
from lbctl.balancing.base import Algorithm, remaining_in_random_order
from lbctl.balancing.random import WeightedDraw


class PowerOfTwo(Algorithm):
    name = "p2c"
    draws_pair = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._draw = WeightedDraw([])

    def rebuild(self, active: Sequence[Backend]) -> None:
        self.active = list(active)
        self._draw = WeightedDraw(self.active)

    def score(self, b: Backend) -> float:
        return b.inflight

    def candidates(self, key: Hashable | None = None) -> Iterator[Backend]:
        active = self.active
        if len(active) < 2:
            yield from active
            return
        i, j = self._draw.draw_two(self.rng)
        a, b = active[i], active[j]
        sa, sb = self.score(a), self.score(b)
        if sb < sa or (sa == sb and self.rng.random() < 0.5):
            a, b = b, a
        yield a
        yield b
        yield from remaining_in_random_order(self.rng, active, (a, b))
