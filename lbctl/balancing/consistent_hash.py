"""``consistent_hash``: a hash ring with virtual nodes, for stickiness.

Every backend owns ``VNODES x weight`` points (at least one) on a 64-bit ring (BLAKE2b, so
the ring is the same in every process and every run). A backend's point count depends on its
own weight only: scaling by the pool's largest weight would change every backend's points
when the heaviest one leaves or is re-weighted, and move keys between backends that stayed.
The one exception bounds the ring: past ``RING_CAP`` points in all, every backend's count is
scaled down in proportion, so whatever the weights, building the ring costs a bounded time
and memory (a backend's points are a prefix of its longer list, cached, so a re-weight only
hashes the points it adds). A request's key is hashed and served by
the first point clockwise whose backend is active; when a backend leaves, only the keys it
owned move (about 1/n of them), to the next point along the ring.

The ring is built over *all* backends and rebuilt only when membership or weights change;
eligibility changes just change which points are skipped. A request without a key (no such
header, cookie...) is spread by smooth weighted round-robin instead.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from operator import itemgetter
from typing import Hashable, Iterator, Sequence

from lbctl.balancing.backend import Backend
from lbctl.balancing.base import Algorithm
from lbctl.balancing.weighted import Weighted

VNODES = 100
# At most this many points on the ring, whatever the weights: 164 backends of weight 1 keep
# their 100 points each, and a full rebuild stays near 0.1 s (BLAKE2b in Python, ~3 us a point).
RING_CAP = 16_384
# Ring positions of recent keys: a client usually sends the same key again, and hashing is
# most of a pick's cost. Bounded: cleared when full, and whenever the ring is rebuilt.
POSITION_CACHE = 4096


def hash64(data: str | bytes) -> int:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _points(name: str, start: int, stop: int) -> list[int]:
    """Ring positions ``start..stop-1`` of backend ``name``: ``hash64(f"{name}#{i}")``."""
    prefix = name.encode("utf-8", "surrogateescape") + b"#"
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes
    return [from_bytes(blake2b(b"%s%d" % (prefix, i), digest_size=8).digest(), "big")
            for i in range(start, stop)]


class ConsistentHash(Algorithm):
    name = "consistent_hash"
    uses_key = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._fallback = Weighted(*args, **kwargs)
        self._signature: tuple = ()
        self._cache: dict[str, list[int]] = {}     # name -> its ring positions, in order
        self._points: list[int] = []
        self._positions: dict = {}             # key -> ring index (see POSITION_CACHE)
        self._owners: list[Backend] = []
        self._active_ids: set[int] = set()
        self._using_fallback = False

    def build_ring(self, backends: Sequence[Backend]) -> None:
        """Place every backend's virtual nodes; called when membership or weights change."""
        counts = [max(1, round(VNODES * b.weight)) for b in backends]
        total = sum(counts)
        if total > RING_CAP:
            scale = RING_CAP / total
            counts = [max(1, int(VNODES * b.weight * scale)) for b in backends]
        cache: dict[str, list[int]] = {}
        ring: list[tuple[int, Backend]] = []
        for b, count in zip(backends, counts):
            points = self._cache.get(b.name, [])
            if len(points) < count:
                points = points + _points(b.name, len(points), count)
            cache[b.name] = points = points[:count]
            ring.extend(zip(points, itertools.repeat(b)))
        self._cache = cache                     # only current members, only points in use
        ring.sort(key=itemgetter(0))
        self._points = [p for p, _ in ring]
        self._owners = [b for _, b in ring]
        self._positions: dict = {}

    def set_members(self, members: Sequence[Backend]) -> None:
        # Rebuilt only when names or configured weights change, never on a health flip.
        signature = tuple((b.name, b.weight) for b in members)
        if signature != self._signature:
            self._signature = signature
            self.build_ring(members)

    def rebuild(self, active: Sequence[Backend]) -> None:
        self.active = list(active)
        self._active_ids = {id(b) for b in self.active}
        self._fallback.rebuild(active)

    def candidates(self, key: Hashable | None = None) -> Iterator[Backend]:
        if key is None:
            self._using_fallback = True
            yield from self._fallback.candidates()
            return
        self._using_fallback = False
        points, owners, active_ids = self._points, self._owners, self._active_ids
        if not points:
            return
        positions = self._positions
        start = positions.get(key)
        if start is None:
            if len(positions) >= POSITION_CACHE:
                positions.clear()
            start = positions[key] = bisect.bisect_left(points, hash64(str(key)))
        n = len(points)
        first = owners[start % n]
        if id(first) in active_ids:
            yield first                          # the usual case: no walk along the ring
        seen: set[int] = {id(first)}
        if len(seen) == len(self._signature):
            return
        for k in range(1, n):
            b = owners[(start + k) % n]
            if id(b) in seen:
                continue
            seen.add(id(b))
            if id(b) in active_ids:
                yield b
            if len(seen) == len(self._signature):
                return

    def chosen(self, backend: Backend) -> None:
        if self._using_fallback:
            self._fallback.chosen(backend)
