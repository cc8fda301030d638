"""``least_conn``: the backend with the fewest in-flight requests relative to its weight.

The score is ``inflight / weight``. Ties are broken *among the tied backends only*, at
random, in proportion to their weights: join-the-shortest-queue with random tie-breaking,
which is what the queueing results assume. So at low concurrency, where every score is 0,
weights 1:1:2 still share 1:1:2, and equal backends share evenly instead of the first one
taking everything. (A tie-break that remembers every pick, such as a counter advanced on
each one, hands ties to the backend picked least, which is the slow one: that was 3-10%
worse than join-the-shortest-queue on mixed speeds. NGINX rotates among the tied peers
only; a random draw among them does as well, and costs O(1).)

Backends live in buckets by score, and the distinct scores in a heap (lazily cleaned), so a
request costs O(1) bucket moves on start and end plus a heap peek, never a scan of the
pool: pools of thousands of backends stay cheap. The tie draw is uniform when the tied
backends' weights are equal, and otherwise by rejection against the largest weight (exact,
with a bounded number of tries before an exact scan). Candidates after the first (a retry
excluding the backends already tried) are the rest by score, ties in random order.
"""

from __future__ import annotations

import heapq
from typing import Hashable, Iterator, Sequence

from lbctl.balancing.backend import Backend
from lbctl.balancing.base import Algorithm

REJECTION_TRIES = 32


class LeastConn(Algorithm):
    name = "least_conn"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._buckets: dict[float, list[Backend]] = {}    # score -> backends with that score
        self._where: dict[int, list] = {}                  # id(backend) -> [score, position]
        self._scores: list[float] = []                     # heap; a score may be stale
        self._wmax = 1.0
        self._equal = True                                 # every active weight the same

    @property
    def heap_entries(self) -> int:
        """Scores held in the heap, stale ones included: at most 4 per distinct score in
        use plus 64, so never more than 4 per active backend plus 64."""
        return len(self._scores)

    def rebuild(self, active: Sequence[Backend]) -> None:
        self.active = list(active)
        buckets: dict[float, list[Backend]] = {}
        where: dict[int, list] = {}
        for b in self.active:
            score = b.inflight / b.effective_weight
            bucket = buckets.setdefault(score, [])
            where[id(b)] = [score, len(bucket)]
            bucket.append(b)
        self._buckets, self._where = buckets, where
        self._scores = list(buckets)
        heapq.heapify(self._scores)
        weights = {b.effective_weight for b in self.active}
        self._wmax = max(weights, default=1.0)
        self._equal = len(weights) <= 1

    def _move(self, b: Backend) -> None:
        """``b``'s in-flight count changed: move it to the bucket of its new score."""
        where = self._where.get(id(b))
        if where is None:
            return                          # not in the active set (e.g. finishing while down)
        score = b.inflight / b.effective_weight
        old, pos = where
        if score == old:
            return
        buckets = self._buckets
        bucket = buckets[old]
        last = bucket.pop()
        if last is not b:
            bucket[pos] = last
            self._where[id(last)][1] = pos
        if not bucket:
            del buckets[old]                # its score stays in the heap until it surfaces
        bucket = buckets.get(score)
        if bucket is None:
            bucket = buckets[score] = []
            scores = self._scores
            heapq.heappush(scores, score)
            if len(scores) > 4 * len(buckets) + 64:
                self._scores = list(buckets)
                heapq.heapify(self._scores)
        where[0], where[1] = score, len(bucket)
        bucket.append(b)

    on_start = _move
    on_end = _move

    def candidates(self, key: Hashable | None = None) -> Iterator[Backend]:
        scores, buckets = self._scores, self._buckets
        while scores and scores[0] not in buckets:
            heapq.heappop(scores)
        if not scores:
            return
        first = self._draw(buckets[scores[0]])
        yield first
        # Only when the first was refused (a retry's exclusion, an ineligible backend).
        rand = self.rng.random
        rest = sorted((b for b in self.active if b is not first),
                      key=lambda b: (b.inflight / b.effective_weight, rand()))
        yield from rest

    def _draw(self, tied: list[Backend]) -> Backend:
        """One of the tied backends, at random in proportion to weight."""
        n = len(tied)
        if n == 1:
            return tied[0]
        rand = self.rng.random
        if self._equal:
            return tied[int(rand() * n)]
        wmax = self._wmax
        for _ in range(REJECTION_TRIES):
            b = tied[int(rand() * n)]
            if rand() * wmax < b.effective_weight:
                return b
        total = sum(b.effective_weight for b in tied)
        x = rand() * total
        for b in tied:
            x -= b.effective_weight
            if x < 0:
                return b
        return tied[-1]
