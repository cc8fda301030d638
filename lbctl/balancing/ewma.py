"""``ewma``: response-time based balancing with peak EWMA, as Linkerd and Finagle do it.

Each backend's cost is its latency estimate (a decaying average that jumps up at once on a
slow response, see ``Backend.observe_latency``) times ``inflight + 1``. Two distinct
backends are drawn at random and the cheaper wins (power of two choices over this cost,
as Linkerd does), so a pick is O(1) at any pool size. As in ``p2c``, weights act through
the draw.

A backend with no observation yet costs 0 while idle, so it is tried rather than starved;
once it has requests in flight and still no answer, it costs a large penalty plus its
in-flight count (Finagle's rule), so a new backend is not flooded before it has answered.
"""

from __future__ import annotations

from lbctl.balancing.backend import Backend
from lbctl.balancing.p2c import PowerOfTwo

# Larger than any real latency estimate times in-flight count.
PENALTY = 1e6


class Ewma(PowerOfTwo):
    name = "ewma"
    reads_latency = True

    def score(self, b: Backend) -> float:
        cost = b.ewma_cost(self.clock(), self.ewma_decay)
        if cost == 0.0:
            return PENALTY + b.inflight if b.inflight else 0.0
        return cost * (b.inflight + 1)
