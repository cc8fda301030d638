"""``least_conn``: the backend with the fewest in-flight requests relative to its weight.

The score is ``inflight / weight``. Ties are broken by weighted round-robin, as NGINX
does: each backend carries a virtual "pass" that advances by ``1 / weight`` each time it
is chosen (stride scheduling), and among equal scores the lowest pass goes first. So at low
concurrency, where every score is 0, weights 1:1:2 still share 1:1:2, and equal backends
take turns instead of the first one taking everything.

Entries live in a heap with lazy invalidation: every start/end pushes a fresh entry and
stale ones are dropped when they surface. A pick costs O(log n), never a scan, so pools of
thousands of backends stay cheap.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Hashable, Iterator, Sequence

from lbctl.balancing.backend import Backend
from lbctl.balancing.base import Algorithm


class LeastConn(Algorithm):
    name = "least_conn"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._heap: list[tuple[float, float, int, Backend]] = []
        self._stamp: dict[int, int] = {}      # id(backend) -> seq of its valid heap entry
        self._pass: dict[int, float] = {}     # id(backend) -> stride-scheduling pass
        self._seq = itertools.count()
        self._taken: Backend | None = None    # chosen, its fresh entry not pushed yet

    @property
    def heap_entries(self) -> int:
        """Entries held, stale ones included: at most 4 per active backend plus 64."""
        return len(self._heap)

    def rebuild(self, active: Sequence[Backend]) -> None:
        self.active = list(active)
        # A backend joining starts level with the others, neither owed nor owing turns.
        floor = min((self._pass[id(b)] for b in self.active if id(b) in self._pass), default=0.0)
        self._pass = {id(b): self._pass.get(id(b), floor) for b in self.active}
        self._stamp = {}
        self._heap = []
        for b in self.active:
            self._push(b)

    def _push(self, b: Backend) -> None:
        seq = next(self._seq)
        self._stamp[id(b)] = seq
        heapq.heappush(self._heap, (b.inflight / b.effective_weight, self._pass[id(b)], seq, b))
        # Stale entries are dropped lazily; compact when they outnumber live ones.
        if len(self._heap) > 4 * len(self.active) + 64:
            self._heap = [e for e in self._heap if self._stamp.get(id(e[3])) == e[2]]
            heapq.heapify(self._heap)

    def candidates(self, key: Hashable | None = None) -> Iterator[Backend]:
        heap, stamp = self._heap, self._stamp
        if self._taken is not None:
            # The last backend chosen never started a request: give it its entry back.
            if id(self._taken) in stamp:
                self._push(self._taken)
            self._taken = None
        popped: list[tuple[float, float, int, Backend]] = []
        try:
            while heap:
                entry = heap[0]
                if stamp.get(id(entry[3])) != entry[2]:
                    heapq.heappop(heap)
                    continue
                popped.append(heapq.heappop(heap))
                yield entry[3]
        finally:
            # Offered entries go back; the one taken gets a fresh entry from on_start.
            taken = self._taken
            for entry in popped:
                if entry[3] is not taken:
                    heapq.heappush(heap, entry)

    def chosen(self, backend: Backend) -> None:
        self._pass[id(backend)] += 1.0 / backend.effective_weight
        self._taken = backend

    def on_start(self, backend: Backend) -> None:
        if backend is self._taken:
            self._taken = None
        if id(backend) in self._stamp:
            self._push(backend)

    def on_end(self, backend: Backend) -> None:
        if id(backend) in self._stamp:
            self._push(backend)
