"""``random``: a uniform draw, or a weight-proportional one when weights differ."""

from __future__ import annotations

import bisect
import itertools
from typing import Hashable, Iterator, Sequence

from lbctl.balancing.backend import Backend
from lbctl.balancing.base import Algorithm, remaining_in_random_order, weights_differ


class WeightedDraw:
    """Draws indexes proportionally to weights with one bisect (O(log n)); uniform when equal."""

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = list(backends)
        self.weighted = weights_differ(self.backends)
        self.cumulative = list(itertools.accumulate(b.effective_weight for b in self.backends))
        self.total = self.cumulative[-1] if self.cumulative else 0.0

    def draw(self, rng) -> int:
        if not self.weighted:
            return int(rng.random() * len(self.backends))
        return min(bisect.bisect_right(self.cumulative, rng.random() * self.total),
                   len(self.backends) - 1)

    def draw_two(self, rng) -> tuple[int, int]:
        """Two distinct indexes (requires at least two backends)."""
        first = self.draw(rng)
        n = len(self.backends)
        if not self.weighted:
            # Uniform over the other n-1 without a retry loop.
            second = int(rng.random() * (n - 1))
            return first, second + (second >= first)
        for _ in range(16):
            second = self.draw(rng)
            if second != first:
                return first, second
        # One backend holds nearly all the weight: take any other.
        second = int(rng.random() * (n - 1))
        return first, second + (second >= first)


class Random(Algorithm):
    name = "random"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._draw = WeightedDraw([])

    def rebuild(self, active: Sequence[Backend]) -> None:
        self.active = list(active)
        self._draw = WeightedDraw(self.active)

    def candidates(self, key: Hashable | None = None) -> Iterator[Backend]:
        if not self.active:
            return
        first = self.active[self._draw.draw(self.rng)]
        yield first
        yield from remaining_in_random_order(self.rng, self.active, (first,))
